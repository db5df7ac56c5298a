//! `batchkit serve`: run the Batch API server until Ctrl-C or SIGTERM.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::exit::Exit;

/// Run the server with `cfg`.
pub fn run(cfg: batchkit_server::ServerConfig) -> anyhow::Result<Exit> {
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (filter, bad) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr),
        )
        .with(filter)
        .init();
    if let Some(bad) = bad {
        tracing::warn!("RUST_LOG={bad:?} is not LEVEL or TARGET=LEVEL,...: logging at info");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let upstream: Vec<String> = cfg
            .upstreams
            .iter()
            .map(|u| match &u.model {
                Some(m) => format!("{m}={}", u.url),
                None => u.url.clone(),
            })
            .collect();
        let (upstream, node) = (upstream.join(", "), cfg.node_id.clone());
        let stores = match &cfg.database {
            Some(_) => "PostgreSQL",
            None => "SQLite",
        };
        let server = batchkit_server::Server::bind(cfg).await?;
        eprintln!("listening on http://{}", server.local_addr());
        tracing::info!(%upstream, %node, stores, "forwarding batch requests");
        server.run(shutdown_signal()).await?;
        tracing::info!("stopped; unfinished batches resume on the next start");
        Ok(Exit::Ok)
    })
}

/// `batchkit serve hash-key`: a key's hash, as the tenants file holds it.
pub fn hash_key(key: Option<&str>) -> anyhow::Result<Exit> {
    let key = match key {
        Some(k) => k.to_owned(),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the key from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    if key.is_empty() {
        anyhow::bail!("no key given: pass it as an argument or on standard input");
    }
    println!("{}", batchkit_server::tenants::hash_key(&key));
    Ok(Exit::Ok)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// The log filter `RUST_LOG` asks for (`debug`, `batchkit_server=debug,info`:
/// levels per target, as `env_logger` reads them), `info` without it, and
/// the value when it could not be read.
fn log_filter(var: Option<&str>) -> (Targets, Option<String>) {
    let info = Targets::new().with_default(LevelFilter::INFO);
    match var.map(str::trim).filter(|v| !v.is_empty()) {
        None => (info, None),
        Some(v) => match v.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(_) => (info, Some(v.to_owned())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing::Level;

    #[test]
    fn rust_log_sets_levels_per_target() {
        let (f, bad) = log_filter(None);
        assert!(f.would_enable("batchkit_server", &Level::INFO) && bad.is_none());
        assert!(!f.would_enable("batchkit_server", &Level::DEBUG));
        let (f, _) = log_filter(Some("debug"));
        assert!(f.would_enable("hyper", &Level::DEBUG));
        let (f, _) = log_filter(Some("batchkit_server=debug,warn"));
        assert!(f.would_enable("batchkit_server::engine", &Level::DEBUG));
        assert!(!f.would_enable("hyper", &Level::INFO));
        let (f, bad) = log_filter(Some("lots=of=equals"));
        assert!(f.would_enable("x", &Level::INFO) && bad.is_some());
    }
}
