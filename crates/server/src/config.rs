//! How a server runs: where it forwards requests, where it keeps its state,
//! who may call it, and how hard it pushes the upstream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use batchkit_core::Provider;

/// Everything `batchkit serve` is told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The OpenAI-compatible upstreams: base URLs with or without `/v1`,
    /// each for any model or for one (`MODEL=URL`); several for one model
    /// are replicas.
    pub upstreams: Vec<UpstreamSpec>,
    /// Sent to the upstream as `Authorization: Bearer ...`.
    pub upstream_api_key: Option<String>,
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The database and the stored files live here (with SQLite and no
    /// object store).
    pub data_dir: PathBuf,
    /// A PostgreSQL URL, for a job store several nodes share; `None`:
    /// SQLite in `data_dir`, for one server.
    pub database: Option<String>,
    /// Where files are stored: `s3://BUCKET[/PREFIX]` (configured from the
    /// `AWS_*` environment), or `file:///PATH`, a directory every node
    /// mounts; `None`: `data_dir`.
    pub object_store: Option<String>,
    /// Accepted API keys, one tenant each; with no tenants file either,
    /// no authentication.
    pub api_keys: Vec<String>,
    /// The tenants file (TOML): tenants with their hashed keys, weights and
    /// limits, read again on SIGHUP and when it changes.
    pub tenants_file: Option<PathBuf>,
    /// Where the batches' ends of tenants without a webhook of their own
    /// are told.
    pub webhook: Option<crate::webhooks::Webhook>,
    /// Serve without keys on an address other than loopback.
    pub insecure_no_auth: bool,
    /// The most requests in flight to the upstream at once, across all
    /// batches: the ceiling of the adaptive limit.
    pub concurrency: usize,
    /// Retries of one request after a 408, 429, 5xx, timeout or
    /// connection error.
    pub max_retries: u32,
    /// How long one upstream request may take.
    pub request_timeout: Duration,
    /// How long a connection to the upstream may take to open.
    pub connect_timeout: Duration,
    /// How long a request may wait for its answer before the upstream is
    /// asked (by a probe) whether it is alive; a dead one is declared
    /// down, a slow one waited for up to `request_timeout`.
    pub stall_timeout: Duration,
    /// The first retry's delay; later ones double it (with jitter).
    pub retry_base_delay: Duration,
    /// The largest file accepted by `POST /v1/files`.
    pub max_upload_bytes: u64,
    /// Whose rules validate input files.
    pub provider: Provider,
    /// How long a cancelled or expired batch waits for requests in flight.
    pub cancel_grace: Duration,
    /// How long a client may take to send a request's headers, and may
    /// keep an idle connection open between requests.
    pub header_timeout: Duration,
    /// This node's name in leases, logs and metrics (unique among the
    /// nodes that share a store).
    pub node_id: String,
    /// How long a claimed unit of work stays this node's without a
    /// renewal; renewed every third of it.
    pub lease: Duration,
    /// Requests per chunk: the unit of work a node claims.
    pub chunk_requests: u64,
    /// How often an idle node looks for work it was not told of.
    pub poll_interval: Duration,
    /// The completion windows a batch may ask for (OpenAI: only `24h`).
    pub completion_windows: Vec<Window>,
    /// Fail a batch at validation whose model the upstream's `GET
    /// /v1/models` does not list (OpenAI's `model_not_found`).
    pub check_models: bool,
}

/// A completion window a server offers: its name and its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// As a client writes it: `24h`, `48h`, `90s`.
    pub text: String,
    /// Its length in seconds.
    pub seconds: i64,
}

impl std::str::FromStr for Window {
    type Err = String;

    fn from_str(text: &str) -> Result<Window, String> {
        Ok(Window {
            text: text.to_owned(),
            seconds: crate::window::parse(text)?,
        })
    }
}

/// The default node id: the host's name and the process id.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", std::process::id())
}

impl ServerConfig {
    /// The defaults of `batchkit serve`, for this upstream.
    pub fn new(upstream: impl Into<String>) -> ServerConfig {
        ServerConfig {
            upstreams: vec![UpstreamSpec {
                model: None,
                url: upstream.into(),
            }],
            upstream_api_key: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            data_dir: PathBuf::from("batchkit-data"),
            database: None,
            object_store: None,
            api_keys: Vec::new(),
            tenants_file: None,
            webhook: None,
            insecure_no_auth: false,
            concurrency: 64,
            max_retries: batchkit_client::DEFAULT_MAX_RETRIES,
            request_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(20),
            retry_base_delay: Duration::from_millis(500),
            max_upload_bytes: 200 * 1024 * 1024,
            provider: Provider::OpenAi,
            cancel_grace: Duration::from_secs(2),
            header_timeout: Duration::from_secs(30),
            node_id: default_node_id(),
            lease: Duration::from_secs(15),
            chunk_requests: 1000,
            poll_interval: Duration::from_secs(1),
            completion_windows: vec![Window {
                text: "24h".to_owned(),
                seconds: 86_400,
            }],
            check_models: true,
        }
    }
}

/// One `--upstream`: `URL`, for any model, or `MODEL=URL`, for that model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// The model it serves, or `None` for any model (the ones its
    /// `GET /v1/models` lists).
    pub model: Option<String>,
    /// Its base URL, with or without `/v1`.
    pub url: String,
}

impl std::str::FromStr for UpstreamSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<UpstreamSpec, String> {
        let scheme = s.find("://");
        let (model, url) = match s.find('=') {
            // An `=` before the scheme separates a model; one after it is
            // the URL's own (a query).
            Some(eq) if scheme.is_none_or(|sc| eq < sc) => (Some(&s[..eq]), &s[eq + 1..]),
            _ => (None, s),
        };
        if model.is_some_and(str::is_empty) {
            return Err(format!("'{s}': the model before '=' is empty"));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "'{url}' is not an http:// or https:// URL (give URL, or MODEL=URL)"
            ));
        }
        Ok(UpstreamSpec {
            model: model.map(str::to_owned),
            url: url.to_owned(),
        })
    }
}

/// The URL of `path` (a request line's `url`, `/health`) at the upstream
/// `base`: any trailing `/` and `/v1` removed, then the path (never
/// `/v1/v1`).
pub fn upstream_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_never_double_v1() {
        for base in [
            "http://h:8000",
            "http://h:8000/",
            "http://h:8000/v1",
            "http://h:8000/v1/",
        ] {
            assert_eq!(
                upstream_url(base, "/v1/chat/completions"),
                "http://h:8000/v1/chat/completions"
            );
            assert_eq!(upstream_url(base, "/score"), "http://h:8000/score");
        }
    }

    #[test]
    fn upstreams_are_urls_or_model_equals_url() {
        let spec = |s: &str| s.parse::<UpstreamSpec>();
        assert_eq!(
            spec("http://gpu:8000/v1"),
            Ok(UpstreamSpec {
                model: None,
                url: "http://gpu:8000/v1".into()
            })
        );
        assert_eq!(
            spec("llama-3.1-8b=http://gpu:8000"),
            Ok(UpstreamSpec {
                model: Some("llama-3.1-8b".into()),
                url: "http://gpu:8000".into()
            })
        );
        assert_eq!(
            spec("http://gpu:8000/v1?a=b").map(|s| s.model),
            Ok(None),
            "an = in the URL is the URL's"
        );
        for bad in ["gpu:8000", "=http://gpu", "m=gpu:8000", ""] {
            assert!(spec(bad).is_err(), "{bad}");
        }
    }
}
