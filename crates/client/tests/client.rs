//! The client against the real `batchkit serve` on loopback, and against a
//! small fake that misbehaves on purpose (retries, Azure's conventions).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use batchkit_client::{Auth, Client, ClientConfig, ClientError, CreateBatch, Provider};
use batchkit_server::{Server, ServerConfig};
use batchkit_testkit::TestUpstream;

async fn serve(dir: &std::path::Path) -> (String, TestUpstream) {
    let upstream = TestUpstream::start(Default::default()).await;
    let mut cfg = ServerConfig::new(upstream.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.data_dir = dir.to_owned();
    cfg.api_keys = vec!["sk-test".into()];
    let server = Server::bind(cfg).await.unwrap();
    let base = format!("http://{}/v1", server.local_addr());
    tokio::spawn(server.run(std::future::pending()));
    (base, upstream)
}

fn client(base: &str, key: &str) -> Client {
    let mut cfg = ClientConfig::from_env(Provider::OpenAi, Some(base), Some(key)).unwrap();
    cfg.retry_base_delay = Duration::from_millis(5);
    Client::new(cfg).unwrap()
}

fn requests(n: usize) -> String {
    (0..n)
        .map(|i| {
            serde_json::json!({"custom_id": format!("c-{i}"), "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": format!("q {i}")}]}})
            .to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lifecycle_against_batchkit_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _up) = serve(&dir.path().join("data")).await;
    let c = client(&base, "sk-test");
    let path = dir.path().join("requests.jsonl");
    std::fs::write(&path, requests(12)).unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let file = c
        .upload(
            &path,
            "batch",
            Some(Arc::new(move |n| {
                counter.fetch_add(n, Ordering::Relaxed);
            })),
        )
        .await
        .unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!((file.bytes, sent.load(Ordering::Relaxed)), (len, len));
    assert_eq!(file.filename, "requests.jsonl");
    assert_eq!(file.raw["object"], "file");
    assert_eq!(c.file(&file.id).await.unwrap().id, file.id);

    let mut req = CreateBatch {
        input_file_id: file.id.clone(),
        endpoint: "/v1/chat/completions".into(),
        completion_window: "24h".into(),
        output_expires_after: Some(7200),
        ..Default::default()
    };
    req.metadata.insert("run".into(), "1".into());
    req.check().unwrap();
    let b = c.create_batch(&req).await.unwrap();
    assert_eq!(b.metadata.as_ref().unwrap()["run"], "1");
    let start = Instant::now();
    let done = loop {
        let b = c.batch(&b.id).await.unwrap();
        if b.is_terminal() {
            break b;
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done.status, "completed");
    assert_eq!((done.counts().total, done.counts().completed), (12, 12));
    let mut out = Vec::new();
    let n = c
        .content(done.output_file_id.as_deref().unwrap(), &mut out, None)
        .await
        .unwrap();
    assert_eq!(n as usize, out.len());
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 12);

    for _ in 0..2 {
        c.create_batch(&req).await.unwrap();
    }
    let first = c.batches(Some(2), None).await.unwrap();
    assert_eq!(first.data.len(), 2);
    assert!(first.has_more);
    let rest = c.batches(Some(2), first.last_id.as_deref()).await.unwrap();
    assert_eq!(rest.data.len(), 1);
    assert!(!rest.has_more);
    assert_eq!(rest.data[0].id, done.id);
    let files = c.files(Some("batch"), None, None).await.unwrap();
    assert!(files.data.iter().any(|f| f.id == file.id));

    // Provider errors carry the status and the service's message, unretried.
    match c.cancel_batch(&done.id).await {
        Err(ClientError::Api {
            status, message, ..
        }) => {
            assert_eq!(
                (status, message.as_str()),
                (409, "Cannot cancel a batch with status 'completed'.")
            )
        }
        other => panic!("{other:?}"),
    }
    let e = c.batch("batch_nope").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(
        e.to_string()
            .starts_with("HTTP 404: No batch found with id 'batch_nope'"),
        "{e}"
    );
    let e = client(&base, "wrong")
        .batches(None, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    let deleted = c.delete_file(&done.output_file_id.unwrap()).await.unwrap();
    assert_eq!(deleted["deleted"], true);
}

/// A fake API: answers by path, counting calls.
async fn fake(calls: Arc<AtomicU64>) -> String {
    let app = Router::new().fallback(any(move |uri: Uri, headers: HeaderMap| {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
            let body =
                |s: &str| format!(r#"{{"error":{{"message":"{s}","type":"x","code":null}}}}"#);
            match uri.path() {
                // 500 twice, then the batch.
                "/v1/batches/flaky" if n <= 2 => {
                    (StatusCode::INTERNAL_SERVER_ERROR, body("down")).into_response()
                }
                "/v1/batches/flaky" => {
                    (StatusCode::OK, r#"{"id":"flaky","status":"in_progress"}"#).into_response()
                }
                "/v1/batches/final" => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [("x-should-retry", "false")],
                    body("final"),
                )
                    .into_response(),
                "/v1/batches/slowdown" => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after-ms", "20"), ("x-request-id", "req_9")],
                    body("slow down"),
                )
                    .into_response(),
                "/openai/batches/az" => {
                    let ok = headers.get("api-key").is_some_and(|v| v == "az-key")
                        && uri.query() == Some("api-version=2024-10-21");
                    if ok {
                        (StatusCode::OK, r#"{"id":"az","status":"completed"}"#).into_response()
                    } else {
                        (StatusCode::UNAUTHORIZED, body("azure conventions not met"))
                            .into_response()
                    }
                }
                _ => (StatusCode::NOT_FOUND, body("no")).into_response(),
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_sdk_rules() {
    let calls = Arc::new(AtomicU64::new(0));
    let base = fake(calls.clone()).await;
    let c = client(&format!("{base}/v1"), "k");

    assert_eq!(c.batch("flaky").await.unwrap().status, "in_progress");
    assert_eq!(calls.swap(0, Ordering::Relaxed), 3, "two 500s retried");

    let e = c.batch("final").await.unwrap_err();
    assert_eq!(
        (e.status(), calls.swap(0, Ordering::Relaxed)),
        (Some(500), 1),
        "x-should-retry: false"
    );

    let started = Instant::now();
    let e = c.batch("slowdown").await.unwrap_err();
    assert_eq!(
        calls.swap(0, Ordering::Relaxed),
        u64::from(batchkit_client::DEFAULT_MAX_RETRIES) + 1,
        "429 retried max_retries times"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "retry-after-ms honoured"
    );
    assert_eq!(e.to_string(), "HTTP 429: slow down (request id req_9)");

    let mut cfg = ClientConfig::from_env(Provider::Azure, Some(&base), Some("az-key")).unwrap();
    assert_eq!(cfg.auth, Auth::ApiKey("az-key".into()));
    cfg.retry_base_delay = Duration::from_millis(5);
    let az = Client::new(cfg).unwrap();
    assert_eq!(az.batch("az").await.unwrap().status, "completed");

    // Nothing listening: a transport error after the retries.
    let closed = client("http://127.0.0.1:9/v1", "k");
    match closed.batch("x").await {
        Err(ClientError::Transport { url, .. }) => assert!(url.ends_with("/batches/x")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn limits_are_checked_before_sending() {
    let mut req = CreateBatch::default();
    for i in 0..17 {
        req.metadata.insert(format!("k{i}"), "v".into());
    }
    assert_eq!(req.check().unwrap_err().param, "metadata");
    let req = CreateBatch {
        output_expires_after: Some(60),
        ..Default::default()
    };
    assert_eq!(
        req.check().unwrap_err().param,
        "output_expires_after.seconds"
    );
}
