//! `batchkit serve`: run the Batch API server until Ctrl-C or SIGTERM.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::exit::Exit;

/// Run the server with `cfg`.
pub fn run(cfg: batchkit_server::ServerConfig) -> anyhow::Result<Exit> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let upstream = cfg.upstream.clone();
        let server = batchkit_server::Server::bind(cfg).await?;
        eprintln!("listening on http://{}", server.local_addr());
        tracing::info!(%upstream, "forwarding batch requests");
        server.run(shutdown_signal()).await?;
        tracing::info!("stopped; unfinished batches resume on the next start");
        Ok(Exit::Ok)
    })
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
