//! `batchkit run` against a second, independent fake of OpenAI's Batch
//! API, so the client is not only tested against our own server's habits:
//! its output file comes back shuffled, model rejections (400) are in the
//! error file, batches pass through `validating` and `in_progress`, and
//! creating a batch fails with 500 for a while.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
struct Fake {
    files: Vec<(String, String, Vec<u8>)>,
    batches: Vec<Value>,
    polls: HashMap<String, u32>,
    create_calls: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn file_json(id: &str, name: &str, bytes: usize, purpose: &str) -> Value {
    json!({"id": id, "object": "file", "bytes": bytes, "created_at": 1_700_000_000, "filename": name, "purpose": purpose})
}

async fn upload(State(s): State<Shared>, mut form: Multipart) -> Response {
    let (mut name, mut content) = (String::new(), Vec::new());
    while let Some(field) = form.next_field().await.unwrap() {
        if field.name() == Some("file") {
            name = field.file_name().unwrap_or("f").to_owned();
            content = field.bytes().await.unwrap().to_vec();
        }
    }
    let mut f = s.lock().unwrap();
    let id = format!("file-fake{}", f.files.len());
    let v = file_json(&id, &name, content.len(), "batch");
    f.files.push((id, name, content));
    axum::Json(v).into_response()
}

async fn list_files(State(s): State<Shared>) -> Response {
    let f = s.lock().unwrap();
    let data: Vec<Value> = f
        .files
        .iter()
        .rev()
        .filter(|(id, ..)| !id.contains("out") && !id.contains("err"))
        .map(|(id, name, c)| file_json(id, name, c.len(), "batch"))
        .collect();
    axum::Json(json!({"object": "list", "data": data, "has_more": false})).into_response()
}

async fn content(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let f = s.lock().unwrap();
    match f.files.iter().find(|(i, ..)| *i == id) {
        Some((.., c)) => c.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn create(State(s): State<Shared>, axum::Json(body): axum::Json<Value>) -> Response {
    let mut f = s.lock().unwrap();
    f.create_calls += 1;
    if f.create_calls <= 2 {
        let e = json!({"error": {"message": "The server had an error processing your request.", "type": "server_error"}});
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(e)).into_response();
    }
    let input = body["input_file_id"].as_str().unwrap();
    let lines = f.files.iter().find(|(i, ..)| i == input).unwrap().2.clone();
    let id = format!("batch_fake{}", f.batches.len());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for line in String::from_utf8(lines).unwrap().lines() {
        let req: Value = serde_json::from_str(line).unwrap();
        let text = req["body"]["messages"][0]["content"].as_str().unwrap_or("");
        let cid = &req["custom_id"];
        if text.contains("reject") {
            let e = json!({"error": {"message": "Invalid 'messages': rejected.", "type": "invalid_request_error", "param": "messages", "code": "invalid_value"}});
            err.push(json!({"id": "batch_req_x", "custom_id": cid, "response": {"status_code": 400, "request_id": "r", "body": e}, "error": null}));
        } else {
            let b = json!({"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": "ok"}}]});
            out.push(json!({"id": "batch_req_y", "custom_id": cid, "response": {"status_code": 200, "request_id": "r", "body": b}, "error": null}));
        }
    }
    // Results come back in no particular order.
    out.reverse();
    let third = out.len() / 3;
    out.rotate_left(third);
    let to_file = |lines: Vec<Value>| {
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>()
            .into_bytes()
    };
    let (out_id, err_id) = (
        format!("file-out{}", f.batches.len()),
        format!("file-err{}", f.batches.len()),
    );
    f.files
        .push((out_id.clone(), "out.jsonl".into(), to_file(out)));
    let has_err = !err.is_empty();
    f.files
        .push((err_id.clone(), "err.jsonl".into(), to_file(err)));
    let batch = json!({"id": id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": input,
        "completion_window": "24h", "status": "validating", "created_at": 1_700_000_000,
        "metadata": body["metadata"], "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "output_file_id": out_id, "error_file_id": if has_err { json!(err_id) } else { Value::Null }});
    f.batches.push(batch.clone());
    axum::Json(batch).into_response()
}

async fn batch(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let mut f = s.lock().unwrap();
    let n = {
        let p = f.polls.entry(id.clone()).or_default();
        *p += 1;
        *p
    };
    let Some(b) = f.batches.iter_mut().find(|b| b["id"] == id.as_str()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    b["status"] = json!(match n {
        1 => "in_progress",
        _ => "completed",
    });
    axum::Json(b.clone()).into_response()
}

async fn list_batches(State(s): State<Shared>) -> Response {
    let f = s.lock().unwrap();
    let data: Vec<Value> = f.batches.iter().rev().cloned().collect();
    axum::Json(json!({"object": "list", "data": data, "has_more": false})).into_response()
}

fn start_fake() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let state = shared.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route("/v1/files", post(upload).get(list_files))
                .route("/v1/files/{id}/content", get(content))
                .route("/v1/batches", post(create).get(list_batches))
                .route("/v1/batches/{id}", get(batch))
                .with_state(state);
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (format!("http://{}/v1", rx.recv().unwrap()), shared)
}

#[test]
fn run_against_an_independent_fake_with_shuffled_results_and_rejections() {
    let (base, fake) = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let reqs = common::serve::requests(9, |i| {
        if i % 4 == 2 {
            format!("reject {i}")
        } else {
            format!("fine {i}")
        }
    });
    std::fs::write(dir.path().join("requests.jsonl"), reqs).unwrap();
    let o = common::batchkit()
        .arg("run")
        .arg(dir.path().join("requests.jsonl"))
        .arg("-o")
        .arg(dir.path().join("merged.jsonl"))
        .args([
            "--poll-interval",
            "0.05",
            "--max-requests",
            "5",
            "--api-key",
            "sk-fake",
        ])
        .env("OPENAI_BASE_URL", &base)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    // Two requests are rejected by the model: merged, not resubmitted.
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let lines: Vec<Value> = std::fs::read_to_string(dir.path().join("merged.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 9);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            l["custom_id"],
            format!("req-{i}"),
            "input order, whatever the output order"
        );
        if i % 4 == 2 {
            assert_eq!(
                (l["status"].as_str(), l["status_code"].as_u64()),
                (Some("failed"), Some(400))
            );
            assert_eq!(l["error"]["code"], "invalid_value");
        } else {
            assert_eq!(l["status"], "succeeded", "{l}");
        }
    }
    let f = fake.lock().unwrap();
    assert_eq!(
        f.batches.len(),
        2,
        "two chunks, two batches, the 500s retried by the client"
    );
    assert_eq!(f.create_calls, 4);
    assert!(
        !stderr.contains("round 2"),
        "400s are not resubmitted: {stderr}"
    );
}
