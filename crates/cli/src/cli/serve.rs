//! `batchkit serve`'s arguments, each also read from its environment
//! variable.

use std::path::PathBuf;

use clap::Args;

use super::parse_size;

/// Arguments of `batchkit serve`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ServeArgs {
    #[command(subcommand)]
    pub action: Option<ServeAction>,

    /// The upstream's base URL, with or without `/v1`: a request line's url
    /// `/v1/chat/completions` goes to `<upstream>/v1/chat/completions`.
    /// Repeat for several: `URL` serves any model (the ones its /v1/models
    /// lists), `MODEL=URL` only that model; several for one model (or for
    /// any) are replicas, each request going to the least loaded one that
    /// is up.
    #[arg(
        long = "upstream",
        env = "BATCHKIT_UPSTREAM",
        value_name = "[MODEL=]URL",
        required = true,
        value_delimiter = ','
    )]
    pub upstreams: Vec<batchkit_server::UpstreamSpec>,

    /// Sent to the upstream as `Authorization: Bearer KEY`.
    #[arg(
        long,
        env = "BATCHKIT_UPSTREAM_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub upstream_api_key: Option<String>,

    /// Where to listen (`127.0.0.1:0` picks a free port).
    #[arg(
        long,
        env = "BATCHKIT_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8090"
    )]
    pub listen: std::net::SocketAddr,

    /// Where the job store is (SQLite in a directory, or PostgreSQL).
    #[command(flatten)]
    pub store: StoreArgs,

    /// An accepted API key (repeat for several; each key is a tenant that
    /// sees only its own files and batches). Without any, no key is asked
    /// for, and only loopback addresses are allowed.
    #[arg(
        long = "api-key",
        env = "BATCHKIT_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Tenants with their hashed API keys, weights and limits (TOML; see
    /// docs/serve.md), read again on SIGHUP and when the file changes; a
    /// broken file is reported and the tenants before it kept.
    #[arg(long, env = "BATCHKIT_TENANTS", value_name = "FILE")]
    pub tenants: Option<PathBuf>,

    /// Post OpenAI's batch webhooks (batch.completed, batch.failed,
    /// batch.cancelled, batch.expired), signed as Standard Webhooks says,
    /// to this URL, for tenants without a webhook of their own in the
    /// tenants file.
    #[arg(
        long,
        env = "BATCHKIT_WEBHOOK_URL",
        value_name = "URL",
        requires = "webhook_secret",
        value_parser = webhook_url
    )]
    pub webhook_url: Option<String>,

    /// The secret webhooks are signed with (whsec_ and base64; `batchkit
    /// serve webhook-secret` makes one).
    #[arg(
        long,
        env = "BATCHKIT_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        requires = "webhook_url",
        value_parser = webhook_secret
    )]
    pub webhook_secret: Option<String>,

    /// Serve without API keys on a non-loopback address.
    #[arg(long, env = "BATCHKIT_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// The most requests in flight to the upstream at once, shared by all
    /// batches: the ceiling of a limit that adapts to what the upstream
    /// sustains (it starts at 4, grows while answers come in time, and
    /// backs off on 429, 503 or rising latency; an engine that publishes
    /// its slots, as llama.cpp's /props, lowers it to them).
    #[arg(long, env = "BATCHKIT_CONCURRENCY", value_name = "N", default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Retries of a request after 408/409/429/5xx, a timeout or a
    /// connection error (exponential backoff with jitter, at least
    /// Retry-After).
    #[arg(
        long,
        env = "BATCHKIT_MAX_RETRIES",
        value_name = "N",
        default_value_t = batchkit_client::DEFAULT_MAX_RETRIES
    )]
    pub max_retries: u32,

    /// Seconds one upstream request may take.
    #[arg(long, env = "BATCHKIT_REQUEST_TIMEOUT", value_name = "SECS", default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,

    /// Seconds a connection to the upstream may take to open.
    #[arg(long, env = "BATCHKIT_CONNECT_TIMEOUT", value_name = "SECS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,

    /// Seconds a request may wait for its answer before the upstream is
    /// probed: a dead upstream is declared down (dispatch pauses, the
    /// request is sent again when it is back), a slow one is waited for up
    /// to --request-timeout.
    #[arg(long, env = "BATCHKIT_STALL_TIMEOUT", value_name = "SECS", default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,

    /// Milliseconds before the first retry (doubling after each).
    #[arg(
        long,
        env = "BATCHKIT_RETRY_BASE_DELAY_MS",
        value_name = "MS",
        default_value_t = 500
    )]
    pub retry_base_delay_ms: u64,

    /// The largest file `POST /v1/files` accepts (e.g. 200MiB).
    #[arg(long, env = "BATCHKIT_MAX_UPLOAD_BYTES", value_name = "SIZE", default_value = "200MiB",
        value_parser = parse_size)]
    pub max_upload_bytes: u64,

    /// Whose rules validate input files: openai, azure, groq, together,
    /// mistral, vllm.
    #[arg(
        long,
        env = "BATCHKIT_PROVIDER",
        value_name = "NAME",
        default_value = "openai"
    )]
    pub provider: batchkit_core::Provider,

    /// Seconds a client may take to send a request's headers, and may
    /// keep an idle connection open between requests; slower connections
    /// are closed so that they cannot hold the server's connections.
    #[arg(long, env = "BATCHKIT_HEADER_TIMEOUT", value_name = "SECS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,

    /// Where the files are kept: s3://BUCKET[/PREFIX] (any S3-compatible
    /// store, configured by AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP), or
    /// file:///PATH, a directory every node mounts [default: --data-dir].
    #[arg(long, env = "BATCHKIT_OBJECT_STORE", value_name = "URL")]
    pub object_store: Option<String>,

    /// This node's name in leases, logs and metrics; unique among the
    /// nodes that share a database [default: host name and process id].
    #[arg(long, env = "BATCHKIT_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,

    /// Seconds a node holds a unit of work (a batch's validation or
    /// finalization, a chunk of its requests) without renewing it; renewed
    /// every third of that. A node that stops renewing (killed, cut off)
    /// has its work taken over after this long.
    #[arg(long, env = "BATCHKIT_LEASE_SECONDS", value_name = "SECS", default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_seconds: u64,

    /// Requests per chunk: the unit of a batch's work that one node
    /// claims (more nodes share a batch of more chunks).
    #[arg(long, env = "BATCHKIT_CHUNK_REQUESTS", value_name = "N", default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub chunk_requests: u64,

    /// The completion windows a batch may ask for, comma-separated: 24h
    /// (OpenAI's only one), or any <n>s, <n>m, <n>h, <n>d up to 30d, such
    /// as 24h,48h,7d.
    #[arg(
        long,
        env = "BATCHKIT_COMPLETION_WINDOWS",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "24h"
    )]
    pub completion_windows: Vec<batchkit_server::Window>,

    /// Do not ask the upstream's GET /v1/models which models it serves
    /// (by default a batch whose model it does not list fails at
    /// validation with model_not_found, as on OpenAI).
    #[arg(long, env = "BATCHKIT_NO_MODEL_CHECK")]
    pub no_model_check: bool,
}

impl ServeArgs {
    /// The server's settings.
    pub fn to_config(&self) -> batchkit_server::ServerConfig {
        let mut cfg = batchkit_server::ServerConfig::new(String::new());
        cfg.upstreams.clone_from(&self.upstreams);
        cfg.upstream_api_key.clone_from(&self.upstream_api_key);
        cfg.listen = self.listen;
        cfg.data_dir.clone_from(&self.store.data_dir);
        cfg.api_keys = self
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        cfg.insecure_no_auth = self.insecure_no_auth;
        cfg.tenants_file.clone_from(&self.tenants);
        cfg.concurrency = self.concurrency as usize;
        cfg.max_retries = self.max_retries;
        cfg.request_timeout = std::time::Duration::from_secs(self.request_timeout);
        cfg.connect_timeout = std::time::Duration::from_secs(self.connect_timeout);
        cfg.stall_timeout = std::time::Duration::from_secs(self.stall_timeout);
        cfg.retry_base_delay = std::time::Duration::from_millis(self.retry_base_delay_ms);
        cfg.max_upload_bytes = self.max_upload_bytes;
        cfg.provider = self.provider;
        cfg.header_timeout = std::time::Duration::from_secs(self.header_timeout);
        if let Some(node) = self.node_id.as_ref().filter(|n| !n.is_empty()) {
            cfg.node_id.clone_from(node);
        }
        cfg.lease = std::time::Duration::from_secs(self.lease_seconds);
        cfg.chunk_requests = self.chunk_requests;
        cfg.database.clone_from(&self.store.database);
        cfg.object_store.clone_from(&self.object_store);
        cfg.completion_windows.clone_from(&self.completion_windows);
        cfg.check_models = !self.no_model_check;
        if let (Some(url), Some(secret)) = (&self.webhook_url, &self.webhook_secret) {
            // Both were checked as they were parsed.
            cfg.webhook = batchkit_server::webhooks::Webhook::new(url, secret).ok();
        }
        cfg
    }
}

/// `--webhook-url`: an http(s) URL.
fn webhook_url(s: &str) -> Result<String, String> {
    let secret = batchkit_server::webhooks::new_secret();
    batchkit_server::webhooks::Webhook::new(s, &secret).map(|_| s.to_owned())
}

/// `--webhook-secret`: `whsec_` and base64 of at least 16 bytes.
fn webhook_secret(s: &str) -> Result<String, String> {
    batchkit_server::webhooks::parse_secret(s).map(|_| s.to_owned())
}

/// What `batchkit serve` does besides serving.
#[derive(Debug, clap::Subcommand)]
pub enum ServeAction {
    /// Print the hash of an API key, as the tenants file holds keys
    /// (`sha256:...`). The key is read from standard input when not given,
    /// so it need not be in the shell's history.
    HashKey {
        /// The key (default: the first line of standard input).
        key: Option<String>,
    },
    /// Usage by tenant and model of the batches that ended in a period,
    /// for billing: batches, requests that succeeded and failed, and the
    /// tokens the responses reported. Read from the server's job store
    /// (its --data-dir, or --database), while it runs or not.
    #[command(
        after_help = super::text(super::help::SERVE_USAGE),
        help_template = super::verbatim(super::text(super::help::SERVE_USAGE))
    )]
    Usage(UsageArgs),
    /// Print a new random webhook secret (`whsec_...`, 32 bytes), for
    /// `--webhook-secret` or a tenant's `webhook_secret`; the receiver
    /// verifies with the same secret (OpenAI's SDKs:
    /// `client.webhooks.unwrap(body, headers, secret=...)`).
    WebhookSecret,
}

/// Where a server's job store is.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Where the database and the files are kept.
    #[arg(
        long,
        env = "BATCHKIT_DATA_DIR",
        value_name = "DIR",
        default_value = "batchkit-data"
    )]
    pub data_dir: PathBuf,

    /// A PostgreSQL database that several nodes share, as
    /// postgres://USER:PASS@HOST:PORT/DB; needs --object-store. Without
    /// it: SQLite in --data-dir, for one server.
    #[arg(
        long,
        env = "BATCHKIT_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
}

/// `batchkit serve usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// From when: a date (2026-11-01, UTC), a time (2026-11-01T12:00:00Z),
    /// or a span back from now (24h, 7d).
    #[arg(long, value_name = "WHEN", value_parser = when)]
    pub since: i64,

    /// Until when, not included (default: now); as --since.
    #[arg(long, value_name = "WHEN", value_parser = when)]
    pub until: Option<i64>,

    /// Only this tenant.
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = super::Format::Human)]
    pub format: super::Format,

    /// The server's job store.
    #[command(flatten)]
    pub store: StoreArgs,
}

impl UsageArgs {
    /// What the command is asked.
    pub fn options(&self) -> crate::cmd::serve::UsageOptions {
        crate::cmd::serve::UsageOptions {
            since: self.since,
            until: self.until,
            tenant: self.tenant.clone(),
            json: matches!(self.format, super::Format::Json),
            data_dir: self.store.data_dir.clone(),
            database: self.store.database.clone(),
        }
    }
}

/// A moment as Unix seconds: a date, an RFC 3339 time, or a span back
/// from now.
fn when(s: &str) -> Result<i64, String> {
    let now = std::time::SystemTime::now();
    let at = if let Ok(span) = humantime::parse_duration(s) {
        now.checked_sub(span)
            .ok_or_else(|| format!("'{s}' reaches back before 1970"))?
    } else {
        let full = if s.len() == 10 {
            format!("{s}T00:00:00Z")
        } else {
            s.to_owned()
        };
        humantime::parse_rfc3339_weak(&full).map_err(|_| {
            format!("'{s}' is not a date (2026-11-01), a time (2026-11-01T12:00:00Z) or a span back from now (24h, 7d)")
        })?
    };
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .map_err(|_| format!("'{s}' is before 1970"))
}
