//! The real `batchkit` binary, run in temporary directories: exit codes, the
//! JSON contract (deserialized strictly), and equal results for file, stdin
//! and gzip input and for every thread count.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde::Deserialize;

use crate::common;
use common::{batchkit, run, run_stdin, stderr};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

/// The whole JSON report; unknown fields are an error, so a change to the
/// contract must change this test.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Report {
    file: String,
    valid: bool,
    errors: List,
    warnings: List,
    summary: Summary,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct List {
    object: String,
    data: Vec<Diag>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Diag {
    code: String,
    message: String,
    param: Option<String>,
    line: Option<u64>,
    severity: String,
    offset: Option<u64>,
    custom_id: Option<String>,
    hint: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Summary {
    provider: String,
    requests: u64,
    lines: u64,
    blank_lines: u64,
    bytes: u64,
    longest_line: u64,
    endpoint: Option<String>,
    models: std::collections::BTreeMap<String, u64>,
    other_models: u64,
    embedding_inputs: u64,
    errors: u64,
    warnings: u64,
    by_code: std::collections::BTreeMap<String, u64>,
    truncated: bool,
    limits: Limits,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_requests: Option<u64>,
    max_bytes: Option<u64>,
    max_embedding_inputs: Option<u64>,
}

fn report(o: &Output) -> Report {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one strict report: {e}\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

/// A file of a few MB with problems of every per-line kind spread through
/// it, so that chunks and blocks cut it in many places.
fn mixed_file() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..20_000u32 {
        let id = if i % 997 == 0 { 5 } else { i };
        let model = if i % 1_313 == 0 {
            "gpt-4o"
        } else {
            "gpt-4o-mini"
        };
        let line = match i % 2_000 {
            7 => "{not json".to_owned(),
            8 => String::new(),
            9 => "[1]".to_owned(),
            10 => format!(
                r#"{{"custom_id":"c{i}","method":"GET","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[]}}}}"#
            ),
            _ => format!(
                r#"{{"custom_id":"c{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[{{"role":"user","content":"Question {i}: ünïcödé \u00e9 {pad}"}}],"max_tokens":100}}}}"#,
                pad = "x".repeat((i % 300) as usize)
            ),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    out
}

#[test]
fn exit_codes() {
    assert_eq!(
        run(&["validate", testdata("example.jsonl").to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run(&[
            "validate",
            testdata("example-broken.jsonl").to_str().unwrap()
        ])
        .status
        .code(),
        Some(1)
    );
    let missing = run(&["validate", "/definitely/not/here.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("cannot read /definitely/not/here.jsonl"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(run(&["validate"]).status.code(), Some(2));
    assert_eq!(
        run(&["validate", "--provider", "nope", "x"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["validate", "--max-bytes", "12 parsecs", "x"])
            .status
            .code(),
        Some(2)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        run(&["validate", dir.path().to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn worst_exit_code_of_several_files() {
    let ok = testdata("example.jsonl");
    let bad = testdata("example-broken.jsonl");
    let o = run(&[
        "validate",
        "--format",
        "json",
        ok.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let reports: Vec<Report> = serde_json::Deserializer::from_slice(&o.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("one strict report per file");
    assert_eq!(reports.len(), 2);
    assert!(reports[0].valid && !reports[1].valid);
}

#[test]
fn json_contract() {
    let o = run(&[
        "validate",
        "--format",
        "json",
        testdata("example-broken.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let r = report(&o);
    assert_eq!(r.errors.object, "list");
    assert_eq!(r.warnings.object, "list");
    assert!(!r.valid);
    let codes: Vec<(&str, Option<u64>)> = r
        .errors
        .data
        .iter()
        .map(|d| (d.code.as_str(), d.line))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("mismatched_model", Some(2)),
            ("duplicate_custom_id", Some(3)),
            ("invalid_url", Some(4)),
            ("streaming_unsupported", Some(5)),
            ("invalid_json_line", Some(6)),
        ]
    );
    assert_eq!(r.summary.requests, 6);
    assert_eq!(r.summary.errors, 5);
    assert_eq!(r.summary.endpoint.as_deref(), Some("/v1/chat/completions"));
    assert_eq!(r.summary.limits.max_bytes, Some(209_715_200));
    // The line's JSON text stands at the reported offset.
    let bytes = std::fs::read(testdata("example-broken.jsonl")).expect("read");
    let d = &r.errors.data[4];
    let offset = d.offset.expect("syntax errors have an offset") as usize;
    let line_start = bytes[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    assert_eq!(
        bytes[..line_start].iter().filter(|&&b| b == b'\n').count() + 1,
        6
    );
}

#[test]
fn max_errors_caps_printing_not_counting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many.jsonl");
    std::fs::write(&path, "[1]\n".repeat(50)).expect("write");
    let o = run(&[
        "validate",
        "--format",
        "json",
        "--max-errors",
        "3",
        path.to_str().unwrap(),
    ]);
    let r = report(&o);
    assert_eq!(r.errors.data.len(), 3);
    assert_eq!(r.summary.errors, 50);
    assert!(r.summary.truncated);
    let human = run(&["validate", "--max-errors", "3", path.to_str().unwrap()]);
    assert!(
        stderr(&human).contains("47 more diagnostics not shown"),
        "{}",
        stderr(&human)
    );
}

#[test]
fn stdin_gzip_and_threads_give_the_same_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = mixed_file();
    let path = dir.path().join("mixed.jsonl");
    std::fs::write(&path, &data).expect("write");
    let gz_path = dir.path().join("mixed.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&data).expect("compress");
    std::fs::write(&gz_path, enc.finish().expect("gzip")).expect("write");

    let args = ["validate", "--format", "json", "--max-errors", "0"];
    let file = path.to_str().unwrap();
    let base = run(&[&args[..], &["-j", "1", file]].concat());
    assert_eq!(base.status.code(), Some(1));
    let mut expected = report(&base);
    assert!(expected.summary.errors > 40, "{:?}", expected.summary);
    assert_eq!(expected.summary.requests, 19_990);
    expected.file.clear();
    let check = |o: Output, what: &str| {
        assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
        let mut r = report(&o);
        r.file.clear();
        assert!(
            r == expected,
            "{what} differs from the single-threaded file report"
        );
    };
    check(run(&[&args[..], &["-j", "2", file]].concat()), "2 threads");
    check(run(&[&args[..], &["-j", "3", file]].concat()), "3 threads");
    check(
        run_stdin(&[&args[..], &["-j", "2", "-"]].concat(), &data),
        "stdin",
    );
    check(
        run(&[&args[..], &[gz_path.to_str().unwrap()]].concat()),
        "gzip file",
    );
    let gz = std::fs::read(&gz_path).expect("read");
    check(
        run_stdin(&[&args[..], &["-"]].concat(), &gz),
        "gzip on stdin",
    );
}

#[test]
fn human_output_format_and_colour() {
    let broken = testdata("example-broken.jsonl");
    let o = run(&["validate", broken.to_str().unwrap()]);
    let text = stderr(&o);
    assert!(o.stdout.is_empty(), "human reports go to stderr");
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.ends_with("example-broken.jsonl:2: error[mismatched_model]: The model 'gpt-4o' for this request does not match the rest of the batch. Each batch must contain requests for a single model."),
        "{first}"
    );
    assert!(text.contains("  custom_id: \"request-2\""));
    assert!(text.contains("= hint: "));
    assert!(text.contains("invalid: 5 errors"));
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
    let forced = run(&["--color", "always", "validate", broken.to_str().unwrap()]);
    assert!(stderr(&forced).contains('\x1b'));
    let quiet = run(&[
        "validate",
        "-q",
        testdata("example.jsonl").to_str().unwrap(),
    ]);
    assert!(quiet.stderr.is_empty());
}

#[test]
fn help_has_examples_and_exit_codes() {
    let o = run(&["validate", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "Examples:",
        "Pre-upload hook",
        "pre-commit",
        "Exit status:",
        "--provider",
        "--max-errors",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn help_examples_are_printed_verbatim_at_any_width() {
    let help = |args: &[&str], columns: &str| {
        let o = batchkit()
            .args(args)
            .env("COLUMNS", columns)
            .output()
            .expect("run");
        common::succeeded(&o);
        String::from_utf8(o.stdout).expect("utf-8")
    };
    let commands = [
        "validate",
        "merge",
        "retry",
        "split",
        "stats",
        "serve",
        "files",
        "batches",
        "run",
        "completions",
        "man",
    ];
    for name in commands {
        for flag in ["-h", "--help"] {
            let narrow = help(&[name, flag], "50");
            let wide = help(&[name, flag], "250");
            let tail = |t: &str| t[t.find("\nExamples:").expect("examples")..].to_owned();
            assert_eq!(
                tail(&narrow),
                tail(&wide),
                "`{name} {flag}` examples depend on the width"
            );
            // The options above them still wrap to the terminal.
            let head = &narrow[..narrow.find("\nExamples:").expect("examples")];
            let over: Vec<&str> = head
                .lines()
                .filter(|l| !l.starts_with("Usage:") && l.chars().count() > 50)
                .collect();
            assert!(over.is_empty(), "`{name} {flag}` at 50 columns: {over:?}");
        }
    }
    let run = help(&["run", "--help"], "50");
    assert!(run.contains("\n  batchkit run requests.jsonl -o results.jsonl --max-chunk-tokens 2000000   # enqueued-token quota per batch\n"), "{run}");
    // The service commands say where the key and address come from.
    assert!(help(&["files", "--help"], "80").contains("OPENAI_API_KEY"));
    // The top level shows the workflow, verbatim too.
    let top = help(&["--help"], "50");
    assert!(top.contains("  batchkit split requests.jsonl --out-dir chunks              # cut it into batches that fit\n"), "{top}");
}

#[test]
fn a_closed_stdout_keeps_the_verdict() {
    // `batchkit validate --format json - | head -c 10`: the rejection stands.
    let mut child = batchkit()
        .args(["validate", "--format", "json", "--max-errors", "0", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(&"[1]\n".repeat(100_000).into_bytes());
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    assert!(
        !stderr(&out).contains("error:"),
        "a closed pipe is not an error: {}",
        stderr(&out)
    );
}

/// Run `batchkit ARGS` with its stderr (or stdout) read for one line and
/// then closed, as `2>&1 | head -1` does.
fn exit_after_one_line(args: &[&str], from_stderr: bool) -> Option<i32> {
    let mut cmd = batchkit();
    cmd.args(args).stdin(Stdio::null());
    if from_stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().expect("spawn");
    let pipe: Box<dyn std::io::Read> = if from_stderr {
        Box::new(child.stderr.take().expect("stderr"))
    } else {
        Box::new(child.stdout.take().expect("stdout"))
    };
    let mut reader = std::io::BufReader::new(pipe);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).expect("a line");
    drop(reader);
    child.wait().expect("wait").code()
}

#[test]
fn a_closed_pipe_never_turns_a_rejection_into_a_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Far more report than a pipe buffers, so the writer sees the pipe close.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"custom_id\": 1}\n".repeat(20_000)).expect("write");
    let bad = bad.to_str().expect("utf-8 path");
    assert_eq!(
        exit_after_one_line(&["validate", "--max-errors", "0", bad], true),
        Some(1)
    );
    assert_eq!(
        exit_after_one_line(
            &["validate", "--max-errors", "0", "--format", "json", bad],
            false
        ),
        Some(1)
    );
    // merge -o - | head: the requests that did not succeed still count.
    let reqs = dir.path().join("requests.jsonl");
    let mut lines = String::new();
    for i in 0..20_000 {
        lines.push_str(&format!(
            "{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"x\"}}]}}}}\n"
        ));
    }
    std::fs::write(&reqs, lines).expect("write");
    let reqs = reqs.to_str().expect("utf-8 path");
    assert_eq!(
        exit_after_one_line(&["merge", "--input", reqs, "-o", "-"], false),
        Some(1)
    );
}

#[test]
fn random_bytes_end_in_exit_0_or_1() {
    // A cheap deterministic generator; the core's proptest covers far more.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let dir = tempfile::tempdir().expect("tempdir");
    for case in 0..40 {
        let mut bytes = Vec::new();
        for _ in 0..(case * 37 % 900) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pick = b"{}[]\",:\n\r\\u0123456789abcdefnull true \xff\xfe\xef\xbb\xbf";
            bytes.push(pick[(state % pick.len() as u64) as usize]);
        }
        let path = dir.path().join(format!("r{case}.jsonl"));
        std::fs::write(&path, &bytes).expect("write");
        let o = run(&["validate", "--format", "json", path.to_str().unwrap()]);
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "case {case}: {}",
            stderr(&o)
        );
        report(&o);
    }
}

#[test]
fn a_name_without_jsonl_is_warned_about_as_the_upload_would_refuse_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let named = dir.path().join("requests.txt");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/example.jsonl"),
        &named,
    )
    .expect("copy");
    let out = batchkit()
        .args(["validate", "--format", "json"])
        .arg(&named)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "a warning, not an error");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let w = &v["warnings"]["data"][0];
    assert_eq!(w["code"], "invalid_file_format", "{v}");
    assert_eq!(
        w["message"],
        "Invalid file format for Batch API. Must be .jsonl"
    );
    // A .jsonl.gz is the name of a file that is uncompressed before upload.
    let gz = dir.path().join("requests.jsonl.gz");
    std::fs::write(&gz, b"").expect("write");
    let out = batchkit().arg("validate").arg(&gz).output().expect("run");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("invalid_file_format"));
}

#[test]
fn completions_and_man_pages_follow_the_live_cli() {
    let commands = [
        "validate", "merge", "retry", "split", "stats", "serve", "files", "batches", "run",
    ];
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = batchkit()
            .args(["completions", shell])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for c in commands {
            assert!(script.contains(c), "{shell} completion lacks {c}");
        }
        assert!(script.contains("max-errors"), "{shell}");
    }
    let top = batchkit().arg("man").output().expect("run");
    let page = String::from_utf8_lossy(&top.stdout);
    assert!(page.contains(".TH batchkit 1"), "{page}");
    for c in commands {
        assert!(
            page.contains(&format!("batchkit\\-{c}")),
            "the man page lists {c}"
        );
        // Every long option the live --help shows is in the command's page.
        let help = batchkit().args([c, "--help"]).output().expect("run");
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let man = batchkit().args(["man", c]).output().expect("run");
        common::succeeded(&man);
        let man = String::from_utf8_lossy(&man.stdout).into_owned();
        let flags: Vec<&str> = help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches(|ch: char| !ch.is_ascii_alphanumeric()))
            .filter(|w| {
                w[2..]
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
            })
            .collect();
        assert!(!flags.is_empty(), "{c}");
        for flag in flags {
            let escaped = flag.replace('-', "\\-");
            assert!(man.contains(&escaped), "the man page of {c} lacks {flag}");
        }
    }
    let nope = batchkit().args(["man", "nope"]).output().expect("run");
    assert_eq!(nope.status.code(), Some(2));
    // A nested command's page, named as its parent's page names it (`man
    // files upload` once failed though `man files` listed it).
    let files = batchkit().args(["man", "files"]).output().expect("run");
    let files = String::from_utf8_lossy(&files.stdout).into_owned();
    for sub in ["upload", "list", "get", "content", "delete"] {
        assert!(
            files.contains(&format!("batchkit\\-files\\-{sub}(1)")),
            "{sub}: {files}"
        );
        let page = batchkit()
            .args(["man", "files", sub])
            .output()
            .expect("run");
        assert_eq!(page.status.code(), Some(0), "files {sub}");
        let page = String::from_utf8_lossy(&page.stdout);
        assert!(
            page.contains(&format!(".TH batchkit-files-{sub} 1")),
            "{page}"
        );
    }
    let nope = batchkit()
        .args(["man", "files", "nope"])
        .output()
        .expect("run");
    assert_eq!(nope.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nope.stderr).contains("upload"));
}

#[test]
fn fifty_thousand_lines_with_52_problems_read_in_one_screen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.jsonl");
    let mut text = String::new();
    for i in 0..50_000 {
        let model = if i % 1000 == 7 {
            "gpt-4o"
        } else {
            "gpt-4o-mini"
        };
        let url = if i == 20_000 {
            "/v1/chat/completion"
        } else {
            "/v1/chat/completions"
        };
        let id = if i == 30_000 {
            "r5".to_owned()
        } else {
            format!("r{i}")
        };
        text.push_str(&format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"{url}","body":{{"model":"{model}","messages":[{{"role":"user","content":"q"}}]}}}}"#
        ));
        text.push('\n');
    }
    std::fs::write(&path, text).expect("write");
    let out = batchkit().arg("validate").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let report = stderr(&out);
    // One screen: five diagnostics of five lines, the collapsed rest and the
    // summary fit a 32-row terminal.
    assert!(
        report.lines().count() <= 32,
        "{} lines:\n{report}",
        report.lines().count()
    );
    assert!(
        report.contains("error[mismatched_model]: … and 47 more at lines 3008, 4008,"),
        "{report}"
    );
    assert!(report.contains("(--max-per-code 0 shows all)"));
    assert!(
        report.contains("  custom_id: \"r5\"\n") && report.contains("line 6 already uses `r5`"),
        "the repeated id is named: {report}"
    );
    assert!(
        report.contains("= hint: did you mean `/v1/chat/completions`?"),
        "{report}"
    );
    assert!(
        report.contains("mismatched_model: 50"),
        "every one counted: {report}"
    );
    // All of them with --max-per-code 0, and in the JSON output.
    let all = batchkit()
        .args(["validate", "--max-per-code", "0"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(stderr(&all).matches("error[mismatched_model]").count(), 50);
    let json = batchkit()
        .args(["validate", "--format", "json"])
        .arg(&path)
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["errors"]["data"].as_array().expect("list").len(), 52);
}

#[test]
fn a_repeated_id_is_named_from_a_file_and_from_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dups.jsonl");
    let line = |id: &str| {
        format!(
            r#"{{"method":"POST","custom_id":"{id}","url":"/v1/chat/completions","body":{{"model":"m","messages":[{{"role":"user","content":"x"}}]}}}}"#
        ) + "\n"
    };
    // 30,000 ids (so the filter grows), three repeated: one spelled with an
    // escape the second time, one three times.
    let mut text = String::new();
    for i in 0..30_000 {
        text.push_str(&line(&match i {
            10_000 => "ü-7".to_owned(),
            20_000 => "\\u00fc-7".to_owned(),
            25_000 | 29_999 => "r-3".to_owned(),
            _ => format!("r-{i}"),
        }));
    }
    std::fs::write(&path, &text).expect("write");
    let args = ["validate", "--format", "json"];
    let from_file = report(&run(&[&args[..], &[path.to_str().unwrap()]].concat()));
    let from_stdin = report(&run_stdin(&[&args[..], &["-"]].concat(), text.as_bytes()));
    for r in [&from_file, &from_stdin] {
        let named: Vec<(Option<u64>, Option<&str>)> = r
            .errors
            .data
            .iter()
            .map(|d| (d.line, d.custom_id.as_deref()))
            .collect();
        assert_eq!(
            named,
            vec![
                (Some(20_001), Some("ü-7")),
                (Some(25_001), Some("r-3")),
                (Some(30_000), Some("r-3")),
            ]
        );
    }
    // The offset points at the id's value in the file.
    let d = &from_file.errors.data[0];
    let at = d.offset.expect("offset") as usize;
    assert!(
        text[at..].starts_with("\"\\u00fc-7\""),
        "{}",
        &text[at..at + 12]
    );
    // The human report shows it with a caret under it.
    let human = stderr(&run(&["validate", path.to_str().unwrap()]));
    assert!(human.contains("  custom_id: \"ü-7\"\n"), "{human}");
    let shown = human
        .lines()
        .skip_while(|l| !l.contains("custom_id: \"ü-7\""))
        .nth(1)
        .expect("excerpt");
    let caret = human
        .lines()
        .skip_while(|l| !l.contains("custom_id: \"ü-7\""))
        .nth(2)
        .expect("caret");
    let column = caret.chars().position(|c| c == '^').expect("caret");
    let under: String = shown.chars().skip(column).take(10).collect();
    assert_eq!(under, "\"\\u00fc-7\"", "{shown}\n{caret}");
}

/// Wait for `child` at most `secs` seconds; kill it and fail if it hangs.
fn wait_or_kill(mut child: std::process::Child, secs: u64, what: &str) -> Output {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("{what}: still running after {secs} s (hung)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Gzip data through a named pipe or a process substitution once failed
/// ("invalid gzip header") or hung for ever: the input was opened a second
/// time after its magic bytes were read. Every input is opened once.
#[cfg(unix)]
#[test]
fn gzip_through_a_fifo_or_process_substitution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = std::fs::read(testdata("example.jsonl")).expect("read");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&plain).expect("compress");
    let gz = enc.finish().expect("gzip");
    let gz_path = dir.path().join("x.jsonl.gz");
    std::fs::write(&gz_path, &gz).expect("write");
    let expected = run(&["validate", "--format", "json", gz_path.to_str().unwrap()]);
    assert_eq!(expected.status.code(), Some(0), "{}", stderr(&expected));
    let mut expected = report(&expected);
    expected.file.clear();
    let same = |o: Output, what: &str| {
        assert_eq!(o.status.code(), Some(0), "{what}: {}", stderr(&o));
        let mut r = report(&o);
        r.file.clear();
        assert_eq!(r, expected, "{what}");
    };

    // A named pipe whose writer writes everything and goes away.
    for data in [&gz, &plain] {
        let fifo = dir.path().join("pipe");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let child = batchkit()
            .args(["validate", "--format", "json", fifo.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let data = data.clone();
        let fifo_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo_path)
                .expect("open fifo");
            let _ = w.write_all(&data);
        });
        same(wait_or_kill(child, 30, "validate FIFO"), "fifo");
        writer.join().expect("writer");
    }

    // Process substitution, as a shell user writes it.
    let script = format!(
        "exec {} validate --format json <(gzip -dc {} | gzip -c)",
        env!("CARGO_BIN_EXE_batchkit"),
        gz_path.display()
    );
    let child = std::process::Command::new("bash")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    same(
        wait_or_kill(child, 30, "validate <(...)"),
        "process substitution",
    );
}

/// Gzip data with something else after it once said "unexpected end of
/// file"; now it says what and where, and still exits 2.
#[test]
fn gzip_with_trailing_bytes_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = std::fs::read(testdata("example.jsonl")).expect("read");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&plain).expect("compress");
    let mut gz = enc.finish().expect("gzip");
    let end = gz.len();
    gz.extend_from_slice(b"this is not gzip\n");
    let path = dir.path().join("x.jsonl.gz");
    std::fs::write(&path, &gz).expect("write");
    let o = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "after the gzip data (from compressed byte {end}) are not gzip data"
        )),
        "{err}"
    );
    // A truncated member says it is damaged, not "unexpected end of file" alone.
    std::fs::write(&path, &gz[..end / 2]).expect("write");
    let o = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the gzip data is damaged"),
        "{}",
        stderr(&o)
    );
}
