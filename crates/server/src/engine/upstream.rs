//! Sending one request to the upstream, with retries: 408, 409, 429, 5xx,
//! timeouts and connection errors are retried with exponential backoff and
//! jitter (at least `Retry-After`), up to `max_retries` times.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// The longest wait between attempts, whatever `Retry-After` says.
const MAX_DELAY: Duration = Duration::from_secs(300);

/// How a request ended.
#[derive(Debug)]
pub enum Reply {
    /// The upstream answered (any status) and this is final.
    Response {
        /// The HTTP status.
        status: u16,
        /// The upstream's request id, or one made here.
        request_id: String,
        /// The body.
        body: Bytes,
    },
    /// No answer came, even after retries.
    NoResponse {
        /// `request_timeout` or `upstream_unavailable`.
        code: &'static str,
        /// What happened on the last attempt.
        message: String,
    },
}

/// The upstream, as the dispatcher sees it.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    cfg: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
    models: Arc<tokio::sync::Mutex<Option<Listed>>>,
}

/// The models the upstream listed, and when it was asked.
#[derive(Clone)]
struct Listed {
    at: Instant,
    /// `None`: the upstream has no `GET /v1/models` (or an answer that is
    /// not a list of models), so no model is checked.
    ids: Option<Arc<HashSet<String>>>,
}

/// What `GET /v1/models` answers: `{"data": [{"id": ...}, ...]}`.
#[derive(serde::Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(serde::Deserialize)]
struct ModelEntry {
    id: String,
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
}

/// What `Retry-After` asks for: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

impl Upstream {
    /// A client for `cfg.upstream`.
    pub fn new(cfg: Arc<ServerConfig>, metrics: Arc<Metrics>) -> Result<Upstream, reqwest::Error> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .timeout(cfg.request_timeout)
            .connect_timeout(Duration::from_secs(10).min(cfg.request_timeout))
            .build()?;
        Ok(Upstream {
            client,
            cfg,
            metrics,
            models: Arc::default(),
        })
    }

    /// The delay before retry number `attempt` (0-based): the base doubled
    /// each time, with full jitter over its upper half, and at least what
    /// the upstream asked for.
    fn delay(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let base = self
            .cfg
            .retry_base_delay
            .saturating_mul(1 << attempt.min(16));
        let base = base.min(MAX_DELAY);
        let jittered = base.mul_f64(rand::rng().random_range(0.5..=1.0));
        jittered.max(asked.unwrap_or_default()).min(MAX_DELAY)
    }

    /// The models the upstream serves (its `GET /v1/models`), as listed
    /// at most `max_age` ago; `None` where it has no such route, or cannot
    /// be asked now (an outage is not a verdict on the batch's model: its
    /// requests wait and retry as any others).
    pub async fn models(&self, max_age: Duration) -> Option<Arc<HashSet<String>>> {
        let mut cached = self.models.lock().await;
        if let Some(listed) = cached.as_ref().filter(|l| l.at.elapsed() <= max_age) {
            return listed.ids.clone();
        }
        let target = self.cfg.upstream_url("/v1/models");
        let mut req = self.client.get(&target).timeout(Duration::from_secs(10));
        if let Some(key) = &self.cfg.upstream_api_key {
            req = req.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let ids = match req.send().await {
            Ok(resp) if resp.status().is_success() => match resp.json::<ModelList>().await {
                Ok(list) => Some(Arc::new(list.data.into_iter().map(|m| m.id).collect())),
                Err(e) => {
                    tracing::info!(%target, "the upstream's model list cannot be read ({e}); models are not checked");
                    None
                }
            },
            Ok(resp) if matches!(resp.status().as_u16(), 404 | 405 | 501) => {
                tracing::info!(%target, status = resp.status().as_u16(), "the upstream has no model list; models are not checked");
                None
            }
            Ok(resp) => {
                tracing::warn!(%target, status = resp.status().as_u16(), "the upstream's model list is unavailable; this batch's model is not checked");
                return None;
            }
            Err(e) => {
                tracing::warn!(%target, "the upstream's model list is unavailable ({}); this batch's model is not checked", error_chain(&e));
                return None;
            }
        };
        *cached = Some(Listed {
            at: Instant::now(),
            ids: ids.clone(),
        });
        ids
    }

    /// Send `body` to the upstream's `url` until it is answered for good.
    pub async fn send(&self, url: &str, body: Bytes) -> Reply {
        let target = self.cfg.upstream_url(url);
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .client
                .post(&target)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = &self.cfg.upstream_api_key {
                req = req.header(AUTHORIZATION, format!("Bearer {key}"));
            }
            self.metrics.dispatched.inc();
            self.metrics.in_flight.inc();
            let started = Instant::now();
            let result = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let asked = retry_after(resp.headers());
                    let request_id = resp
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    resp.bytes().await.map(|b| (status, asked, request_id, b))
                }
                Err(e) => Err(e),
            };
            self.metrics.in_flight.dec();
            self.metrics
                .latency
                .observe(started.elapsed().as_secs_f64());
            let last = attempt >= self.cfg.max_retries;
            match result {
                Ok((status, asked, _, _)) if retryable(status) && !last => {
                    tracing::warn!(%target, status = status.as_u16(), attempt, "upstream answered {status}; retrying");
                    self.metrics.retried.inc();
                    tokio::time::sleep(self.delay(attempt, asked)).await;
                }
                Ok((status, _, request_id, body)) => {
                    return Reply::Response {
                        status: status.as_u16(),
                        request_id: request_id.unwrap_or_else(|| crate::ids::new_id("req_", 24)),
                        body,
                    };
                }
                Err(e) if !last => {
                    tracing::warn!(%target, attempt, "upstream request failed: {e}; retrying");
                    self.metrics.retried.inc();
                    tokio::time::sleep(self.delay(attempt, None)).await;
                }
                Err(e) => {
                    let code = if e.is_timeout() {
                        "request_timeout"
                    } else {
                        "upstream_unavailable"
                    };
                    tracing::warn!(%target, attempts = attempt + 1, "upstream request failed for good: {e}");
                    return Reply::NoResponse {
                        code,
                        message: format!(
                            "The upstream gave no response after {} attempts: {}",
                            attempt + 1,
                            error_chain(&e)
                        ),
                    };
                }
            }
            attempt += 1;
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, "0.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_doubles_and_respects_retry_after() {
        let mut cfg = ServerConfig::new("http://127.0.0.1:1");
        cfg.retry_base_delay = Duration::from_millis(100);
        let up = Upstream::new(Arc::new(cfg), Arc::new(Metrics::new())).unwrap();
        for attempt in 0..4 {
            let d = up.delay(attempt, None);
            let full = Duration::from_millis(100 << attempt);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
        assert_eq!(
            up.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(up.delay(40, Some(Duration::from_secs(10_000))), MAX_DELAY);
    }
}
