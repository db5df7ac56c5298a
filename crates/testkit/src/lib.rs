//! A small OpenAI-compatible server standing in for vLLM or llama.cpp in
//! tests and benchmarks: `/v1/chat/completions`, `/v1/completions` and
//! `/v1/embeddings`, with a configurable latency and faults chosen by the
//! request itself, so that a test decides which requests misbehave.
//!
//! A request's text (the last chat message, the prompt or the first
//! embedding input) may start with a directive (its first word):
//!
//! | text starts with | the upstream answers |
//! |---|---|
//! | `fail:400` (any status) | that status, always, with an OpenAI error body |
//! | `flaky:429:N` (429, 500, 503, ...) | that status for the first N attempts (429 with `Retry-After: 0`), then 200 |
//! | `drop:N` | drops the connection mid-reply for the first N attempts, then 200 |
//! | `slow:MS` | waits MS milliseconds before a 200 |
//!
//! Every request is counted by its text, so a test can check how often the
//! upstream saw each one.
//!
//! ```no_run
//! # async fn demo() {
//! let up = batchkit_testkit::TestUpstream::start(Default::default()).await;
//! println!("upstream at {}", up.url());
//! # }
//! ```

pub mod llama;
pub mod postgres;
mod process;
pub mod s3;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the upstream behaves.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Added to every reply.
    pub latency: Duration,
    /// Required as `Authorization: Bearer KEY`, if set.
    pub api_key: Option<String>,
    /// Listen here (default `127.0.0.1:0`).
    pub listen: Option<SocketAddr>,
    /// Served by `GET /v1/models`, as engines list what they loaded; `None`:
    /// no such route (a 404, as from an engine without the list).
    pub models: Option<Vec<String>>,
    /// While set, nothing is answered (`/health` included): connections
    /// are accepted and kept, as by an engine stopping that still holds
    /// them.
    pub hang: Arc<std::sync::atomic::AtomicBool>,
    /// Served by `GET /metrics` as vLLM's `vllm:num_requests_waiting`, if
    /// set: the engine's own queue.
    pub queue: Option<Arc<AtomicU64>>,
    /// While set, requests arriving at the inference routes are never
    /// answered, but `/health` and `/v1/models` are (hung workers, or a
    /// proxy whose backend went away).
    pub stall: Arc<std::sync::atomic::AtomicBool>,
    /// The `created` of every model in `GET /v1/models`: a new value is a
    /// new engine behind the same address.
    pub generation: Arc<AtomicU64>,
}

/// What the upstream has seen.
#[derive(Default)]
pub struct Stats {
    /// Requests received, every attempt.
    pub requests: AtomicU64,
    /// Requests answered 200.
    pub succeeded: AtomicU64,
    by_text: Mutex<HashMap<String, u64>>,
}

impl Stats {
    /// How many times a request with this text arrived.
    pub fn seen(&self, text: &str) -> u64 {
        self.lock().get(text).copied().unwrap_or(0)
    }

    /// How many requests arrived whose text starts with `prefix`.
    pub fn seen_prefix(&self, prefix: &str) -> u64 {
        self.lock()
            .iter()
            .filter(|(t, _)| t.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Distinct texts seen.
    pub fn distinct(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.by_text.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count an arrival; returns which attempt this is (1-based).
    fn arrive(&self, text: &str) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        let n = map.entry(text.to_owned()).or_default();
        *n += 1;
        *n
    }
}

/// A running test upstream.
pub struct TestUpstream {
    addr: SocketAddr,
    /// What it has seen.
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    opts: Options,
    stats: Arc<Stats>,
}

impl TestUpstream {
    /// Start on the current tokio runtime.
    pub async fn start(opts: Options) -> TestUpstream {
        TestUpstream::start_with(opts, Arc::new(Stats::default())).await
    }

    /// Start, counting into `stats` (kept over a restart).
    pub async fn start_with(opts: Options, stats: Arc<Stats>) -> TestUpstream {
        let listen = opts
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("test upstream cannot listen on {listen}: {e}"));
        let addr = listener.local_addr().unwrap_or(listen);
        let hang = opts.hang.clone();
        let shared = Arc::new(Shared {
            opts,
            stats: stats.clone(),
        });
        let mut app = Router::new();
        if let Some(queue) = shared.opts.queue.clone() {
            app = app.route(
                "/metrics",
                axum::routing::get(move || {
                    let waiting = queue.load(Ordering::Relaxed);
                    std::future::ready(format!(
                        "# HELP vllm:num_requests_waiting Number of requests waiting.\n\
                         # TYPE vllm:num_requests_waiting gauge\n\
                         vllm:num_requests_waiting{{model_name=\"test-model\"}} {waiting}.0\n\
                         vllm:num_requests_running{{model_name=\"test-model\"}} 0.0\n"
                    ))
                }),
            );
        }
        let mut app = app.route(
            "/health",
            axum::routing::get(move || {
                let hang = hang.clone();
                async move {
                    if hang.load(Ordering::Relaxed) {
                        std::future::pending::<()>().await;
                    }
                    axum::Json(json!({"status": "ok"}))
                }
            }),
        );
        if let Some(models) = shared.opts.models.clone() {
            let generation = shared.opts.generation.clone();
            app = app.route(
                "/v1/models",
                axum::routing::get(move || {
                    let created = generation.load(Ordering::Relaxed);
                    let list = json!({
                        "object": "list",
                        "data": models.iter().map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "batchkit-testkit"})).collect::<Vec<_>>(),
                    });
                    std::future::ready(axum::Json(list))
                }),
            );
        }
        let app = app
            .route("/v1/chat/completions", post(answer))
            .route("/v1/completions", post(answer))
            .route("/v1/embeddings", post(answer))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestUpstream { addr, stats, task }
    }

    /// Start on a runtime of its own, in a background thread (for tests
    /// that are not async). It runs until the process ends.
    pub fn start_in_thread(opts: Options) -> (SocketAddr, Arc<Stats>) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async move {
                let up = TestUpstream::start(opts).await;
                let _ = tx.send((up.addr, up.stats.clone()));
                // Keep it running until the process ends.
                let _keep = &up;
                std::future::pending::<()>().await;
            });
        });
        rx.recv()
            .unwrap_or_else(|e| panic!("test upstream did not start: {e}"))
    }

    /// Its base URL, with `/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A runtime of its own for a test upstream in a background thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("test upstream runtime: {e}"))
}

/// A test upstream on a runtime of its own, which [`Killable::kill`] stops
/// as a killed process stops: every connection is dropped at once and the
/// port refuses connections, until [`Killable::restart`] listens on it
/// again (with the same counts).
pub struct Killable {
    addr: SocketAddr,
    opts: Options,
    /// What it has seen, over every restart.
    pub stats: Arc<Stats>,
    stop: Option<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Killable {
    /// Start (on `opts.listen`, or a free port).
    pub fn start(opts: Options) -> Killable {
        let mut k = Killable {
            addr: opts
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            opts,
            stats: Arc::new(Stats::default()),
            stop: None,
        };
        k.restart();
        k
    }

    /// Listen again, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = Options {
            listen: Some(self.addr),
            ..self.opts.clone()
        };
        let stats = self.stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async move {
                let up = TestUpstream::start_with(opts, stats).await;
                let _ = ready_tx.send(up.addr);
                let _ = stop_rx.await;
                drop(up);
            });
            // Every task of the runtime (the listener and the connections
            // too) is dropped before this returns, so the port is free.
            rt.shutdown_timeout(Duration::from_secs(5));
        });
        self.addr = ready_rx
            .recv()
            .unwrap_or_else(|e| panic!("test upstream did not start: {e}"));
        self.stop = Some((stop_tx, thread));
    }

    /// Stop as a killed process: connections dropped, the port closed.
    pub fn kill(&mut self) {
        if let Some((stop, thread)) = self.stop.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }

    /// Answer nothing from now on (or again, with `false`), keeping the
    /// connections open.
    pub fn hang(&self, on: bool) {
        self.opts.hang.store(on, Ordering::Relaxed);
    }

    /// The options it runs with (their switches act at once).
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Its base URL, with `/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The text a request is about.
fn text_of(body: &Value) -> String {
    let s = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .or_else(|| body["prompt"].as_str())
        .or_else(|| body["input"].as_str())
        .or_else(|| {
            body["input"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_str)
        });
    s.unwrap_or_default().to_owned()
}

fn error(status: StatusCode, message: &str, code: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    (status, axum::Json(body)).into_response()
}

async fn answer(
    State(s): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(key) = &s.opts.api_key {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {key}")) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.",
                "invalid_api_key",
            );
        }
    }
    if s.opts.hang.load(Ordering::Relaxed) || s.opts.stall.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_json",
        );
    };
    // As an engine's schema does: every chat message is an object with a
    // role (OpenAI answers the same request with a 400 of its own).
    if uri.path().ends_with("/chat/completions") {
        let messages = body["messages"].as_array();
        if let Some(i) = messages.and_then(|m| m.iter().position(|m| m.get("role").is_none())) {
            s.stats.arrive(&text_of(&body));
            return error(
                StatusCode::BAD_REQUEST,
                &format!("messages.{i}.role: Field required"),
                "invalid_value",
            );
        }
    }
    let text = text_of(&body);
    let attempt = s.stats.arrive(&text);
    if !s.opts.latency.is_zero() {
        tokio::time::sleep(s.opts.latency).await;
    }
    let directive = text.split_whitespace().next().unwrap_or_default();
    let mut parts = directive.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("fail"), Some(code), _) => {
            let status = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
            let status = status.unwrap_or(StatusCode::BAD_REQUEST);
            return error(
                status,
                &format!("Injected failure {}.", status.as_u16()),
                "injected_failure",
            );
        }
        (Some("flaky"), Some(code), Some(n)) if attempt <= n.parse().unwrap_or(0) => {
            let status = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
            let status = status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut r = error(status, "Injected transient failure.", "injected_transient");
            if status == StatusCode::TOO_MANY_REQUESTS {
                r.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("0"));
            }
            return r;
        }
        (Some("drop"), Some(n), _) if attempt <= n.parse().unwrap_or(0) => {
            // Headers, then a body that breaks off: the client sees the
            // connection fail mid-reply.
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"partial\":")),
                Err(std::io::Error::other("injected drop")),
            ];
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::new(BrokenBody {
                    items: chunks.into_iter(),
                }))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
        (Some("slow"), Some(ms), _) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        }
        _ => {}
    }
    s.stats.succeeded.fetch_add(1, Ordering::Relaxed);
    let model = body["model"].as_str().unwrap_or("test-model");
    let prompt_tokens = text.split_whitespace().count().max(1) as u64;
    let reply = match uri.path() {
        "/v1/embeddings" => json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]}],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }),
        "/v1/completions" => json!({
            "id": "cmpl-test",
            "object": "text_completion",
            "model": model,
            "choices": [{"index": 0, "text": format!("echo: {text}"), "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 2, "total_tokens": prompt_tokens + 2},
        }),
        _ => json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {text}")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 2, "total_tokens": prompt_tokens + 2},
        }),
    };
    let mut r = axum::Json(reply).into_response();
    r.headers_mut().insert(
        "x-request-id",
        axum::http::HeaderValue::from_static("req_test"),
    );
    r
}

/// A body that yields its items in turn: a chunk, then an error.
struct BrokenBody {
    items: std::vec::IntoIter<Result<Bytes, std::io::Error>>,
}

impl http_body::Body for BrokenBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(self.items.next().map(|r| r.map(http_body::Frame::data)))
    }
}
