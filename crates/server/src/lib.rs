//! `batchkit serve`: the OpenAI Batch API (files and batches, the whole
//! lifecycle) in front of any OpenAI-compatible server (vLLM, llama.cpp,
//! Ollama, ...), durable across crashes.
//!
//! The parts: [`http`] answers the API, the [`engine`] takes each batch
//! through validation (with `batchkit-core`), dispatch to the upstream and
//! the writing of its output and error files, and the [`store`] keeps every
//! record (SQLite for one server, PostgreSQL for several nodes) and file
//! (a local or shared directory) behind narrow interfaces.
//!
//! ```no_run
//! # async fn demo() -> Result<(), batchkit_server::ServeError> {
//! use batchkit_server::{Server, ServerConfig};
//!
//! let mut cfg = ServerConfig::new("http://127.0.0.1:8000/v1");
//! cfg.listen = "127.0.0.1:0".parse().expect("an address");
//! let server = Server::bind(cfg).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod ids;
pub mod lifecycle;
pub mod lock;
pub mod metrics;
pub mod objects;
pub mod store;
pub mod tenants;
pub mod webhooks;
pub mod window;

pub use config::{ServerConfig, UpstreamSpec, Window};

use engine::Engine;
use store::{DiskFiles, FileStore, JobStore, SqliteStore};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Serving without keys on a non-loopback address.
    #[error(
        "refusing to listen on {0} without API keys: anyone who can reach it could run batches on your upstream. Give --api-key KEY (or BATCHKIT_API_KEYS) or --tenants FILE, listen on 127.0.0.1, or pass --insecure-no-auth"
    )]
    NoAuth(SocketAddr),
    /// The data directory or database could not be opened.
    // The source is printed after the message by whoever prints the chain
    // (anyhow's `{:#}`); naming it here too printed it twice.
    #[error("cannot open the data directory {}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another server holds the data directory.
    #[error(
        "the data directory {} is in use by another batchkit serve ({holder}); stop that one first, or give this one its own --data-dir",
        path.display()
    )]
    InUse {
        /// The directory.
        path: std::path::PathBuf,
        /// Who holds it: its pid and address.
        holder: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The shared database or object store could not be used.
    #[error("{0}")]
    Shared(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A bound server, ready to run.
pub struct Server {
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    /// Held while serving on SQLite: no other server may use the data
    /// directory.
    _lock: Option<lock::DataDirLock>,
}

/// The stores a server runs on, and the data directory's lock (SQLite).
type Stores = (
    Arc<dyn JobStore>,
    Arc<dyn FileStore>,
    Option<lock::DataDirLock>,
);

/// How to get what a build without `postgres` or `s3` lacks.
#[cfg(not(all(feature = "postgres", feature = "s3")))]
const WITHOUT_FEATURES: &str = "Use a released binary or the Python wheel, which have it, or build it with the features postgres and s3 (`cargo install batchkit --features postgres,s3`, or `--path crates/cli` in a clone)";

/// The file store an `--object-store` URL names: `s3://BUCKET[/PREFIX]`
/// (configured from `AWS_*`), or `file:///PATH`, a directory (`shared`:
/// other nodes use it too, so each node has its own scratch space).
fn open_files(url: &str, node: &str, shared: bool) -> Result<Arc<dyn FileStore>, ServeError> {
    let failed =
        |e: std::io::Error| ServeError::Shared(format!("cannot open the object store {url}: {e}"));
    if url.starts_with("s3://") {
        #[cfg(feature = "s3")]
        return Ok(Arc::new(store::S3Files::open(url, &[]).map_err(failed)?));
        #[cfg(not(feature = "s3"))]
        return Err(ServeError::Shared(format!(
            "--object-store {url}: this batchkit was built without S3 (the cargo feature `s3`). {WITHOUT_FEATURES}; or give file:///PATH, a directory every node mounts"
        )));
    }
    match url.strip_prefix("file://") {
        Some(path) if path.starts_with('/') => {
            let dir = std::path::Path::new(path);
            let files = if shared {
                DiskFiles::open_shared(dir, node)
            } else {
                DiskFiles::open(dir)
            };
            Ok(Arc::new(files.map_err(failed)?))
        }
        Some(_) => Err(ServeError::Shared(format!(
            "--object-store {url}: a file:// URL needs an absolute path (file:///srv/batchkit)"
        ))),
        None => Err(ServeError::Shared(format!(
            "--object-store {url}: give s3://BUCKET[/PREFIX] or file:///PATH"
        ))),
    }
}

/// Open the stores `cfg` names: SQLite and the disk under the data
/// directory (locked), or PostgreSQL and a shared object store.
async fn open_stores(cfg: &ServerConfig) -> Result<Stores, ServeError> {
    let dir = cfg.data_dir.clone();
    let data_err = |e: Box<dyn std::error::Error + Send + Sync>| ServeError::DataDir {
        path: dir.clone(),
        source: e,
    };
    let Some(url) = &cfg.database else {
        std::fs::create_dir_all(&dir).map_err(|e| data_err(e.into()))?;
        // Before anything is opened or resumed.
        let lock = lock::DataDirLock::acquire(&dir)?;
        let store =
            SqliteStore::open(&dir.join("batchkit.sqlite3")).map_err(|e| data_err(e.into()))?;
        let files = match &cfg.object_store {
            Some(url) => open_files(url, &cfg.node_id, false)?,
            None => Arc::new(DiskFiles::open(&dir).map_err(|e| data_err(e.into()))?),
        };
        return Ok((Arc::new(store), files, Some(lock)));
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ServeError::Shared(
            "--database takes a PostgreSQL URL: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (without --database, SQLite in --data-dir)".into(),
        ));
    }
    let Some(objects) = &cfg.object_store else {
        return Err(ServeError::Shared(
            "--database postgres://... needs --object-store too: the nodes that share the database must share the files (a file uploaded to one node is read by the others). Give --object-store s3://BUCKET[/PREFIX] (any S3-compatible store), or file:///PATH, a directory every node mounts".into(),
        ));
    };
    let store = connect_postgres(url).await?;
    let files = open_files(objects, &cfg.node_id, true)?;
    Ok((store, files, None))
}

/// The PostgreSQL job store at `url`.
#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str) -> Result<Arc<dyn JobStore>, ServeError> {
    let store = store::PgStore::connect(url)
        .await
        .map_err(|e| ServeError::Shared(format!("cannot use the database: {e}")))?;
    Ok(Arc::new(store))
}

/// Without the `postgres` feature, a clear refusal.
#[cfg(not(feature = "postgres"))]
async fn connect_postgres(_url: &str) -> Result<Arc<dyn JobStore>, ServeError> {
    Err(ServeError::Shared(format!(
        "--database postgres://...: this batchkit was built without PostgreSQL (the cargo feature `postgres`). {WITHOUT_FEATURES}; without --database, a single node keeps its jobs in SQLite"
    )))
}

/// Usage by tenant and model of the batches that ended at or after `since`
/// and before `until` (Unix seconds), for billing: read from the job store
/// `cfg` names (SQLite in the data directory, which a running server may
/// be using, or PostgreSQL), without starting anything.
pub async fn usage(
    cfg: &ServerConfig,
    since: i64,
    until: i64,
) -> Result<Vec<store::UsageRow>, ServeError> {
    let store: Arc<dyn JobStore> = match &cfg.database {
        None => {
            let path = cfg.data_dir.join("batchkit.sqlite3");
            if !path.is_file() {
                return Err(ServeError::Other(format!(
                    "no job store at {}: give the --data-dir the server uses (or its --database)",
                    path.display()
                )));
            }
            Arc::new(SqliteStore::open(&path).map_err(|e| ServeError::DataDir {
                path: cfg.data_dir.clone(),
                source: e.into(),
            })?)
        }
        Some(url) => connect_postgres(url).await?,
    };
    store
        .usage(since, until)
        .await
        .map_err(|e| ServeError::Other(format!("cannot read the usage: {e}")))
}

impl Server {
    /// Open the stores, resume unfinished batches and bind the address.
    pub async fn bind(cfg: ServerConfig) -> Result<Server, ServeError> {
        let tenants = match &cfg.tenants_file {
            None => tenants::Tenants::new(&cfg.api_keys, None),
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| tenants::Tenants::new(&cfg.api_keys, Some(&text))),
        }
        .map_err(|e| {
            let file = cfg
                .tenants_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            ServeError::Other(format!(
                "the tenants file {} cannot be used: {e}",
                file.display()
            ))
        })?;
        if tenants.is_open() && !cfg.insecure_no_auth && !cfg.listen.ip().is_loopback() {
            return Err(ServeError::NoAuth(cfg.listen));
        }
        let (store, files, mut lock) = open_stores(&cfg).await?;
        http::listen::raise_open_files_limit();
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: cfg.listen,
                source,
            })?;
        if let Some(lock) = &mut lock {
            lock.record(listener.local_addr().unwrap_or(cfg.listen));
        }
        let engine = Engine::new(
            store,
            files,
            Arc::new(cfg),
            Arc::new(metrics::Metrics::new()),
        )
        .map_err(|e| ServeError::Other(format!("cannot build the upstream client: {e}")))?;
        engine.tenants.replace(tenants);
        engine
            .start()
            .await
            .map_err(|e| ServeError::Other(format!("cannot resume batches: {e}")))?;
        Ok(Server {
            listener,
            engine,
            _lock: lock,
        })
    }

    /// The address it listens on (the port chosen, for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serve until `shutdown` resolves, then stop accepting, let requests
    /// in flight finish briefly, and stop the engine (unfinished batches
    /// resume on the next start).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = http::router(self.engine.clone());
        let header_timeout = self.engine.cfg.header_timeout;
        http::listen::serve(self.listener, app, header_timeout, shutdown).await;
        self.engine.shutdown().await;
        Ok(())
    }
}
