//! `batchkit run` end to end against a real `batchkit serve` (and its test
//! upstream with faults), killed and rerun at every stage.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::serve::{Serve, requests};
use serde_json::Value;

fn run_cmd(serve: &Serve, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = common::batchkit();
    cmd.arg("run")
        .arg(dir.join("requests.jsonl"))
        .arg("-o")
        .arg(dir.join("merged.jsonl"))
        .args(["--poll-interval", "0.05", "--provider", "vllm"])
        .args(extra)
        .env("OPENAI_BASE_URL", serve.url("/v1"))
        .env_remove("OPENAI_API_KEY");
    cmd
}

fn run(serve: &Serve, dir: &Path, extra: &[&str]) -> Output {
    run_cmd(serve, dir, extra).output().unwrap()
}

fn merged(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("merged.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn state(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("merged.jsonl.run.json")).unwrap())
        .unwrap()
}

/// Every request once, in input order, with its original line.
fn every_request_once(dir: &Path, n: usize) -> Vec<Value> {
    let lines = merged(dir);
    assert_eq!(lines.len(), n);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["custom_id"], format!("req-{i}"));
        assert_eq!(l["line"], i as u64 + 1);
    }
    lines
}

#[test]
fn a_file_that_needs_three_chunks_runs_to_merged_results_with_retries() {
    let dir = tempfile::tempdir().unwrap();
    // No retries in the server: upstream faults reach the error file, and
    // run sends them again in round 2.
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--max-retries", "0", "--provider", "vllm"],
    );
    let text = |i: usize| match i {
        3 => "fail:400 never".to_owned(),
        i if i % 6 == 0 => format!("flaky:500:1 once {i}"),
        i if i % 6 == 1 => format!("flaky:429:1 once {i}"),
        i => format!("hello {i}"),
    };
    std::fs::write(dir.path().join("requests.jsonl"), requests(25, text)).unwrap();
    let o = run(&serve, dir.path(), &["--max-requests", "10"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // One request is a 400 that fails again: merge's exit status, 1.
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let lines = every_request_once(dir.path(), 25);
    for (i, l) in lines.iter().enumerate() {
        let want = if i == 3 { "failed" } else { "succeeded" };
        assert_eq!(l["status"], want, "{l}");
    }
    assert_eq!(lines[3]["status_code"], 400);
    let s = state(dir.path());
    let rounds = s["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{s}");
    assert_eq!(rounds[0]["chunks"].as_array().unwrap().len(), 3);
    // Round 2 resent the 500s and 429s, not the 400.
    assert_eq!(rounds[1]["requests"], 9);
    // Exactly one upload and one batch per chunk.
    assert_eq!(serve.all("/v1/files?purpose=batch").len(), 4);
    assert_eq!(serve.all("/v1/batches").len(), 4);
    assert!(stderr.contains("merged into"), "{stderr}");

    // Run again: it finds the run finished and writes the same merge.
    let again = run(&serve, dir.path(), &["--max-requests", "10"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        serve.all("/v1/batches").len(),
        4,
        "a finished run creates nothing"
    );
}

/// `--clean` removes the work folder and the state once the merged output
/// is written; without it both stay, for a later look or a rerun.
#[test]
fn clean_removes_the_work_folder_and_state_after_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &["--provider", "vllm"]);
    std::fs::write(
        dir.path().join("requests.jsonl"),
        requests(12, |i| format!("hello {i}")),
    )
    .unwrap();
    let work = dir.path().join("merged.jsonl.run");
    let state_file = dir.path().join("merged.jsonl.run.json");
    let o = run(&serve, dir.path(), &["--max-requests", "5"]);
    common::succeeded(&o);
    assert!(
        work.is_dir() && state_file.is_file(),
        "kept without --clean"
    );

    std::fs::remove_file(dir.path().join("merged.jsonl")).unwrap();
    let o = run(&serve, dir.path(), &["--max-requests", "5", "--clean"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    every_request_once(dir.path(), 12);
    assert!(!work.exists() && !state_file.exists(), "{stderr}");
    assert!(stderr.contains("(--clean)"), "{stderr}");
    assert_eq!(
        serve.all("/v1/batches").len(),
        3,
        "the rerun created nothing"
    );
}

/// Start `run`, read its stderr until `pattern`, then SIGKILL it.
fn kill_at(serve: &Serve, dir: &Path, extra: &[&str], pattern: &str) {
    let mut child = run_cmd(serve, dir, extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("run ended before printing {pattern:?}");
        }
        if line.contains(pattern) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn run_killed_at_every_stage_carries_on_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--concurrency", "2", "--provider", "vllm"],
    );
    std::fs::write(
        dir.path().join("requests.jsonl"),
        requests(30, |i| format!("slow:40 k {i}")),
    )
    .unwrap();
    let extra = ["--max-requests", "10"];
    // During the uploads, after a batch is created, while waiting, and as
    // the downloads begin.
    for pattern in [
        "uploaded ",
        "created batch_",
        "in_progress (",
        "completed (",
    ] {
        kill_at(&serve, dir.path(), &extra, pattern);
    }
    let o = run(&serve, dir.path(), &extra);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines = every_request_once(dir.path(), 30);
    assert!(lines.iter().all(|l| l["status"] == "succeeded"));
    let files = serve.all("/v1/files?purpose=batch");
    let batches = serve.all("/v1/batches");
    assert_eq!(
        (files.len(), batches.len()),
        (3, 3),
        "uploads or batches were made twice"
    );
}

#[test]
fn serve_killed_and_restarted_under_a_running_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = Serve::start(&data, &["--concurrency", "2", "--provider", "vllm"]);
    let listen = serve.base.trim_start_matches("http://").to_owned();
    std::fs::write(
        dir.path().join("requests.jsonl"),
        requests(20, |i| format!("slow:50 r {i}")),
    )
    .unwrap();
    // Two retries (500 ms, 1 s, with jitter): the outage below outlasts
    // them, so the run must wait for the service rather than retry.
    let mut child = run_cmd(
        &serve,
        dir.path(),
        &["--max-requests", "10", "--max-retries", "2"],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("in_progress (") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "run ended early");
    }
    serve.kill9();
    // Down for longer than the client's own retries last.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let serve = Serve::start_on(
        &data,
        &listen,
        &["--concurrency", "2", "--provider", "vllm"],
    );
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("cannot reach the service"), "{rest}");
    every_request_once(dir.path(), 20);
    assert_eq!(serve.all("/v1/batches").len(), 2);
}

#[test]
fn an_expired_batch_is_resubmitted() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        &[
            "--concurrency",
            "1",
            "--provider",
            "vllm",
            "--completion-windows",
            "24h,2s",
        ],
    );
    std::fs::write(
        dir.path().join("requests.jsonl"),
        requests(10, |i| format!("slow:300 e {i}")),
    )
    .unwrap();
    let o = run(&serve, dir.path(), &["--completion-window", "2s"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
    let lines = every_request_once(dir.path(), 10);
    assert!(
        lines.iter().all(|l| l["status"] == "succeeded"),
        "{lines:?}"
    );
    let s = state(dir.path());
    let rounds = s["rounds"].as_array().unwrap();
    assert!(rounds.len() >= 2, "{s}");
    assert!(rounds[1]["requests"].as_u64().unwrap() < 10);
}

#[test]
fn dry_run_sends_nothing_and_invalid_input_stops_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("requests.jsonl"),
        requests(12, |i| format!("d {i}")),
    )
    .unwrap();
    let nowhere = |args: &[&str]| {
        common::batchkit()
            .arg("run")
            .arg(dir.path().join("requests.jsonl"))
            .arg("-o")
            .arg(dir.path().join("merged.jsonl"))
            .args(args)
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
            .output()
            .unwrap()
    };
    let o = nowhere(&[
        "--dry-run",
        "--max-requests",
        "5",
        "--price-input",
        "0.075",
        "--price-output",
        "0.3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("would run 12 requests as 3 batches"),
        "{out}"
    );
    assert!(out.contains("input tokens"), "{out}");
    assert!(out.contains("  cost: input $0.0"), "{out}");
    assert!(!dir.path().join("merged.jsonl").exists());
    assert!(
        !dir.path().join("merged.jsonl.run").exists(),
        "a dry run writes nothing"
    );

    std::fs::write(dir.path().join("requests.jsonl"), "{\"custom_id\": 1}\n").unwrap();
    let o = nowhere(&[]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("nothing was sent"), "{e}");
    assert!(!e.contains("cannot reach"), "{e}");
}

#[test]
fn ctrl_c_without_a_terminal_leaves_the_batches_running() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--concurrency", "1", "--provider", "vllm"],
    );
    std::fs::write(
        dir.path().join("requests.jsonl"),
        requests(10, |i| format!("slow:100 c {i}")),
    )
    .unwrap();
    let mut child = run_cmd(&serve, dir.path(), &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("in_progress (") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "run ended early");
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert_eq!(child.wait().unwrap().code(), Some(130), "{rest}");
    assert!(rest.contains("1 batches keep running"), "{rest}");
    let batches = serve.all("/v1/batches");
    assert_eq!(
        batches[0]["status"], "in_progress",
        "not cancelled: {}",
        batches[0]
    );
    // Run again: it carries on with the same batch.
    let o = run(&serve, dir.path(), &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    every_request_once(dir.path(), 10);
    assert_eq!(serve.all("/v1/batches").len(), 1);
}

/// A batch the service fails as a whole (here: a model the upstream does
/// not serve) is reported with the service's errors; each of its requests
/// is in the output with that error; none is sent again; exit 1 with the
/// reason on the last line.
#[test]
fn a_failed_batch_says_why_and_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    // OpenAI's rules: one model per batch, so the file is two batches.
    let serve = Serve::start_to(
        common::serve::upstream_with_models(),
        &dir.path().join("data"),
        &[],
    );
    let line = |i: usize, model: &str| {
        format!(
            "{{\"custom_id\":\"req-{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"m {i}\"}}]}}}}\n"
        )
    };
    let text: String = (0..4)
        .map(|i| line(i, if i < 2 { "test-model" } else { "no-such-model" }))
        .collect();
    std::fs::write(dir.path().join("requests.jsonl"), text).unwrap();
    let o = common::batchkit()
        .arg("run")
        .arg(dir.path().join("requests.jsonl"))
        .arg("-o")
        .arg(dir.path().join("merged.jsonl"))
        .args(["--poll-interval", "0.05", "--max-rounds", "3"])
        .env("OPENAI_BASE_URL", serve.url("/v1"))
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed with 1 error:")
            && stderr.contains(":1: model_not_found: The provided model 'no-such-model' is not supported by the Batch API."),
        "{stderr}"
    );
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: 1 of the run's batches failed; batch_")
            && last.contains("model_not_found"),
        "{last}"
    );
    let lines = every_request_once(dir.path(), 4);
    for l in &lines[..2] {
        assert_eq!(l["status"], "succeeded", "{l}");
    }
    for l in &lines[2..] {
        assert_eq!(l["status"], "failed", "{l}");
        assert_eq!(l["error"]["code"], "model_not_found", "{l}");
        assert!(
            l["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not supported by the Batch API"),
            "{l}"
        );
    }
    // One round: the failed batch's lines were not sent again.
    assert_eq!(state(dir.path())["rounds"].as_array().unwrap().len(), 1);
    assert_eq!(serve.all("/v1/batches").len(), 2);
}

/// Against a `serve` whose tenant has an enqueued-token quota with room
/// for one chunk at a time, `run` creates the chunks' batches, sees the
/// ones over the quota refused (`token_limit_exceeded`), and creates them
/// again as its own batches finish: every request runs in the first round,
/// and the refusals are not counted as failures.
#[test]
fn run_waits_for_a_token_quota_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let text = |i: usize| format!("slow:30 tokens for request number {i}");
    let content = requests(30, text);
    let counter = batchkit_core::tokens::TokenCounter { forced: None };
    let chunk_tokens = content
        .split_inclusive(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|c| counter.enqueued(&c.concat()))
        .max()
        .unwrap();
    let limit = chunk_tokens + chunk_tokens / 2;
    std::fs::write(dir.path().join("requests.jsonl"), &content).unwrap();
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[[tenant]]\nname = \"acme\"\nkeys = [\"{}\"]\nenqueued_tokens = {limit}\n",
            batchkit_server::tenants::hash_key("sk-acme")
        ),
    )
    .unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--tenants", tenants.to_str().unwrap(), "--provider", "vllm"],
    );
    let o = run_cmd(&serve, dir.path(), &["--max-requests", "10"])
        .env("OPENAI_API_KEY", "sk-acme")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    eprintln!("{stderr}");
    let lines = every_request_once(dir.path(), 30);
    assert!(lines.iter().all(|l| l["status"] == "succeeded"));
    assert!(
        stderr.contains("waits for the service's enqueued-token limit"),
        "{stderr}"
    );
    let s = state(dir.path());
    assert_eq!(s["rounds"].as_array().unwrap().len(), 1, "{s}");
    // The refused batches are on the service, failed for the quota alone.
    let batches: Vec<Value> = {
        let client = reqwest::blocking::Client::new();
        let page: Value = client
            .get(serve.url("/v1/batches?limit=100"))
            .bearer_auth("sk-acme")
            .send()
            .unwrap()
            .json()
            .unwrap();
        page["data"].as_array().unwrap().clone()
    };
    let refused = batches.iter().filter(|b| b["status"] == "failed").count();
    assert!(refused >= 1, "{batches:?}");
    assert!(
        batches
            .iter()
            .filter(|b| b["status"] == "failed")
            .all(|b| b["errors"]["data"][0]["code"] == "token_limit_exceeded")
    );
    assert_eq!(batches.len() - refused, 3, "one completed batch per chunk");
}
