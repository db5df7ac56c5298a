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

/// What `batchkit serve usage` is asked.
#[derive(Debug)]
pub struct UsageOptions {
    /// From (Unix seconds).
    pub since: i64,
    /// Until, not included (default: now).
    pub until: Option<i64>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// JSON instead of a table.
    pub json: bool,
    /// The server's data directory.
    pub data_dir: std::path::PathBuf,
    /// Or its PostgreSQL URL.
    pub database: Option<String>,
}

/// `batchkit serve usage`: usage by tenant and model over a period.
pub fn usage(args: &UsageOptions) -> anyhow::Result<Exit> {
    // By default everything so far: this second too.
    let until = args
        .until
        .unwrap_or_else(|| batchkit_server::ids::now() + 1);
    if until <= args.since {
        anyhow::bail!("--until must come after --since");
    }
    let mut cfg = batchkit_server::ServerConfig::new(String::new());
    cfg.data_dir.clone_from(&args.data_dir);
    cfg.database.clone_from(&args.database);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut rows = runtime.block_on(batchkit_server::usage(&cfg, args.since, until))?;
    if let Some(t) = &args.tenant {
        rows.retain(|r| &r.tenant == t);
    }
    let stamp = |t: i64| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
        humantime::format_rfc3339_seconds(at).to_string()
    };
    match args.json {
        true => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "tenant": r.tenant,
                        "model": r.model,
                        "batches": r.batches,
                        "requests": {"completed": r.completed, "failed": r.failed},
                        "tokens": {
                            "input": r.usage.input_tokens,
                            "cached": r.usage.cached_tokens,
                            "output": r.usage.output_tokens,
                            "reasoning": r.usage.reasoning_tokens,
                            "total": r.usage.total_tokens,
                        },
                    })
                })
                .collect();
            let report = serde_json::json!({
                "since": stamp(args.since),
                "until": stamp(until),
                "usage": rows,
            });
            println!("{report}");
        }
        false => {
            use crate::report::thousands;
            println!(
                "batches that ended from {} until {}",
                stamp(args.since),
                stamp(until)
            );
            if rows.is_empty() {
                println!("none");
                return Ok(Exit::Ok);
            }
            let header = [
                "tenant",
                "model",
                "batches",
                "succeeded",
                "failed",
                "input",
                "output",
                "total",
            ];
            let table: Vec<[String; 8]> = rows
                .iter()
                .map(|r| {
                    [
                        r.tenant.clone(),
                        r.model.clone().unwrap_or_else(|| "-".to_owned()),
                        thousands(r.batches),
                        thousands(r.completed),
                        thousands(r.failed),
                        thousands(r.usage.input_tokens),
                        thousands(r.usage.output_tokens),
                        thousands(r.usage.total_tokens),
                    ]
                })
                .collect();
            let width = |i: usize| {
                table
                    .iter()
                    .map(|row| row[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            };
            let widths: Vec<usize> = (0..8).map(width).collect();
            let line = |cells: &[String]| {
                let text: Vec<String> = cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        // Names to the left, numbers to the right.
                        if i < 2 {
                            format!("{c:<w$}", w = widths[i])
                        } else {
                            format!("{c:>w$}", w = widths[i])
                        }
                    })
                    .collect();
                println!("{}", text.join("  ").trim_end());
            };
            line(&header.map(str::to_owned));
            for row in &table {
                line(row);
            }
        }
    }
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
