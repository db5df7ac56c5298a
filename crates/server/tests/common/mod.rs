//! A server and its test upstream on loopback, and an HTTP client for them.
// Each test file uses its own part of this module; test code may unwrap.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use batchkit_server::{Server, ServerConfig};
use batchkit_testkit::{Options, TestUpstream};
use serde_json::{Value, json};

pub struct Harness {
    pub base: String,
    pub client: reqwest::Client,
    pub upstream: TestUpstream,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub key: Option<String>,
}

pub fn config(upstream: &TestUpstream, dir: &std::path::Path) -> ServerConfig {
    let mut cfg = ServerConfig::new(upstream.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.data_dir = dir.to_owned();
    cfg.retry_base_delay = Duration::from_millis(10);
    cfg.request_timeout = Duration::from_secs(10);
    cfg.cancel_grace = Duration::from_millis(200);
    cfg.concurrency = 8;
    // OpenAI's 24h, and a window short enough to see a batch expire.
    cfg.completion_windows = ["24h", "2s"].map(|w| w.parse().unwrap()).to_vec();
    cfg
}

impl Harness {
    pub async fn new(tune: impl FnOnce(&mut ServerConfig)) -> Harness {
        Harness::with_upstream(Options::default(), tune).await
    }

    pub async fn with_upstream(opts: Options, tune: impl FnOnce(&mut ServerConfig)) -> Harness {
        let upstream = TestUpstream::start(opts).await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&upstream, dir.path());
        tune(&mut cfg);
        let mut h = Harness {
            base: String::new(),
            client: reqwest::Client::new(),
            upstream,
            dir,
            stop: None,
            task: None,
            key: cfg.api_keys.first().cloned(),
        };
        h.start(cfg).await;
        h
    }

    pub async fn start(&mut self, cfg: ServerConfig) {
        let server = Server::bind(cfg).await.unwrap();
        self.base = format!("http://{}", server.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            server
                .run(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        }));
    }

    /// Graceful stop (as on SIGTERM), waiting for the engine to stop.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self, rb: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
        match key.or(self.key.as_deref()) {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    pub async fn upload_as(&self, key: Option<&str>, name: &str, content: &[u8]) -> (u16, Value) {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::multipart::Part::bytes(content.to_vec()).file_name(name.to_owned()),
            );
        let r = self
            .auth(self.client.post(self.url("/v1/files")), key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn upload(&self, content: &[u8]) -> String {
        let (status, v) = self.upload_as(None, "requests.jsonl", content).await;
        assert_eq!(status, 200, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    pub async fn get_as(&self, key: Option<&str>, path: &str) -> (u16, Value) {
        let r = self
            .auth(self.client.get(self.url(path)), key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(None, path).await
    }

    pub async fn post_as(
        &self,
        key: Option<&str>,
        path: &str,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self
            .auth(self.client.post(self.url(path)), key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, r.json().await.unwrap_or(Value::Null), headers)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, v, _) = self.post_as(None, path, body).await;
        (s, v)
    }

    pub async fn content(&self, file_id: &str) -> String {
        let r = self
            .auth(
                self.client
                    .get(self.url(&format!("/v1/files/{file_id}/content"))),
                None,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub async fn create_batch(&self, file_id: &str, window: &str) -> Value {
        let (s, v) = self
            .post("/v1/batches", &json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": window}))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Poll until the batch is in a terminal status.
    pub async fn wait(&self, id: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (s, b) = self.get(&format!("/v1/batches/{id}")).await;
            assert_eq!(s, 200, "{b}");
            if ["completed", "failed", "expired", "cancelled"]
                .contains(&b["status"].as_str().unwrap())
            {
                return b;
            }
            assert!(
                start.elapsed() < within,
                "batch still {} after {within:?}: {b}",
                b["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Upload `content` as `key` and create a chat batch of it; its id.
    pub async fn create_as(&self, key: Option<&str>, content: &[u8]) -> String {
        let (s, f) = self.upload_as(key, "requests.jsonl", content).await;
        assert_eq!(s, 200, "{f}");
        let (s, b, _) = self
            .post_as(key, "/v1/batches", &json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
            .await;
        assert_eq!(s, 200, "{b}");
        b["id"].as_str().unwrap().to_owned()
    }

    /// Poll as `key` until the batch's status is one `until` accepts.
    pub async fn poll_as(
        &self,
        key: Option<&str>,
        id: &str,
        until: impl Fn(&str) -> bool,
        within: Duration,
    ) -> Value {
        let start = Instant::now();
        loop {
            let (s, b) = self.get_as(key, &format!("/v1/batches/{id}")).await;
            assert_eq!(s, 200, "{b}");
            if until(b["status"].as_str().unwrap_or_default()) {
                return b;
            }
            assert!(start.elapsed() < within, "after {within:?}: {b}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cancel must be refused with a 409 the SDKs do not retry.
    pub async fn cancel_refused(&self, id: &str, status: &str) {
        let (s, e, headers) = self
            .post_as(None, &format!("/v1/batches/{id}/cancel"), &json!({}))
            .await;
        assert_eq!(s, 409, "{e}");
        assert_eq!(
            e["error"]["message"],
            format!("Cannot cancel a batch with status '{status}'.")
        );
        assert_eq!(headers["x-should-retry"], "false");
    }

    /// Poll until at least `n` of the batch's requests have completed.
    pub async fn until_completed(&self, id: &str, n: u64) {
        let start = Instant::now();
        loop {
            let (_, b) = self.get(&format!("/v1/batches/{id}")).await;
            if b["request_counts"]["completed"].as_u64().unwrap() >= n {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{b}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every line of the batch's output and error files, parsed.
    pub async fn results(&self, batch: &Value) -> (Vec<Value>, Vec<Value>) {
        let mut out = Vec::new();
        for key in ["output_file_id", "error_file_id"] {
            let lines = match batch[key].as_str() {
                Some(id) => self
                    .content(id)
                    .await
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect(),
                None => Vec::new(),
            };
            out.push(lines);
        }
        let errors = out.pop().unwrap();
        (out.pop().unwrap(), errors)
    }
}

/// A chat request line.
pub fn chat_line(id: &str, text: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "test-model", "messages": [{"role": "user", "content": text}]}})
    .to_string()
}

/// A file of chat lines, one per text, ids `r-0`, `r-1`, ...
pub fn chat_file(texts: &[String]) -> Vec<u8> {
    let mut s = String::new();
    for (i, t) in texts.iter().enumerate() {
        s.push_str(&chat_line(&format!("r-{i}"), t));
        s.push('\n');
    }
    s.into_bytes()
}

/// Every custom_id of both files, sorted; asserts none appears twice.
pub fn ids_once(out: &[Value], err: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = out
        .iter()
        .chain(err)
        .map(|l| l["custom_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(
        before,
        ids.len(),
        "a custom_id appears twice in the output and error files"
    );
    ids
}
