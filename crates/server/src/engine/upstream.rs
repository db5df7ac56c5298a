//! Sending one request to the upstream, through its [`Gate`]: 408, 409,
//! 429 and 5xx are retried with exponential backoff and jitter (at least
//! `Retry-After`), up to `max_retries` times; an upstream that cannot be
//! reached pauses dispatch until a probe finds it back, and costs no
//! request.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use super::gate::{Gate, Signal};
use crate::config::{ServerConfig, upstream_url};
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
    /// The upstream is down and another replica is up: the request is
    /// given back, to go there.
    Moved,
}

/// One upstream, as the dispatcher sees it.
#[derive(Clone)]
pub struct Upstream {
    base: Arc<str>,
    client: reqwest::Client,
    cfg: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
    models: Arc<tokio::sync::Mutex<Option<Listed>>>,
    gate: Arc<Gate>,
    last_probe: Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>,
    /// Whether the engine's queue is watched already.
    watching: Arc<std::sync::atomic::AtomicBool>,
    /// Who answers at the address: its models and when each was created,
    /// from `GET /v1/models` (a restarted engine differs).
    identity: Arc<tokio::sync::Mutex<Option<String>>>,
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
    /// When the engine stamped it (at its start, for llama.cpp and vLLM).
    #[serde(default)]
    created: serde_json::Value,
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
    /// The upstream at `base`, reached with `client`.
    pub fn new(
        base: &str,
        client: reqwest::Client,
        cfg: Arc<ServerConfig>,
        metrics: Arc<Metrics>,
    ) -> Upstream {
        let gate = Gate::new(upstream_url(base, ""), cfg.concurrency);
        Upstream {
            base: base.into(),
            client,
            cfg,
            metrics,
            models: Arc::default(),
            gate,
            last_probe: Arc::default(),
            watching: Arc::default(),
            identity: Arc::default(),
        }
    }

    /// The HTTP client every upstream shares.
    pub fn client(cfg: &ServerConfig) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            // Under the 5 s keep-alive of llama.cpp's server: a connection
            // it is about to close is not reused.
            .pool_idle_timeout(Duration::from_secs(4))
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.connect_timeout.min(cfg.request_timeout))
            .build()
    }

    /// The URL of `path` at this upstream.
    fn url(&self, path: &str) -> String {
        upstream_url(&self.base, path)
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
        let jittered = base.mul_f64(crate::ids::random_between(0.5, 1.0));
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
        let target = self.url("/v1/models");
        let ids = match self.get("/v1/models", Duration::from_secs(10)).send().await {
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

    /// Send `body` to the upstream's `url` until it is answered for good,
    /// or `deadline` (the end of the batch's window) passes. The caller
    /// holds a permit of [`Upstream::gate`].
    ///
    /// 408, 409, 429 and 5xx answers are retried up to `max_retries` times
    /// with backoff. An upstream that cannot be reached (refused, reset, 502,
    /// 503, 504, no answer and no answer to a probe) is an outage, not the
    /// request's fault: dispatch pauses until a probe finds it back, and
    /// such attempts use up no retries unless other requests are answered
    /// meanwhile. Only the end of the window writes a request off.
    pub async fn send(
        &self,
        url: &str,
        body: Bytes,
        deadline: tokio::time::Instant,
        elsewhere: impl Fn() -> bool,
    ) -> Reply {
        let target = self.url(url);
        let mut attempt = 0u32;
        loop {
            if !self.gate.is_up() && elsewhere() {
                return Reply::Moved;
            }
            if !self.gate.wait_up(deadline).await {
                return Reply::NoResponse {
                    code: "upstream_unavailable",
                    message: format!(
                        "The upstream {} was down until the batch's window ended.",
                        self.gate.name()
                    ),
                };
            }
            let down = self.gate.down_token();
            let outages = self.gate.outages();
            self.metrics.dispatched.inc();
            self.metrics.in_flight.inc();
            let started = Instant::now();
            // (At the end of the window the dispatcher abandons what is in
            // flight; it is written as expired.)
            let result = tokio::select! {
                r = self.attempt(&target, &body) => Some(r),
                // Found down while this attempt waited: abandoned, and sent
                // again once the upstream is back.
                _ = down.cancelled() => None,
            };
            self.metrics.in_flight.dec();
            self.metrics
                .latency
                .observe(started.elapsed().as_secs_f64());
            let last = attempt >= self.cfg.max_retries;
            let answer = match result {
                Some(Ok(answer)) => answer,
                Some(Err(e)) => {
                    let certain = e.is_connect();
                    if self
                        .outage(&target, &error_chain(&e), certain, outages, deadline)
                        .await
                    {
                        if last {
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
                        attempt += 1;
                    }
                    continue;
                }
                None => continue,
            };
            let status = answer.status;
            self.publish();
            if matches!(status.as_u16(), 502..=504) {
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    self.gate.signal(Signal::Overloaded);
                }
                let counted = self
                    .outage(
                        &target,
                        &format!("answered {status}"),
                        false,
                        outages,
                        deadline,
                    )
                    .await;
                if counted && last {
                    return answer.reply();
                }
                attempt += u32::from(counted);
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.gate.signal(Signal::Overloaded);
            } else {
                self.gate.signal(Signal::Answered(started.elapsed()));
            }
            if retryable(status) && !last {
                tracing::warn!(%target, status = status.as_u16(), attempt, "upstream answered {status}; retrying");
                self.metrics.retried.inc();
                let wait = self.delay(attempt, answer.retry_after);
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + wait)).await;
                attempt += 1;
                continue;
            }
            return answer.reply();
        }
    }

    /// One attempt. While it has no answer, the upstream is asked every
    /// `--stall-timeout` whether it is alive: a slow engine is waited for
    /// (up to `--request-timeout`), a dead one is declared down, which
    /// abandons the attempt.
    async fn attempt(&self, target: &str, body: &Bytes) -> Result<Answer, reqwest::Error> {
        let mut req = self
            .client
            .post(target)
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(key) = &self.cfg.upstream_api_key {
            req = req.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let sent = async {
            let resp = req.send().await?;
            let status = resp.status();
            let retry_after = retry_after(resp.headers());
            let request_id = resp
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>(Answer {
                status,
                retry_after,
                request_id,
                body,
            })
        };
        tokio::pin!(sent);
        loop {
            tokio::select! {
                r = &mut sent => return r,
                _ = tokio::time::sleep(self.cfg.stall_timeout) => {
                    if !self.alive().await {
                        tracing::warn!(%target, "no answer for {:?} and the upstream does not answer a probe: taken as down", self.cfg.stall_timeout);
                        if self.gate.unreachable(true) {
                            self.watch_recovery();
                        }
                    }
                }
            }
        }
    }

    /// An attempt could not reach the upstream. Tell the gate (which may
    /// declare it down and pause dispatch), wait a little, and say whether
    /// the attempt counts against the request's retries: not when the
    /// upstream was found down since the attempt began (an outage costs
    /// no request), else yes (the upstream is up, so the trouble is this
    /// request's, or a passing one).
    async fn outage(
        &self,
        target: &str,
        what: &str,
        certain: bool,
        outages: u64,
        deadline: tokio::time::Instant,
    ) -> bool {
        if self.gate.unreachable(certain) {
            tracing::warn!(upstream = %self.gate.name(), %target, "the upstream is down ({what}); dispatch pauses until it answers again");
            self.watch_recovery();
        }
        self.publish();
        let wait = self.delay(0, None);
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + wait)).await;
        let counted = self.gate.outages() == outages && self.gate.is_up();
        if counted {
            tracing::warn!(%target, "upstream {what}; retrying");
            self.metrics.retried.inc();
        }
        counted
    }

    /// Probe the upstream until it answers, then reopen dispatch (one
    /// watcher at a time).
    fn watch_recovery(&self) {
        let up = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(250);
            loop {
                tokio::time::sleep(wait).await;
                if up.probe().await {
                    up.gate.closed();
                    up.publish();
                    up.read_capacity().await;
                    return;
                }
                if up.gate.is_up() {
                    return;
                }
                wait = (wait * 2).min(PROBE_EVERY);
            }
        });
    }

    /// Whether the upstream answers a probe, asked at most once per few
    /// seconds however many requests wonder. An upstream that answers but
    /// is another engine than before (restarted behind the same address)
    /// has the requests in flight to the old one abandoned, to be sent
    /// again at once.
    async fn alive(&self) -> bool {
        let mut last = self.last_probe.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < PROBE_FRESH
        {
            return ok;
        }
        let ok = self.probe().await;
        *last = Some((Instant::now(), ok));
        drop(last);
        if ok && self.check_identity().await {
            tracing::warn!(upstream = %self.gate.name(), "another engine answers at the upstream's address: the requests in flight to the one before are sent again");
            self.gate.replaced();
        }
        ok
    }

    /// Read who answers at the address; whether it changed since the last
    /// reading (the first reading changes nothing).
    async fn check_identity(&self) -> bool {
        let Some(now) = self.identity_now().await else {
            return false;
        };
        let mut known = self.identity.lock().await;
        let changed = known.as_ref().is_some_and(|k| *k != now);
        *known = Some(now);
        changed
    }

    /// The upstream's models and their `created` stamps (llama.cpp, vLLM
    /// and SGLang stamp them when the engine starts).
    async fn identity_now(&self) -> Option<String> {
        let resp = self.get("/v1/models", PROBE_TIMEOUT).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let list: ModelList = resp.json().await.ok()?;
        let mut models: Vec<String> = list
            .data
            .iter()
            .map(|m| format!("{}@{}", m.id, m.created))
            .collect();
        models.sort_unstable();
        Some(models.join(","))
    }

    /// A GET of `path` at this upstream, with its key where it has one.
    fn get(&self, path: &str, timeout: Duration) -> reqwest::RequestBuilder {
        let req = self.client.get(self.url(path)).timeout(timeout);
        match &self.cfg.upstream_api_key {
            Some(key) => req.header(AUTHORIZATION, format!("Bearer {key}")),
            None => req,
        }
    }

    /// `GET /health`: llama.cpp, vLLM and SGLang answer 200 once the model
    /// is loaded and 503 while it loads; an upstream without the route
    /// answers 404, which still shows it alive. No answer, or 502, 503 or
    /// 504, is down.
    async fn probe(&self) -> bool {
        let req = self.get("/health", PROBE_TIMEOUT.min(self.cfg.stall_timeout));
        match req.send().await {
            Ok(r) => !matches!(r.status().as_u16(), 502..=504),
            Err(_) => false,
        }
    }

    /// Read what the engine says of its capacity: llama.cpp's `GET /props`
    /// `total_slots` (no more requests than that are sent to it at once),
    /// and vLLM's `GET /metrics` (watched from then on: while requests wait
    /// inside the engine, the limit is cut and held).
    pub async fn read_capacity(&self) {
        self.read_slots().await;
        self.check_identity().await;
        if !self
            .watching
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            match self.engine_waiting().await {
                Some(_) => {
                    tracing::info!(upstream = %self.gate.name(), "the upstream publishes its queue (vLLM's /metrics): batch requests yield while requests wait in it");
                    let up = self.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(QUEUE_EVERY).await;
                            if let Some(waiting) = up.engine_waiting().await {
                                up.gate.engine_queue(waiting);
                                up.publish();
                            }
                        }
                    });
                }
                None => self
                    .watching
                    .store(false, std::sync::atomic::Ordering::Release),
            }
        }
    }

    /// vLLM's requests waiting (`vllm:num_requests_waiting`, summed over
    /// its models), if the upstream publishes them.
    async fn engine_waiting(&self) -> Option<u64> {
        let req = self.get("/metrics", PROBE_TIMEOUT);
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let text = resp.text().await.ok()?;
        let mut found = false;
        let mut waiting = 0.0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("vllm:num_requests_waiting") {
                found = true;
                let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
                waiting += value.unwrap_or(0.0);
            }
        }
        found.then_some(waiting.max(0.0) as u64)
    }

    async fn read_slots(&self) {
        let req = self.get("/props", PROBE_TIMEOUT);
        let Ok(resp) = req.send().await else { return };
        if !resp.status().is_success() {
            return;
        }
        let Ok(props) = resp.json::<serde_json::Value>().await else {
            return;
        };
        if let Some(slots) = props.get("total_slots").and_then(serde_json::Value::as_u64)
            && self.gate.set_ceiling(slots as usize, self.cfg.concurrency)
        {
            tracing::info!(upstream = %self.gate.name(), slots, "the upstream runs {slots} requests at once (GET /props): at most {} in flight", self.gate.ceiling());
        }
        self.publish();
    }

    /// The gate's state, in the metrics.
    fn publish(&self) {
        self.metrics
            .upstream(self.gate.name(), self.gate.limit(), self.gate.is_up());
    }

    /// The gate requests to this upstream pass.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
}

/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between probes of an upstream that is down: a probe
/// is one small request, and a shorter wait resumes sooner.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How often the engine's queue is read, where it publishes it.
const QUEUE_EVERY: Duration = Duration::from_secs(2);
/// How long a probe's verdict stands for requests that wonder.
const PROBE_FRESH: Duration = Duration::from_secs(5);

/// An answer of the upstream.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    request_id: Option<String>,
    body: Bytes,
}

impl Answer {
    fn reply(self) -> Reply {
        Reply::Response {
            status: self.status.as_u16(),
            request_id: self
                .request_id
                .unwrap_or_else(|| crate::ids::new_id("req_", 24)),
            body: self.body,
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
        let client = Upstream::client(&cfg).unwrap();
        let up = Upstream::new(
            "http://127.0.0.1:1",
            client,
            Arc::new(cfg),
            Arc::new(Metrics::new()),
        );
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
