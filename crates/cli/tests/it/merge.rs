//! `batchkit merge` and `batchkit retry` on the shapes in `testdata/merge/`:
//! the merged files must equal the reviewed snapshots in
//! `testdata/merge/expected/` (`BATCHKIT_BLESS=1` rewrites them).

use std::path::{Path, PathBuf};
use std::process::Output;

use serde::Deserialize;

use crate::common;
use common::{run, run_stdin};

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/merge")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

/// Run `args` with `-o <tmp>`, compare the output with the snapshot `name`.
fn snapshot(name: &str, args: &[&str], exit: i32) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.jsonl");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-o", out_path.to_str().unwrap()]);
    let o = run(&all);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(exit), "{name}: {stderr}");
    let got = std::fs::read_to_string(&out_path).unwrap();
    let expected_path = PathBuf::from(data("expected")).join(format!("{name}.jsonl"));
    if std::env::var_os("BATCHKIT_BLESS").is_some() {
        std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
        std::fs::write(&expected_path, &got).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    assert!(
        got == expected,
        "{name} differs\n--- expected\n{expected}--- got\n{got}"
    );
    (o, stderr)
}

#[test]
fn one_round_output_and_error_files() {
    let (_, stderr) = snapshot(
        "round1",
        &[
            "merge",
            "-i",
            &data("requests.jsonl"),
            &data("round1.errors.jsonl"),
            &data("round1.output.jsonl"),
            &data("empty.errors.jsonl"),
        ],
        1,
    );
    assert!(
        stderr.contains("succeeded: 3, failed: 2, expired: 1, cancelled: 1, missing: 1"),
        "{stderr}"
    );
}

#[test]
fn retry_round_conflict_unknown_and_broken_lines() {
    let (_, stderr) = snapshot(
        "rounds",
        &[
            "merge",
            "--text",
            "-i",
            &data("requests.jsonl"),
            &data("round1.output.jsonl"),
            &data("round1.errors.jsonl"),
            &data("round2.output.jsonl"),
            &data("conflict.output.jsonl"),
        ],
        1,
    );
    assert!(
        stderr.contains("round2.output.jsonl:4: bad_result_line"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "conflict.output.jsonl:1: conflict: two different successful results for this request: "
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("round2.output.jsonl:3: unknown_custom_id"),
        "{stderr}"
    );
}

#[test]
fn prefer_last_keeps_the_later_success() {
    snapshot(
        "prefer_last",
        &[
            "merge",
            "--prefer",
            "last",
            "-i",
            &data("requests.jsonl"),
            &data("round1.output.jsonl"),
            &data("conflict.output.jsonl"),
        ],
        1,
    );
}

#[test]
fn vllm_mixed_file() {
    snapshot(
        "vllm",
        &[
            "merge",
            "-i",
            &data("requests.jsonl"),
            &data("vllm.results.jsonl"),
        ],
        1,
    );
}

#[test]
fn anthropic_results() {
    snapshot(
        "anthropic",
        &[
            "merge",
            "--text",
            "-i",
            &data("requests.jsonl"),
            &data("anthropic.results.jsonl"),
        ],
        1,
    );
}

#[test]
fn only_an_error_file() {
    snapshot(
        "only_errors",
        &[
            "merge",
            "--with-request",
            "-i",
            &data("requests.jsonl"),
            &data("round1.errors.jsonl"),
        ],
        1,
    );
}

#[test]
fn retry_selects_by_status_and_code() {
    let results = [data("round1.output.jsonl"), data("round1.errors.jsonl")];
    let (_, stderr) = snapshot(
        "retry_default",
        &[
            "retry",
            "-i",
            &data("requests.jsonl"),
            &results[0],
            &results[1],
        ],
        0,
    );
    // The default leaves out the model's 400 (context_length_exceeded): it
    // would fail again; the rest can succeed when sent again.
    assert!(stderr.contains("(4 of 8 requests)"), "{stderr}");
    assert!(
        stderr.contains("not retried, as they would fail again: context_length_exceeded (1)"),
        "{stderr}"
    );
    snapshot(
        "retry_expired",
        &[
            "retry",
            "--status",
            "expired,cancelled",
            "-i",
            &data("requests.jsonl"),
            &results[0],
            &results[1],
        ],
        0,
    );
    snapshot(
        "retry_code",
        &[
            "retry",
            "--code",
            "context_length_exceeded",
            "-i",
            &data("requests.jsonl"),
            &results[0],
            &results[1],
        ],
        0,
    );
    let (_, stderr) = snapshot(
        "retry_failed",
        &[
            "retry",
            "--status",
            "failed",
            "-i",
            &data("requests.jsonl"),
            &results[0],
            &results[1],
        ],
        0,
    );
    assert!(
        stderr.contains("(2 of 8 requests)"),
        "the 400 and the status 0: {stderr}"
    );
    // Every retried line is an input line, byte for byte, and validates.
    let input = std::fs::read_to_string(data("requests.jsonl")).unwrap();
    let retry = std::fs::read_to_string(data("expected/retry_default.jsonl")).unwrap();
    assert!(retry.lines().all(|l| input.lines().any(|i| i == l)));
    let v = run(&["validate", "-q", &data("expected/retry_default.jsonl")]);
    common::succeeded(&v);
}

#[test]
fn a_code_that_matches_nothing_says_so() {
    // `--code batch_expird` (a typo) writes an empty file, exit 0, not silently.
    let results = [data("round1.output.jsonl"), data("round1.errors.jsonl")];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("retry.jsonl");
    let o = run(&[
        "retry",
        "--code",
        "batch_expird",
        "-i",
        &data("requests.jsonl"),
        &results[0],
        &results[1],
        "-o",
        out.to_str().unwrap(),
    ]);
    common::succeeded(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning: no request matches --code batch_expird"),
        "{stderr}"
    );
    assert!(
        stderr.contains("batch_expired (1)"),
        "the codes there are: {stderr}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
}

/// One embeddings request (`a`) in `dir/in.jsonl` and its result, a
/// success with `body`, in `dir/out.jsonl`.
fn one_success(dir: &Path, body: &str) -> (PathBuf, PathBuf) {
    let input = dir.join("in.jsonl");
    let results = dir.join("out.jsonl");
    std::fs::write(&input, "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":\"e\",\"input\":\"x\"}}\n").unwrap();
    let result = format!(
        "{{\"custom_id\":\"a\",\"response\":{{\"status_code\":200,\"body\":{body}}},\"error\":null}}\n"
    );
    std::fs::write(&results, result).unwrap();
    (input, results)
}

#[test]
fn all_succeeded_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (input, results) = one_success(dir.path(), "{\"data\":[]}");
    let o = run(&[
        "merge",
        "-i",
        input.to_str().unwrap(),
        results.to_str().unwrap(),
        "-o",
        "-",
    ]);
    common::succeeded(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "{\"custom_id\":\"a\",\"line\":1,\"status\":\"succeeded\",\"status_code\":200,\"response\":{\"data\":[]},\"error\":null}\n"
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Summary {
    output: String,
    requests: u64,
    written: u64,
    result_lines: u64,
    by_status: std::collections::BTreeMap<String, u64>,
    by_code: std::collections::BTreeMap<String, u64>,
    problem_counts: std::collections::BTreeMap<String, u64>,
    problems: Problems,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Problems {
    object: String,
    data: Vec<Problem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Problem {
    kind: String,
    file: String,
    line: u64,
    custom_id: Option<String>,
    message: String,
}

#[test]
fn json_summary_and_unknown_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged.jsonl");
    let unknown = dir.path().join("unknown.jsonl");
    let o = run(&[
        "merge",
        "--format",
        "json",
        "-i",
        &data("requests.jsonl"),
        &data("round1.output.jsonl"),
        &data("round2.output.jsonl"),
        "-o",
        out.to_str().unwrap(),
        "--unknown",
        unknown.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let s: Summary = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s.output, out.to_str().unwrap());
    assert_eq!((s.requests, s.written, s.result_lines), (8, 8, 7));
    assert_eq!(s.by_status["succeeded"], 4);
    assert_eq!(s.by_status["missing"], 2);
    assert_eq!(s.by_code["rate_limit_exceeded"], 1);
    assert_eq!(s.problem_counts["unknown_custom_id"], 1);
    assert_eq!(s.problems.object, "list");
    let stray = s
        .problems
        .data
        .iter()
        .find(|p| p.kind == "unknown_custom_id")
        .unwrap();
    assert_eq!(
        (stray.line, stray.custom_id.as_deref()),
        (3, Some("req-99"))
    );
    assert!(stray.file.ends_with("round2.output.jsonl") && !stray.message.is_empty());
    let unknown_lines = std::fs::read_to_string(&unknown).unwrap();
    assert_eq!(unknown_lines.lines().count(), 1);
    assert!(unknown_lines.contains("\"req-99\""));
}

#[test]
fn unmergeable_input_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"custom_id\":\"a\",\"body\":{}}\nnot json\n{\"custom_id\":\"a\",\"body\":{}}\n",
    )
    .unwrap();
    let out = dir.path().join("merged.jsonl");
    let o = run(&[
        "merge",
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("in.jsonl:2: bad_input_line"), "{stderr}");
    assert!(
        stderr.contains("in.jsonl:3: duplicate_custom_id"),
        "{stderr}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
    let missing = run(&["merge", "-i", "/no/such.jsonl", "-o", out.to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn gzip_and_stdin_results() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("errors.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(data("round1.errors.jsonl")).unwrap())
        .unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let o = run_stdin(
        &[
            "merge",
            "-i",
            &data("requests.jsonl"),
            gz.to_str().unwrap(),
            "-",
            "-o",
            "-",
        ],
        &std::fs::read(data("round1.output.jsonl")).unwrap(),
    );
    assert_eq!(o.status.code(), Some(1));
    let expected = std::fs::read_to_string(data("expected/round1.jsonl")).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), expected);
}

#[test]
fn several_inputs_after_one_flag_and_misplaced_files() {
    // `merge --input chunks/*.jsonl results/*.jsonl`: the chunks are the
    // inputs, the rest the results, whatever the glob put together.
    let dir = tempfile::tempdir().unwrap();
    let requests = std::fs::read_to_string(data("requests.jsonl")).unwrap();
    let lines: Vec<&str> = requests.lines().collect();
    let (a, b) = (
        dir.path().join("chunk.001.jsonl"),
        dir.path().join("chunk.002.jsonl"),
    );
    std::fs::write(&a, lines[..4].join("\n") + "\n").unwrap();
    std::fs::write(&b, lines[4..].join("\n") + "\n").unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = dir.path().join("merged.jsonl");
    let o = run(&[
        "merge",
        "--input",
        a,
        b,
        &data("round1.output.jsonl"),
        &data("round1.errors.jsonl"),
        "-o",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(8 of 8 requests)"), "{stderr}");
    assert!(!stderr.contains("unknown_custom_id"), "{stderr}");

    // A request file among the results is refused, naming it.
    let o = run(&[
        "merge",
        "--input",
        a,
        &data("round1.output.jsonl"),
        b,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("{b} looks like a request file")),
        "{stderr}"
    );
    assert!(stderr.contains("given as a result file"), "{stderr}");
    // And results alone as --input too.
    let o = run(&[
        "retry",
        &data("requests.jsonl"),
        "--input",
        &data("round1.output.jsonl"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("round1.output.jsonl looks like a result file"),
        "{stderr}"
    );
}

#[test]
fn a_retry_of_two_models_is_one_file_per_batch_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    let reqs = dir.path().join("requests.jsonl");
    let line = |id: &str, model: &str| {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[{{"role":"user","content":"x"}}]}}}}"#
        )
    };
    std::fs::write(
        &reqs,
        [
            line("a", "gpt-4o-mini"),
            line("b", "gpt-4o"),
            line("c", "gpt-4o"),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let out = dir.path().join("retry.jsonl");
    let o = run(&[
        "retry",
        "--input",
        reqs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !out.exists(),
        "a file OpenAI would reject (two models) is not left"
    );
    let chunks = dir.path().join("retry");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&chunks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "manifest.json")
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    let mut ids = 0;
    for f in &files {
        let v = run(&["validate", "-q", f.to_str().unwrap()]);
        assert_eq!(
            v.status.code(),
            Some(0),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&v.stderr)
        );
        ids += std::fs::read_to_string(f).unwrap().lines().count();
    }
    assert_eq!(ids, 3);
    assert!(chunks.join("manifest.json").exists());
    // With one model (vllm takes several per file) the single file stays.
    let o = run(&[
        "retry",
        "--provider",
        "vllm",
        "--input",
        reqs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    common::succeeded(&o);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
}

/// A request line whose JSON repeats a key (`"body"` twice) is still one
/// request: `merge --with-request` once wrote "1 of 1 requests" for a
/// two-line file and dropped the other line with exit 0.
#[test]
fn a_repeated_key_does_not_drop_the_request_with_request_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let results = dir.path().join("out.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":\"e\",\"input\":\"x\"}}\n",
            "{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":\"e\",\"input\":\"old\"},\"body\":{\"model\":\"e\",\"input\":\"new\"}}\n",
        ),
    )
    .unwrap();
    std::fs::write(
        &results,
        concat!(
            "{\"custom_id\":\"b\",\"response\":{\"status_code\":200,\"body\":{}},\"error\":null}\n",
            "{\"custom_id\":\"a\",\"response\":{\"status_code\":200,\"body\":{}},\"error\":null}\n",
        ),
    )
    .unwrap();
    for with_request in [false, true] {
        let mut args = vec![
            "merge",
            "-i",
            input.to_str().unwrap(),
            results.to_str().unwrap(),
        ];
        if with_request {
            args.push("--with-request");
        }
        args.extend(["-o", "-"]);
        let o = run(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{stderr}");
        let records: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<&str> = records
            .iter()
            .map(|r| r["custom_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b"], "--with-request {with_request}: {stderr}");
        if with_request {
            // The last `body` counts, as in Python's json and JSON.parse.
            assert_eq!(records[1]["request"]["input"], "new", "{:?}", records[1]);
        }
    }
}

/// An output that names an input once replaced it (atomically, but the
/// input was gone): `merge -o requests.jsonl`, `merge -o` one of the result
/// files, `retry -o requests.jsonl`. Refused with exit 2 whatever the path's
/// spelling, and the input is left as it was.
#[test]
fn an_output_that_is_an_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.jsonl");
    let results = dir.path().join("results.jsonl");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let request = "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":\"e\",\"input\":\"x\"}}\n";
    let result =
        "{\"custom_id\":\"a\",\"response\":{\"status_code\":500,\"body\":{}},\"error\":null}\n";
    std::fs::write(&input, request).unwrap();
    std::fs::write(&results, result).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&input, dir.path().join("link.jsonl")).unwrap();
    let (i, r) = (input.to_str().unwrap(), results.to_str().unwrap());
    let spelled = dir.path().join("sub/../requests.jsonl");
    let linked = dir.path().join("link.jsonl");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "merge",
            vec!["merge", "-i", i, r, "-o", i],
            "requests.jsonl",
        ),
        ("merge", vec!["merge", "-i", i, r, "-o", r], "results.jsonl"),
        (
            "merge",
            vec!["merge", "-i", i, r, "-o", spelled.to_str().unwrap()],
            "requests.jsonl",
        ),
        (
            "merge --unknown",
            vec!["merge", "-i", i, r, "-o", "-", "--unknown", r],
            "results.jsonl",
        ),
        (
            "retry",
            vec!["retry", "-i", i, r, "-o", i],
            "requests.jsonl",
        ),
        (
            "retry",
            vec!["retry", "-i", i, r, "-o", linked.to_str().unwrap()],
            "link.jsonl",
        ),
    ];
    for (what, args, named) in cases {
        let o = run(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what} {args:?}: {stderr}");
        assert!(
            stderr.contains(named) && stderr.contains("is one of the files read"),
            "{what}: {stderr}"
        );
        assert_eq!(std::fs::read_to_string(&input).unwrap(), request, "{what}");
        assert_eq!(std::fs::read_to_string(&results).unwrap(), result, "{what}");
    }
    // Standard input is compared as well: `retry -i - < requests.jsonl -o requests.jsonl`.
    let o = common::batchkit()
        .args(["retry", "-i", "-", r, "-o", i])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(&input).unwrap(), request);
}

/// A killed merge once left a `.NAME.XXXX.tmp` of up to the output's size
/// beside the target, which no later run removed (15 killed merges left
/// 600 MB). Now the output is written into an unnamed file: at every kill
/// point the folder holds the inputs and the old output or the new one,
/// whole, and nothing else; except that a kill in the microseconds between
/// the commit's link and its rename leaves the whole new output under a
/// private name, which the next run removes.
#[test]
fn a_killed_merge_leaves_the_old_output_or_the_new_one_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let (input, results) = (dir.path().join("in.jsonl"), dir.path().join("res.jsonl"));
    let (mut requests, mut outcomes) = (String::new(), String::new());
    for i in 0..300_000 {
        requests.push_str(&format!("{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{{\"model\":\"e\",\"input\":\"text {i}\"}}}}\n"));
    }
    for i in (0..300_000).rev() {
        outcomes.push_str(&format!("{{\"custom_id\":\"r{i}\",\"response\":{{\"status_code\":200,\"body\":{{\"data\":[{{\"embedding\":[0.1,0.2,{i}]}}]}}}},\"error\":null}}\n"));
    }
    std::fs::write(&input, requests).unwrap();
    std::fs::write(&results, outcomes).unwrap();
    let out = dir.path().join("merged.jsonl");
    let args = [
        "merge",
        "-i",
        input.to_str().unwrap(),
        results.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let o = run(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let whole = std::fs::read(&out).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    common::kill_at_fractions(
        &args,
        &[0.1, 0.3, 0.5, 0.7, 0.9],
        || std::fs::write(&out, "old\n").unwrap(),
        |f| {
            let mut names = common::names(dir.path());
            let now = std::fs::read(&out).unwrap();
            if let Some(link) = names.iter().position(|n| n.starts_with(".merged.jsonl.")) {
                let left = dir.path().join(names.remove(link));
                assert_eq!(now, b"old\n", "killed at {f}: renamed but left {left:?}");
                assert!(
                    std::fs::read(&left).unwrap() == whole,
                    "killed at {f}: a torn link"
                );
            }
            assert_eq!(
                names,
                ["in.jsonl", "merged.jsonl", "res.jsonl"],
                "killed at {f}"
            );
            let kind = if now == b"old\n" { "old" } else { "new" };
            assert!(
                kind == "old" || now == whole,
                "killed at {f}: a torn output"
            );
            kinds.insert(kind);
        },
    );
    assert!(kinds.contains("old"), "some kill landed before the rename");
    // Whatever a kill left, the next run removes.
    common::succeeded(&run(&args));
    assert_eq!(
        common::names(dir.path()),
        ["in.jsonl", "merged.jsonl", "res.jsonl"]
    );
}

/// `retry --code batch_expird` (a typo) once said nothing when every
/// request had succeeded; it says no request matches, and why.
#[test]
fn a_code_that_matches_nothing_says_so_when_all_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let (input, results) = one_success(dir.path(), "{}");
    let out = dir.path().join("retry.jsonl");
    let o = run(&[
        "retry",
        "--code",
        "batch_expird",
        "-i",
        input.to_str().unwrap(),
        results.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    common::succeeded(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning: no request matches --code batch_expird: every request succeeded"),
        "{stderr}"
    );
}

/// A disk that fills while `merge` or `split` writes: exit 2 naming what
/// could not be written, the old output left whole, nothing else left.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_the_write_and_keeps_the_old_output() {
    let Some(disk) = common::SmallDisk::mount("1m") else {
        eprintln!("not run: this user cannot mount a tmpfs to fill");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (input, results) = (dir.path().join("in.jsonl"), dir.path().join("res.jsonl"));
    let (mut requests, mut outcomes) = (String::new(), String::new());
    for i in 0..20_000 {
        requests.push_str(&format!("{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{{\"model\":\"e\",\"input\":\"text {i}\"}}}}\n"));
        outcomes.push_str(&format!("{{\"custom_id\":\"r{i}\",\"response\":{{\"status_code\":200,\"body\":{{}}}},\"error\":null}}\n"));
    }
    std::fs::write(&input, requests).unwrap();
    std::fs::write(&results, outcomes).unwrap();
    let out = disk.path.join("merged.jsonl");
    std::fs::write(&out, "old\n").unwrap();
    let o = run(&[
        "merge",
        "-i",
        input.to_str().unwrap(),
        results.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("merged.jsonl") && stderr.contains("No space left"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old\n");
    assert_eq!(common::names(&disk.path), ["merged.jsonl"]);

    // A split into a folder on the full disk keeps the old split.
    let chunks = disk.path.join("chunks");
    std::fs::create_dir(&chunks).unwrap();
    std::fs::write(chunks.join("manifest.json"), "{\"chunks\":[]}\n").unwrap();
    let o = run(&[
        "split",
        input.to_str().unwrap(),
        "--out-dir",
        chunks.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("chunks") && stderr.contains("No space left"),
        "{stderr}"
    );
    assert_eq!(common::names(&chunks), ["manifest.json"]);
    assert_eq!(common::names(&disk.path), ["chunks", "merged.jsonl"]);
}

/// `merge --manifest m.json -o x` (or `-i REQUESTS` alone) with no result
/// file once marked every request missing without a word why.
#[test]
fn no_result_file_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = one_success(dir.path(), "{}");
    for cmd in ["merge", "retry"] {
        let o = run(&[cmd, "-i", input.to_str().unwrap(), "-o", "-"]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains("warning: no result file was given, so every request is `missing`"),
            "{cmd}: {stderr}"
        );
    }
}

/// Found by the `merge` fuzz target: when every request file looked like a
/// result file (its first line has an `error` key), all were taken for
/// results and the merge wrote no record for any request, exit 0. Now it is
/// refused, naming the file.
#[test]
fn a_request_file_that_looks_like_results_is_not_merged_into_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":\"e\",\"input\":\"x\"},\"error\":null}\n").unwrap();
    let results = dir.path().join("res.jsonl");
    std::fs::write(
        &results,
        "{\"custom_id\":\"a\",\"response\":{\"status_code\":200,\"body\":{}},\"error\":null}\n",
    )
    .unwrap();
    let o = run(&[
        "merge",
        "-i",
        input.to_str().unwrap(),
        results.to_str().unwrap(),
        "-o",
        "-",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in.jsonl looks like a result file")
            && stderr.contains("was given as a request file"),
        "{stderr}"
    );
    assert!(o.stdout.is_empty());
}
