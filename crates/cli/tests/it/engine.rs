//! `batchkit serve` in front of a real engine: llama.cpp's `llama-server`
//! with a tiny random-weight model (built once per machine; see
//! `crates/testkit/engines/llama-server.sh`), started, killed, stopped and
//! restarted as users' engines are. The stub upstream stays for what a
//! real engine cannot do on cue (exact fault counts).

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use batchkit_testkit::llama::{Llama, MODEL};
use common::serve::{Serve, terminal};
use serde_json::{Value, json};

fn chat(n: usize, text: impl Fn(usize) -> String) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        let line = json!({"custom_id": format!("req-{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text(i)}]}});
        s.push_str(&format!("{line}\n"));
    }
    s.into_bytes()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn health(serve: &Serve) -> Value {
    reqwest::blocking::get(serve.url("/health"))
        .unwrap()
        .json()
        .unwrap()
}

/// The official Python SDK, unchanged, runs a chat batch through `serve`
/// with its default flags in front of the engine: the limit settles on the
/// engine's slots (from its `/props`), and every request is answered.
#[test]
fn llama_server_answers_a_chat_batch_from_the_official_sdk_with_the_default_flags() {
    let engine = Llama::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_to(&engine.url(), &dir.path().join("data"), &[]);
    let reqs = dir.path().join("requests.jsonl");
    std::fs::write(&reqs, chat(50, |i| format!("hello {i}"))).unwrap();
    let script = r#"
import sys, time
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key="unused")
f = client.files.create(file=open(sys.argv[2], "rb"), purpose="batch")
b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
while b.status not in ("completed", "failed", "expired", "cancelled"):
    time.sleep(0.05)
    b = client.batches.retrieve(b.id)
assert b.status == "completed", b
assert (b.request_counts.completed, b.request_counts.failed) == (50, 0), b.request_counts
assert b.usage.total_tokens > 0, b.usage
out = client.files.content(b.output_file_id).text
assert len(out.splitlines()) == 50
print(b.model)
"#;
    let out = Command::new(common::sdk_python())
        .args(["-c", script])
        .arg(serve.url("/v1"))
        .arg(&reqs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), MODEL);
    let up = &health(&serve)["upstreams"][0];
    assert_eq!(up["up"], true, "{up}");
    assert_eq!(up["concurrency_ceiling"], 2, "the engine's two slots: {up}");
}

/// Embeddings run; a model the engine does not serve fails the batch at
/// validation (llama.cpp would answer any model); a prompt longer than the
/// context is that request's 400 in the error file; cancel stops a batch.
#[test]
fn llama_server_embeddings_unknown_models_long_prompts_and_cancel() {
    let embedder = Llama::start(&["--embeddings", "--pooling", "mean"]);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_to(&embedder.url(), &dir.path().join("e"), &[]);
    let mut text = String::new();
    for i in 0..10 {
        let line = json!({"custom_id": format!("e-{i}"), "method": "POST", "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": format!("embed {i}")}});
        text.push_str(&format!("{line}\n"));
    }
    let id = serve.create_for(&serve.upload(text.as_bytes()), "/v1/embeddings");
    let b = serve.wait(&id, terminal);
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 10, "{b}");
    let out = lines(&serve.content(b["output_file_id"].as_str().unwrap()));
    let vector = &out[0]["response"]["body"]["data"][0]["embedding"];
    assert_eq!(vector.as_array().map(Vec::len), Some(64), "{}", out[0]);
    drop(serve);

    let engine = Llama::start(&[]);
    let serve = Serve::start_to(&engine.url(), &dir.path().join("c"), &[]);
    // An unknown model.
    let mut unknown = String::from_utf8(chat(3, |i| format!("hi {i}"))).unwrap();
    unknown = unknown.replace(
        &format!("\"model\":\"{MODEL}\""),
        "\"model\":\"gpt-nonexistent\"",
    );
    let id = serve.create(&serve.upload(unknown.as_bytes()));
    let b = serve.wait(&id, terminal);
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["errors"]["data"][0]["code"], "model_not_found", "{b}");
    assert_eq!(b["errors"]["data"][0]["line"], 1, "{b}");
    // A prompt over the context: its 400 in the error file, the rest run.
    let long = "word ".repeat(600);
    let id = serve.create(&serve.upload(&chat(4, |i| {
        if i == 2 {
            long.clone()
        } else {
            format!("short {i}")
        }
    })));
    let b = serve.wait(&id, terminal);
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 4, "completed": 3, "failed": 1})
    );
    let err = lines(&serve.content(b["error_file_id"].as_str().unwrap()));
    assert_eq!(err[0]["custom_id"], "req-2");
    assert_eq!(err[0]["response"]["status_code"], 400, "{}", err[0]);
    // Cancel.
    let id = serve.create(&serve.upload(&chat(400, |i| format!("many {i}"))));
    serve.wait(&id, |b| {
        b["request_counts"]["completed"].as_u64().unwrap() >= 5
    });
    let c: Value = reqwest::blocking::Client::new()
        .post(serve.url(&format!("/v1/batches/{id}/cancel")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        matches!(c["status"].as_str(), Some("cancelling" | "cancelled")),
        "{c}"
    );
    let b = serve.wait(&id, terminal);
    assert_eq!(b["status"], "cancelled", "{b}");
    let done = b["request_counts"]["completed"].as_u64().unwrap();
    assert!(done < 400, "{b}");
}

/// The engine killed mid-batch and started again 25 seconds later (a
/// crash, a redeploy): dispatch pauses, and every request succeeds.
#[test]
fn llama_server_killed_for_25_seconds_loses_no_request() {
    let mut engine = Llama::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_to(&engine.url(), &dir.path().join("data"), &[]);
    let id = serve.create(&serve.upload(&chat(200, |i| format!("outage {i}"))));
    serve.wait(&id, |b| {
        b["request_counts"]["completed"].as_u64().unwrap() >= 20
    });
    engine.kill();
    let killed = Instant::now();
    while health(&serve)["upstreams"][0]["up"] != false {
        assert!(killed.elapsed() < Duration::from_secs(20), "not seen down");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(25).saturating_sub(killed.elapsed()));
    assert_eq!(serve.batch(&id)["request_counts"]["failed"], 0);
    engine.restart();
    let b = serve.wait(&id, terminal);
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 200, "completed": 200, "failed": 0})
    );
}

/// The engine asked to stop (SIGTERM) mid-batch, then started again: the
/// requests it held are sent again, and the batch finishes within a
/// minute, not after --request-timeout.
#[test]
fn llama_server_stopped_with_sigterm_costs_at_most_a_minute() {
    let mut engine = Llama::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_to(
        &engine.url(),
        &dir.path().join("data"),
        &["--stall-timeout", "5"],
    );
    let id = serve.create(&serve.upload(&chat(200, |i| format!("stop {i}"))));
    serve.wait(&id, |b| {
        b["request_counts"]["completed"].as_u64().unwrap() >= 20
    });
    let stopped = Instant::now();
    engine.terminate();
    if !engine.exited_within(Duration::from_secs(10)) {
        engine.kill();
    }
    engine.restart();
    let b = serve.wait(&id, terminal);
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["failed"], 0, "{b}");
    assert!(
        stopped.elapsed() < Duration::from_secs(60),
        "{:?}",
        stopped.elapsed()
    );
}
