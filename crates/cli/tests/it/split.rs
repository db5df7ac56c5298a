//! `batchkit split` and `batchkit stats` as a user runs them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::common;
use common::{run, run_stdin, stderr};

fn testdata(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    input: String,
    provider: String,
    limits: Limits,
    requests: u64,
    blank_lines: u64,
    chunks: Vec<Chunk>,
    rejects: Option<Rejects>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_requests: Option<u64>,
    max_bytes: Option<u64>,
    max_embedding_inputs: Option<u64>,
    max_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Chunk {
    path: String,
    endpoint: String,
    model: Option<String>,
    requests: u64,
    bytes: u64,
    estimated_tokens: Option<u64>,
    embedding_inputs: u64,
    sha256: Option<String>,
    lines: Vec<[u64; 2]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rejects {
    path: String,
    lines: u64,
    input_lines: Vec<[u64; 2]>,
}

/// A file with two models and an embeddings endpoint, 60 requests.
fn mixed(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..60 {
        let line = match i % 3 {
            0 => format!(
                r#"{{"custom_id":"c{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"question {i} about a long topic"}}],"max_tokens":50}}}}"#
            ),
            1 => format!(
                r#"{{"custom_id":"c{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o","messages":[{{"role":"user","content":"question {i}"}}]}}}}"#
            ),
            _ => format!(
                r#"{{"custom_id":"c{i}","method":"POST","url":"/v1/embeddings","body":{{"model":"text-embedding-3-small","input":["a {i}","b {i}","c {i}"]}}}}"#
            ),
        };
        text.push_str(&line);
        text.push('\n');
    }
    let path = dir.join("mixed.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn split_groups_and_every_chunk_validates() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed(dir.path());
    let out = dir.path().join("chunks");
    let o = run(&[
        "split",
        input.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--max-requests",
        "7",
        "--max-embedding-inputs",
        "20",
        "--max-tokens",
        "60",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m: Manifest = serde_json::from_slice(&o.stdout).unwrap();
    let on_disk: Manifest =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk.chunks.len(), m.chunks.len());
    assert_eq!(
        (m.requests, m.blank_lines, m.provider.as_str()),
        (60, 0, "openai")
    );
    assert_eq!(m.limits.max_tokens, Some(60));
    assert_eq!(m.limits.max_requests, Some(7));
    assert_eq!(m.limits.max_embedding_inputs, Some(20));
    assert_eq!(m.limits.max_bytes, Some(209_715_200));
    assert!(m.input.ends_with("mixed.jsonl") && m.rejects.is_none());
    let mut seen_lines = Vec::new();
    for c in &m.chunks {
        assert!(
            c.requests <= 7 && c.embedding_inputs <= 20 && c.estimated_tokens.unwrap() <= 60,
            "{c:?}"
        );
        assert!(c.path.starts_with("mixed.") && c.path.ends_with(".jsonl"));
        assert!(c.model.is_some() && c.sha256.as_ref().unwrap().len() == 64);
        let path = out.join(&c.path);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), c.bytes);
        let v = run(&[
            "validate",
            "-q",
            "--max-requests",
            "7",
            "--max-embedding-inputs",
            "20",
            path.to_str().unwrap(),
        ]);
        assert_eq!(v.status.code(), Some(0), "{}: {}", c.path, stderr(&v));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines()
                .all(|l| l.contains(&format!("\"url\":\"{}\"", c.endpoint)))
        );
        for r in &c.lines {
            seen_lines.extend(r[0]..=r[1]);
        }
    }
    seen_lines.sort_unstable();
    assert_eq!(seen_lines, (1..=60).collect::<Vec<u64>>());
    let names: Vec<&str> = m.chunks.iter().map(|c| c.path.as_str()).collect();
    assert!(
        names.contains(&"mixed.chat-completions.gpt-4o-mini.001.jsonl"),
        "{names:?}"
    );
    assert!(
        names.contains(&"mixed.embeddings.text-embedding-3-small.003.jsonl"),
        "{names:?}"
    );
}

#[test]
fn invalid_input_is_refused_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let broken = testdata("example-broken.jsonl");
    let o = run(&["split", &broken, "--out-dir", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nothing was split"), "{}", stderr(&o));
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().count() == 0);
    let o = run(&[
        "split",
        &broken,
        "--out-dir",
        out.to_str().unwrap(),
        "--skip-invalid",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m: Manifest = serde_json::from_slice(&o.stdout).unwrap();
    let rejects = m.rejects.unwrap();
    // Line 4 is an embeddings request without input: with several endpoints
    // allowed, its body is judged by its own url, and a body the endpoint
    // refuses fails that request only (a warning), so it is not rejected.
    assert_eq!(
        (rejects.lines, rejects.path.as_str()),
        (3, "rejects/example-broken.rejects.jsonl")
    );
    assert_eq!(rejects.input_lines, vec![[3, 3], [5, 6]]);
    assert_eq!(m.requests, 3);
    // No temporary file is left behind.
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "{name}");
    }
}

#[test]
fn a_line_larger_than_a_limit_is_an_error_with_its_line() {
    let o = run(&[
        "split",
        &testdata("example.jsonl"),
        "--dry-run",
        "--max-bytes",
        "190",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("example.jsonl:1: error[line_too_large]: this line alone has 206 bytes; the limit per chunk is 190"), "{err}");
}

#[test]
fn dry_run_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("planned");
    let o = run(&[
        "split",
        &testdata("example.jsonl"),
        "--dry-run",
        "--out-dir",
        out.to_str().unwrap(),
        "--max-requests",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m: Manifest = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m.chunks.len(), 3);
    assert!(m.chunks.iter().all(|c| c.sha256.is_none()));
    assert!(!out.exists());

    let o = run_stdin(
        &[
            "split",
            "-",
            "--out-dir",
            out.to_str().unwrap(),
            "--max-requests",
            "2",
        ],
        &std::fs::read(testdata("example.jsonl")).unwrap(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut joined = Vec::new();
    for n in 1..=3 {
        joined.extend(
            std::fs::read(out.join(format!("stdin.chat-completions.gpt-4o-mini.00{n}.jsonl")))
                .unwrap(),
        );
    }
    assert_eq!(joined, std::fs::read(testdata("example.jsonl")).unwrap());
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stats {
    file: String,
    provider: String,
    requests: u64,
    lines: u64,
    blank_lines: u64,
    bytes: u64,
    longest_line: u64,
    groups: Vec<Group>,
    tokens: Tokens,
    embedding_inputs: u64,
    chunks: Option<u64>,
    cost_usd: Option<Cost>,
    errors: StatsErrors,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsErrors {
    lines: u64,
    by_code: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    endpoint: String,
    model: Option<String>,
    requests: u64,
    bytes: u64,
    input_tokens: u64,
    max_output_tokens: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tokens {
    encodings: std::collections::BTreeMap<String, u64>,
    input_total: u64,
    input_p50: u64,
    input_p95: u64,
    input_max: u64,
    max_output_total: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cost {
    input: Option<f64>,
    max_output: Option<f64>,
    total_at_most: Option<f64>,
    by_model: Vec<ModelCost>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelCost {
    model: Option<String>,
    input: Option<f64>,
    max_output: Option<f64>,
}

#[test]
fn stats_counts_tokens_and_cost() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed(dir.path());
    let o = run(&[
        "stats",
        "--format",
        "json",
        "--price-input",
        "1.25",
        "--price-output",
        "5",
        "--max-requests",
        "7",
        input.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s: Stats = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (s.requests, s.lines, s.blank_lines, s.provider.as_str()),
        (60, 60, 0, "openai")
    );
    assert!(s.file.ends_with("mixed.jsonl"));
    assert_eq!(s.groups.len(), 3);
    assert_eq!(s.groups.iter().map(|g| g.requests).sum::<u64>(), 60);
    assert_eq!(s.groups.iter().map(|g| g.bytes).sum::<u64>(), s.bytes);
    assert!(
        s.groups
            .iter()
            .all(|g| !g.endpoint.is_empty() && g.model.is_some())
    );
    assert_eq!(
        s.tokens.input_total,
        s.groups.iter().map(|g| g.input_tokens).sum::<u64>()
    );
    assert!(s.tokens.input_p50 <= s.tokens.input_p95 && s.tokens.input_p95 <= s.tokens.input_max);
    assert_eq!(s.tokens.max_output_total, 20 * 50);
    assert_eq!(s.tokens.encodings.values().sum::<u64>(), 60);
    assert_eq!(s.tokens.encodings["cl100k_base"], 20);
    assert_eq!(s.embedding_inputs, 60);
    assert_eq!(s.chunks, Some(9), "20 + 20 + 20 requests, 7 per chunk");
    assert!(s.longest_line > 0);
    let c = s.cost_usd.unwrap();
    let input_cost = s.tokens.input_total as f64 * 1.25 / 1e6;
    assert!((c.input.unwrap() - input_cost).abs() < 1e-9);
    assert!((c.max_output.unwrap() - 1000.0 * 5.0 / 1e6).abs() < 1e-9);
    assert!((c.total_at_most.unwrap() - c.input.unwrap() - c.max_output.unwrap()).abs() < 1e-9);
    assert_eq!((s.errors.lines, s.errors.by_code.len()), (0, 0));
    let human = run(&["stats", input.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("split would make 3 chunks"));
}

#[test]
fn stats_on_a_file_with_errors_says_so_and_exits_1() {
    let broken = testdata("example-broken.jsonl");
    let o = run(&["stats", "--format", "json", &broken]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let s: Stats = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s.errors.lines, 3);
    assert_eq!(s.errors.by_code["duplicate_custom_id"], 1);
    assert_eq!(s.errors.by_code["invalid_json_line"], 1);
    let human = run(&["stats", &broken]);
    assert_eq!(human.status.code(), Some(1));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("errors:     3 lines would be rejected"),
        "{text}"
    );
}

/// Every file in `dir`, by name.
fn contents(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn buffered_and_direct_writes_give_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed(dir.path());
    let mut outputs = Vec::new();
    for flag in [None, Some("--buffered")] {
        let out = dir.path().join(format!("out-{}", flag.is_some()));
        let mut args = vec![
            "split",
            input.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--max-requests",
            "4",
        ];
        args.extend(flag);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        outputs.push(contents(&out));
    }
    assert!(outputs[0].len() > 10, "{:?}", outputs[0].keys());
    assert_eq!(outputs[0], outputs[1]);
}

/// More groups than files worth keeping open at once: the chunks are
/// written after the check instead of during it, with the same result.
#[test]
fn hundreds_of_models_each_get_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..900 {
        text.push_str(&format!(
            r#"{{"custom_id":"r{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"ft:gpt-4o-mini:org:run-{}","messages":[{{"role":"user","content":"q {i}"}}]}}}}"#,
            i % 300
        ));
        text.push('\n');
    }
    let input = dir.path().join("many.jsonl");
    std::fs::write(&input, &text).unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "split",
        input.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--max-requests",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m: Manifest = serde_json::from_slice(&o.stdout).unwrap();
    // 300 models with 3 requests each: 2 + 1 per model.
    assert_eq!(m.chunks.len(), 600);
    let files = contents(&out);
    assert_eq!(
        files.len(),
        601,
        "the chunks and the manifest, nothing else"
    );
    for model in 0..300 {
        let slug = format!("many.chat-completions.ft_gpt-4o-mini_org_run-{model}");
        let mut got = Vec::new();
        for n in ["001", "002"] {
            got.extend_from_slice(&files[&format!("{slug}.{n}.jsonl")]);
        }
        let want: String = text
            .lines()
            .filter(|l| l.contains(&format!("run-{model}\"")))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(String::from_utf8(got).unwrap(), want, "model {model}");
    }
}

#[test]
fn splitting_twice_into_one_dir_never_mixes_the_two() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed(dir.path());
    let out = dir.path().join("chunks");
    let split = |extra: &[&str]| {
        let mut args = vec![
            "split",
            input.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let names = || -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    common::succeeded(&split(&["--max-requests", "7"]));
    assert_eq!(names().len(), 9 + 1, "9 chunks and the manifest");
    // Again with bigger chunks: the earlier *.002 ... chunks are gone.
    common::succeeded(&split(&["--max-requests", "20"]));
    let now = names();
    assert_eq!(now.len(), 3 + 1, "{now:?}");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let listed: Vec<&str> = manifest.chunks.iter().map(|c| c.path.as_str()).collect();
    assert!(
        now.iter()
            .filter(|n| *n != "manifest.json")
            .all(|n| listed.contains(&n.as_str()))
    );

    // A file split did not write: refused, exit 2, nothing changed.
    std::fs::write(out.join("notes.jsonl"), "{}\n").unwrap();
    let o = split(&["--max-requests", "7"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("notes.jsonl"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(
        names(),
        now.iter()
            .cloned()
            .chain(["notes.jsonl".to_owned()])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    let o = split(&["--max-requests", "7", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(names().contains(&"notes.jsonl".to_owned()));
    assert_eq!(names().len(), 9 + 1 + 1);
}

#[test]
fn merge_with_the_manifest_gives_the_split_files_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed(dir.path());
    let out = dir.path().join("chunks");
    let o = run(&[
        "split",
        input.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--max-requests",
        "7",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Results for every chunk line but one, in reverse order, in one file.
    let mut results: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "manifest.json" {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let id = serde_json::from_str::<serde_json::Value>(line).unwrap()["custom_id"].clone();
            results.push(format!(r#"{{"id":"r","custom_id":{id},"response":{{"status_code":200,"request_id":"q","body":{{}}}},"error":null}}"#));
        }
    }
    results.sort();
    results.reverse();
    results.retain(|l| !l.contains(r#""c10""#));
    let res = dir.path().join("output.jsonl");
    std::fs::write(&res, results.join("\n") + "\n").unwrap();
    let merged = dir.path().join("merged.jsonl");
    let manifest = out.join("manifest.json");
    let o = run(&[
        "merge",
        "--manifest",
        manifest.to_str().unwrap(),
        res.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "one missing: {}", stderr(&o));
    let original: Vec<String> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let m: Manifest = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let chunks: Vec<&str> = m.chunks.iter().map(|c| c.path.as_str()).collect();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&merged)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 60);
    for l in &lines {
        let n = l["line"].as_u64().unwrap() as usize;
        let id = l["custom_id"].as_str().unwrap();
        assert!(
            original[n - 1].contains(&format!(r#""custom_id":"{id}""#)),
            "line {n} is not {id}"
        );
        assert!(chunks.contains(&l["chunk"].as_str().unwrap()), "{l}");
        assert!(l.get("input").is_none(), "chunks are named by `chunk`: {l}");
        let want = if id == "c10" { "missing" } else { "succeeded" };
        assert_eq!(l["status"], want);
    }
    // retry --manifest writes the one request that has no result.
    let retry = dir.path().join("retry.jsonl");
    let o = run(&[
        "retry",
        "--manifest",
        manifest.to_str().unwrap(),
        res.to_str().unwrap(),
        "-o",
        retry.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&retry).unwrap().trim(),
        original[10]
    );
}

#[test]
fn set_aside_lines_are_explained_with_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chunks");
    let broken = testdata("example-broken.jsonl");
    let split = || {
        run(&[
            "split",
            &broken,
            "--out-dir",
            out.to_str().unwrap(),
            "--skip-invalid",
        ])
    };
    let o = split();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("set aside, by code: "),
        "{}",
        stderr(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("rejects/example-broken.rejects.report.json")).unwrap(),
    )
    .unwrap();
    let found: Vec<(u64, String)> = report["errors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let rejected =
        std::fs::read_to_string(out.join("rejects/example-broken.rejects.jsonl")).unwrap();
    // The chunks' glob is the chunks: the rejects are in a folder of their own.
    let top: Vec<String> = common::names(&out)
        .into_iter()
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    assert!(top.iter().all(|n| !n.contains("rejects")), "{top:?}");
    assert_eq!(found.len(), rejected.lines().count(), "{found:?}");
    assert!(
        found.contains(&(3, "duplicate_custom_id".to_owned())),
        "{found:?}"
    );
    assert!(
        found.contains(&(6, "invalid_json_line".to_owned())),
        "{found:?}"
    );
    // The report is split's own: splitting again does not call it foreign.
    common::succeeded(&split());
}

#[test]
fn one_of_a_thing_is_singular() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.jsonl");
    let line = std::fs::read_to_string(testdata("example.jsonl")).unwrap();
    std::fs::write(&one, line.lines().next().unwrap().to_owned() + "\n").unwrap();
    let out = dir.path().join("chunks");
    let o = run(&[
        "split",
        one.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(e.contains("wrote 1 chunk to"), "{e}");
    assert!(e.contains("(1 request, openai provider limits)"), "{e}");
    let v = run(&["validate", one.to_str().unwrap()]);
    assert!(
        stderr(&v).contains("requests: 1 in 1 line,"),
        "{}",
        stderr(&v)
    );
    let s = run(&["stats", one.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&s.stdout);
    assert!(
        text.contains(" 1 request ") && !text.contains("1 requests"),
        "{text}"
    );
    // One definition of line length: stats and validate agree.
    let longest = line.lines().next().unwrap().len();
    assert!(
        text.contains(&format!("longest line {longest} bytes")),
        "{text}"
    );
}

#[test]
fn the_chunk_token_limit_is_not_confused_with_max_tokens() {
    let help = run(&["split", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--max-chunk-tokens"), "{text}");
    assert!(
        !text.contains("--max-tokens "),
        "the old name is a hidden alias: {text}"
    );
    // The old name still works (see the token-limit test above).
}

#[test]
fn stats_over_several_files_with_a_price_per_model() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed(dir.path());
    let example = testdata("example.jsonl");
    let o = run(&[
        "stats",
        "--format",
        "json",
        "--price",
        "gpt-4o-mini=0.1/0.4",
        "--price-input",
        "1",
        "--price-output",
        "4",
        input.to_str().unwrap(),
        &example,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let all: Vec<Stats> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Stats>()
        .map(|s| s.unwrap())
        .collect();
    assert_eq!(all.len(), 2, "one object per file");
    let s = &all[0];
    let c = s.cost_usd.as_ref().unwrap();
    for g in &s.groups {
        let m = c.by_model.iter().find(|m| m.model == g.model).unwrap();
        let (pin, pout) = if g.model.as_deref() == Some("gpt-4o-mini") {
            (0.1, 0.4)
        } else {
            (1.0, 4.0)
        };
        assert!(
            (m.input.unwrap() - g.input_tokens as f64 * pin / 1e6).abs() < 1e-12,
            "{g:?}"
        );
        assert!(
            (m.max_output.unwrap() - g.max_output_tokens as f64 * pout / 1e6).abs() < 1e-12,
            "{g:?}"
        );
    }
    let sum: f64 = c.by_model.iter().map(|m| m.input.unwrap()).sum();
    assert!((c.input.unwrap() - sum).abs() < 1e-12);
    // Without a price for some model, there is no total.
    let o = run(&[
        "stats",
        "--format",
        "json",
        "--price",
        "gpt-4o-mini=0.1/0.4",
        input.to_str().unwrap(),
    ]);
    let s: Stats = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s.cost_usd.unwrap().total_at_most, None);
    // For people, what has no price says which option gives it (once "n/a").
    let o = run(&[
        "stats",
        "--price",
        "gpt-4o-mini=0.1/0.4",
        input.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!text.contains("n/a"), "{text}");
    assert!(
        text.contains("gpt-4o: unknown: no price for these models (--price MODEL=INPUT/OUTPUT"),
        "{text}"
    );
    let o = run(&["stats", "--price-input", "1", &example]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("(no output price: --price-output)"), "{text}");
    assert!(
        text.contains("split would make 1 chunk ("),
        "one, not '1 chunks': {text}"
    );
    let bad = run(&["stats", "--price", "gpt-4o-mini=cheap", &example]);
    assert_eq!(bad.status.code(), Some(2));
}

/// A url the provider does not serve is `invalid_url` in `split` (and
/// `stats`) as in `validate`, where it was once `unsupported_endpoint`.
#[test]
fn a_url_no_provider_serves_is_invalid_url_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}"#, "\n",
            r#"{"custom_id":"b","method":"POST","url":"/v1/chat/completion","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}"#, "\n",
        ),
    )
    .unwrap();
    let code_of = |args: &[&str]| -> String {
        let o = run(args);
        String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o)
    };
    let validate = code_of(&["validate", input.to_str().unwrap()]);
    assert!(validate.contains("error[invalid_url]"), "{validate}");
    let split = code_of(&["split", input.to_str().unwrap(), "--dry-run"]);
    assert!(
        split.contains("error[invalid_url]") && !split.contains("unsupported_endpoint"),
        "{split}"
    );
    let stats = code_of(&["stats", "--format", "json", input.to_str().unwrap()]);
    assert!(
        stats.contains("\"invalid_url\": 1") && !stats.contains("unsupported_endpoint"),
        "{stats}"
    );
}

/// `n` chat requests of about 200 bytes each, in `dir/big.jsonl`.
fn big(dir: &Path, n: usize) -> PathBuf {
    let mut text = String::with_capacity(n * 220);
    for i in 0..n {
        text.push_str(&format!(
            r#"{{"custom_id":"r{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"question number {i} about something long enough"}}],"max_tokens":10}}}}"#
        ));
        text.push('\n');
    }
    let path = dir.join("big.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether `out` holds exactly one whole split of `input`: the manifest,
/// its chunks and nothing else; each chunk is the input's lines that the
/// manifest says it holds, and the chunks hold every request once.
/// Returns the chunks' request limit it was made with.
fn whole_split(out: &Path, input: &[u8]) -> u64 {
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let mut listed: Vec<String> = manifest.chunks.iter().map(|c| c.path.clone()).collect();
    listed.push("manifest.json".to_owned());
    listed.sort();
    assert_eq!(common::names(out), listed, "only the split's files");
    let lines: Vec<&[u8]> = input.split_inclusive(|&b| b == b'\n').collect();
    let mut requests = 0;
    for c in &manifest.chunks {
        let got = std::fs::read(out.join(&c.path)).unwrap();
        let want: Vec<u8> = c
            .lines
            .iter()
            .flat_map(|&[a, b]| lines[a as usize - 1..b as usize].concat())
            .collect();
        assert!(
            got == want,
            "{} is not the lines the manifest lists",
            c.path
        );
        assert_eq!(got.len() as u64, c.bytes, "{}", c.path);
        requests += c.requests;
    }
    assert_eq!(requests, lines.len() as u64, "every request in one chunk");
    manifest.limits.max_requests.unwrap()
}

/// A re-split killed midway once left the old manifest beside chunks of the
/// new split (7 chunks no longer matching it, 84,000 of 1,000,000 requests
/// missing), and every killed split left its temporary chunks behind for
/// good. Now, at every kill point, the folder holds the old split or the new
/// one, whole, and nothing else; the next split removes what killed ones
/// left beside it.
#[test]
fn a_killed_resplit_leaves_the_old_split_or_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = big(dir.path(), 400_000);
    let bytes = std::fs::read(&input).unwrap();
    let out = dir.path().join("chunks");
    let split = |max: &str| {
        run(&[
            "split",
            input.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--max-requests",
            max,
            "--force",
        ])
    };
    common::succeeded(&split("30000"));
    assert_eq!(whole_split(&out, &bytes), 30000);
    let args = [
        "split",
        input.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--max-requests",
        "7000",
        "--force",
    ];
    let mut seen = std::collections::BTreeSet::new();
    common::kill_at_fractions(
        &args,
        &[0.1, 0.3, 0.5, 0.7, 0.85, 0.95],
        || {
            // Each killed run starts from the old split.
            common::succeeded(&split("30000"));
        },
        |f| {
            let limit = whole_split(&out, &bytes);
            assert!([30000, 7000].contains(&limit), "killed at {f}: {limit}");
            seen.insert(limit);
        },
    );
    assert!(seen.contains(&30000), "some kill landed before the swap");
    // The next complete split leaves nothing of the killed ones.
    common::succeeded(&split("9000"));
    assert_eq!(whole_split(&out, &bytes), 9000);
    assert_eq!(common::names(dir.path()), ["big.jsonl", "chunks"]);
}
