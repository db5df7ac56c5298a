//! What the server does, for `GET /metrics` (Prometheus / OpenMetrics text).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::objects::Status;

/// The server's counters.
pub struct Metrics {
    registry: Registry,
    /// Requests sent to the upstream (each attempt counts).
    pub dispatched: Counter,
    /// Requests waiting for the upstream now.
    pub in_flight: Gauge,
    /// Attempts that were retried.
    pub retried: Counter,
    /// Requests that ended without a 2xx response.
    pub failed: Counter,
    /// Seconds per upstream attempt.
    pub latency: Histogram,
    /// Writes to the stores that failed (each retry counted).
    pub store_errors: Counter,
    /// Units of work this node holds now.
    pub leases_held: Gauge,
    /// Chunks this node claimed that an earlier holder had begun: taken
    /// over from a node that died, stalled or stopped.
    pub chunks_resumed: Counter,
    upstream_limit: Family<Vec<(String, String)>, Gauge>,
    tenant_requests: Family<Vec<(String, String)>, Counter>,
    tenant_tokens: Family<Vec<(String, String)>, Counter>,
    upstream_up: Family<Vec<(String, String)>, Gauge>,
    webhooks: Family<Vec<(String, String)>, Counter>,
    batches: Family<Vec<(String, String)>, Gauge>,
    node: Family<Vec<(String, String)>, Gauge>,
}

/// One tenant's usage counters for one model (`batchkit_tenant_*`).
#[derive(Clone)]
pub struct TenantUsage {
    succeeded: Counter,
    failed: Counter,
    input: Counter,
    output: Counter,
}

impl TenantUsage {
    /// One request ended, with the tokens the upstream reported.
    pub fn count(&self, ok: bool, input: u64, output: u64) {
        if ok { &self.succeeded } else { &self.failed }.inc();
        self.input.inc_by(input);
        self.output.inc_by(output);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh counters, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("batchkit");
        let dispatched = Counter::default();
        let in_flight = Gauge::default();
        let retried = Counter::default();
        let failed = Counter::default();
        let store_errors = Counter::default();
        let leases_held = Gauge::default();
        let chunks_resumed = Counter::default();
        let upstream_limit = Family::<Vec<(String, String)>, Gauge>::default();
        let upstream_up = Family::<Vec<(String, String)>, Gauge>::default();
        let tenant_requests = Family::<Vec<(String, String)>, Counter>::default();
        let tenant_tokens = Family::<Vec<(String, String)>, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let batches = Family::<Vec<(String, String)>, Gauge>::default();
        let webhooks = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Deliveries of webhook events, by outcome (delivered: a 2xx; failed: tried again later)",
            webhooks.clone(),
        );
        let node = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "upstream_requests_dispatched",
            "Requests sent to the upstream, every attempt counted",
            dispatched.clone(),
        );
        registry.register(
            "upstream_requests_in_flight",
            "Requests waiting for the upstream",
            in_flight.clone(),
        );
        registry.register(
            "upstream_requests_retried",
            "Attempts retried after a 408/409/429/5xx, timeout or connection error",
            retried.clone(),
        );
        registry.register(
            "requests_failed",
            "Requests that ended without a 2xx response",
            failed.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time per upstream attempt",
            latency.clone(),
        );
        registry.register(
            "store_write_errors",
            "Writes of records or files that failed and are being retried (a full disk, say)",
            store_errors.clone(),
        );
        registry.register(
            "leases_held",
            "Units of work (validations, chunks, finalizations) this node holds",
            leases_held.clone(),
        );
        registry.register(
            "chunks_resumed",
            "Chunks claimed after an earlier holder began them (taken over from a node that died, stalled or stopped)",
            chunks_resumed.clone(),
        );
        registry.register(
            "upstream_concurrency_limit",
            "Requests the upstream may have in flight now: the adaptive limit, at most --concurrency",
            upstream_limit.clone(),
        );
        registry.register(
            "upstream_up",
            "1 while the upstream is taken to be up; 0 through an outage, while dispatch pauses",
            upstream_up.clone(),
        );
        registry.register(
            "tenant_requests",
            "Requests answered for each tenant, by model and outcome (succeeded: a 2xx; failed: any other end)",
            tenant_requests.clone(),
        );
        registry.register(
            "tenant_tokens",
            "Tokens the upstream reported for each tenant's requests, by model and kind (input, output)",
            tenant_tokens.clone(),
        );
        registry.register("batches", "Batches by status", batches.clone());
        registry.register(
            "node",
            "This node (its --node-id as the label), always 1",
            node.clone(),
        );
        Metrics {
            registry,
            dispatched,
            in_flight,
            retried,
            failed,
            latency,
            store_errors,
            leases_held,
            chunks_resumed,
            upstream_limit,
            upstream_up,
            tenant_requests,
            tenant_tokens,
            webhooks,
            batches,
            node,
        }
    }

    /// One delivery of a webhook event
    /// (`batchkit_webhook_deliveries_total{outcome="delivered"|"failed"}`).
    pub fn webhook(&self, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.webhooks
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    /// An upstream's concurrency limit and state
    /// (`batchkit_upstream_concurrency_limit{upstream="..."}`,
    /// `batchkit_upstream_up{upstream="..."}`).
    pub fn upstream(&self, url: &str, limit: usize, up: bool) {
        let label = vec![("upstream".to_owned(), url.to_owned())];
        self.upstream_limit.get_or_create(&label).set(limit as i64);
        self.upstream_up.get_or_create(&label).set(i64::from(up));
    }

    /// The counters of `tenant`'s requests for `model`: looked up once (a
    /// chunk's worth of requests share them), then counted without
    /// building labels.
    pub fn tenant(&self, tenant: &str, model: &str) -> TenantUsage {
        let labels = |k: &str, v: &str| {
            vec![
                ("tenant".to_owned(), tenant.to_owned()),
                ("model".to_owned(), model.to_owned()),
                (k.to_owned(), v.to_owned()),
            ]
        };
        let requests = |o| {
            self.tenant_requests
                .get_or_create(&labels("outcome", o))
                .clone()
        };
        let tokens = |k| self.tenant_tokens.get_or_create(&labels("kind", k)).clone();
        TenantUsage {
            succeeded: requests("succeeded"),
            failed: requests("failed"),
            input: tokens("input"),
            output: tokens("output"),
        }
    }

    /// Name this node in the metrics (`batchkit_node{node="..."} 1`).
    pub fn set_node(&self, id: &str) {
        self.node
            .get_or_create(&vec![("node".to_owned(), id.to_owned())])
            .set(1);
    }

    /// The text exposition, with batch counts as of now.
    pub fn render(&self, by_status: &[(Status, u64)]) -> String {
        for status in Status::ALL {
            let n = by_status
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.batches
                .get_or_create(&vec![("status".to_owned(), status.as_str().to_owned())])
                .set(n as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
