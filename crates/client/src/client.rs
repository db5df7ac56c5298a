//! The HTTP side: requests signed as the service wants, retried as the
//! official SDKs retry them, and the Files and Batches calls.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio_util::io::ReaderStream;

use crate::config::{Auth, ClientConfig};
use crate::error::{ClientError, chain};
use crate::types::{Batch, CreateBatch, FileObject, List, Page, WithRaw, from_value};

/// The longest wait between attempts, whatever the service asks.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Progress callback: called with bytes sent or received since the last call.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A client of one service.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    cfg: Arc<ClientConfig>,
}

/// Whether the SDKs would retry this reply.
fn should_retry(status: StatusCode, headers: &HeaderMap) -> bool {
    match headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
}

/// The wait a reply asks for: `retry-after-ms`, or `Retry-After` in seconds
/// or as an HTTP date.
fn asked_delay(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return (ms.is_finite() && ms >= 0.0)
            .then(|| Duration::from_secs_f64(ms.min(1e9) / 1000.0));
    }
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The service's error from a reply body (`{"error": {...}}`), or the body.
fn api_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ClientError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error").unwrap_or(&v);
    let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
    let message = text("message")
        .or_else(|| e.as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let b = String::from_utf8_lossy(body);
            if b.trim().is_empty() {
                "(no message)".to_owned()
            } else {
                b.chars().take(500).collect()
            }
        });
    ClientError::Api {
        status,
        message,
        kind: text("type"),
        code: text("code"),
        param: text("param"),
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

impl Client {
    /// A client for `cfg`.
    pub fn new(cfg: ClientConfig) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(30).min(cfg.timeout))
            .user_agent(concat!("batchkit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport {
                url: cfg.base_url.clone(),
                reason: chain(&e),
            })?;
        Ok(Client {
            http,
            cfg: Arc::new(cfg),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.base_url)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut rb = self.http.request(method, self.url(path));
        rb = match &self.cfg.auth {
            Auth::Bearer(k) => rb.bearer_auth(k),
            Auth::ApiKey(k) => rb.header("api-key", k),
            Auth::None => rb,
        };
        if let Some(v) = &self.cfg.api_version {
            rb = rb.query(&[("api-version", v)]);
        }
        rb
    }

    /// A 404 from a base URL without `/v1` (`OPENAI_BASE_URL=http://host:8090`)
    /// is almost always the missing `/v1`: say so in the message.
    fn hint_missing_v1(&self, e: &mut ClientError) {
        let base = self.cfg.base_url.trim_end_matches('/');
        let path = base
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, p)| p);
        let lacks_v1 = !path.is_some_and(|p| p.split('/').any(|part| part == "v1"));
        if self.cfg.api_version.is_none() && lacks_v1 {
            if let ClientError::Api { message, .. } = e {
                message.push_str(&format!(
                    " (the base URL {base} has no /v1, under which OpenAI-compatible APIs answer: try {base}/v1)"
                ));
            }
        }
    }

    fn delay(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let base = self
            .cfg
            .retry_base_delay
            .saturating_mul(1 << attempt.min(16))
            .min(MAX_DELAY);
        // 75-100% of it, as the SDKs jitter (the top 53 bits of a random
        // number make a fraction; the whole delay if there is none).
        let unit = getrandom::u64().map_or(1.0, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
        let jittered = base.mul_f64(0.75 + 0.25 * unit);
        asked.unwrap_or(jittered).min(MAX_DELAY)
    }

    /// Send the request `build` makes (once per attempt), retrying as the
    /// SDKs do; a final error reply becomes [`ClientError::Api`].
    async fn send(
        &self,
        path: &str,
        build: impl Fn() -> Result<RequestBuilder, ClientError>,
    ) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            let last = attempt >= self.cfg.max_retries;
            match build()?.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let (status, headers) = (resp.status(), resp.headers().clone());
                    if !last && should_retry(status, &headers) {
                        let wait = self.delay(attempt, asked_delay(&headers));
                        tracing::warn!(%path, status = status.as_u16(), "retrying in {wait:?}");
                        tokio::time::sleep(wait).await;
                    } else {
                        let body = resp.bytes().await.unwrap_or_default();
                        let mut e = api_error(status.as_u16(), &headers, &body);
                        if status.as_u16() == 404 {
                            self.hint_missing_v1(&mut e);
                        }
                        return Err(e);
                    }
                }
                Err(e) if !last && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                    let wait = self.delay(attempt, None);
                    tracing::warn!(%path, "{}; retrying in {wait:?}", chain(&e));
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    return Err(ClientError::Transport {
                        url: self.url(path),
                        reason: chain(&e),
                    });
                }
            }
            attempt += 1;
        }
    }

    async fn json(&self, path: &str, resp: Response) -> Result<Value, ClientError> {
        resp.json().await.map_err(|e| ClientError::Decode {
            url: self.url(path),
            reason: chain(&e),
        })
    }

    async fn object<T: WithRaw>(&self, path: &str, resp: Response) -> Result<T, ClientError> {
        let v = self.json(path, resp).await?;
        from_value(v).map_err(|e| ClientError::Decode {
            url: self.url(path),
            reason: e.to_string(),
        })
    }

    async fn page<T: WithRaw>(&self, path: &str, resp: Response) -> Result<Page<T>, ClientError> {
        let v = self.json(path, resp).await?;
        let decode = |reason: String| ClientError::Decode {
            url: self.url(path),
            reason,
        };
        if !v.get("data").is_some_and(Value::is_array) {
            return Err(decode("no `data` list".into()));
        }
        let list: List<Value> = serde_json::from_value(v).map_err(|e| decode(e.to_string()))?;
        let last_id = list.last_id.or_else(|| {
            list.data
                .last()
                .and_then(|i| i["id"].as_str())
                .map(str::to_owned)
        });
        let data = list
            .data
            .into_iter()
            .map(|i| from_value(i).map_err(|e| decode(e.to_string())))
            .collect::<Result<Vec<T>, _>>()?;
        Ok(Page {
            data,
            has_more: list.has_more,
            last_id,
        })
    }

    /// Upload `path` (streamed from disk, never read whole).
    pub async fn upload(
        &self,
        path: &Path,
        purpose: &str,
        progress: Option<Progress>,
    ) -> Result<FileObject, ClientError> {
        let io = |e: std::io::Error| ClientError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        let name = path.file_name().map_or_else(
            || "upload.jsonl".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let resp = self
            .send("/files", || {
                let file = std::fs::File::open(path).map_err(io)?;
                let progress = progress.clone();
                let stream = ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20);
                let stream = Counted {
                    inner: stream,
                    progress,
                };
                let part = reqwest::multipart::Part::stream_with_length(
                    reqwest::Body::wrap_stream(stream),
                    len,
                )
                .file_name(name.clone())
                .mime_str("application/jsonl")
                .map_err(|e| ClientError::Decode {
                    url: self.url("/files"),
                    reason: e.to_string(),
                })?;
                let form = reqwest::multipart::Form::new()
                    .text("purpose", purpose.to_owned())
                    .part("file", part);
                Ok(self.request(Method::POST, "/files").multipart(form))
            })
            .await?;
        self.object("/files", resp).await
    }

    /// A file.
    pub async fn file(&self, id: &str) -> Result<FileObject, ClientError> {
        let path = format!("/files/{id}");
        let resp = self
            .send(&path, || Ok(self.request(Method::GET, &path)))
            .await?;
        self.object(&path, resp).await
    }

    /// One page of files, newest first.
    pub async fn files(
        &self,
        purpose: Option<&str>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<Page<FileObject>, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(p) = purpose {
            q.push(("purpose", p.to_owned()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(a) = after {
            q.push(("after", a.to_owned()));
        }
        let resp = self
            .send("/files", || {
                Ok(self.request(Method::GET, "/files").query(&q))
            })
            .await?;
        self.page("/files", resp).await
    }

    /// Write a file's content to `out` as it arrives.
    pub async fn content(
        &self,
        id: &str,
        out: &mut dyn std::io::Write,
        progress: Option<Progress>,
    ) -> Result<u64, ClientError> {
        let path = format!("/files/{id}/content");
        let mut resp = self
            .send(&path, || Ok(self.request(Method::GET, &path)))
            .await?;
        let mut n = 0u64;
        loop {
            let chunk = resp.chunk().await.map_err(|e| ClientError::Transport {
                url: self.url(&path),
                reason: chain(&e),
            })?;
            let Some(chunk) = chunk else { break };
            out.write_all(&chunk).map_err(|e| ClientError::Io {
                path: format!("the content of {id}"),
                source: e,
            })?;
            n += chunk.len() as u64;
            if let Some(p) = &progress {
                p(chunk.len() as u64);
            }
        }
        Ok(n)
    }

    /// Delete a file; the service's answer.
    pub async fn delete_file(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/files/{id}");
        let resp = self
            .send(&path, || Ok(self.request(Method::DELETE, &path)))
            .await?;
        self.json(&path, resp).await
    }

    /// Create a batch (its limits are checked by the caller with
    /// [`CreateBatch::check`]).
    pub async fn create_batch(&self, req: &CreateBatch) -> Result<Batch, ClientError> {
        let body = req.body();
        let resp = self
            .send("/batches", || {
                Ok(self.request(Method::POST, "/batches").json(&body))
            })
            .await?;
        self.object("/batches", resp).await
    }

    /// A batch.
    pub async fn batch(&self, id: &str) -> Result<Batch, ClientError> {
        let path = format!("/batches/{id}");
        let resp = self
            .send(&path, || Ok(self.request(Method::GET, &path)))
            .await?;
        self.object(&path, resp).await
    }

    /// One page of batches, newest first.
    pub async fn batches(
        &self,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<Page<Batch>, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(a) = after {
            q.push(("after", a.to_owned()));
        }
        let resp = self
            .send("/batches", || {
                Ok(self.request(Method::GET, "/batches").query(&q))
            })
            .await?;
        self.page("/batches", resp).await
    }

    /// Cancel a batch.
    pub async fn cancel_batch(&self, id: &str) -> Result<Batch, ClientError> {
        let path = format!("/batches/{id}/cancel");
        let resp = self
            .send(&path, || Ok(self.request(Method::POST, &path)))
            .await?;
        self.object(&path, resp).await
    }
}

/// A file's chunks, counted through `progress` as they are read.
struct Counted {
    inner: ReaderStream<tokio::fs::File>,
    progress: Option<Progress>,
}

impl futures_core::Stream for Counted {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let (std::task::Poll::Ready(Some(Ok(b))), Some(p)) = (&polled, &self.progress) {
            p(b.len() as u64);
        }
        polled
    }
}
