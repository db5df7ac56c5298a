//! Accepting connections: each served by hyper with a bound on the time a
//! client may take to send its headers, or to stay idle between requests,
//! so that slow or idle connections cannot hold the server's descriptors
//! (`axum::serve` sets no such bound: 1,100 connections sending a byte a
//! second once took every descriptor and `/health` stopped answering).
//!
//! When descriptors do run out, accepting pauses briefly and resumes (the
//! waiting connections stay in the kernel's backlog); connections already
//! open are served on, and the slow ones are closed at their deadline,
//! which frees descriptors for the waiting ones.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long connections still open at shutdown may take to finish.
const DRAIN: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting,
/// let each connection finish the request it is in (closing it after), and
/// return once they are done or after [`DRAIN`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal.cancel();
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut short_warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                pause_after(&e, &mut short_warned).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let (stop, http) = (stop.clone(), http.clone());
        connections.spawn(async move {
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended: {e}");
                    }
                    return;
                }
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connections still open after {DRAIN:?}; closing them",
            connections.len()
        );
    }
}

/// After a failed accept: go on at once when only that connection failed;
/// when descriptors ran out, say so (at most every 10 s) and wait a moment
/// for some to be freed; for anything else wait a second.
async fn pause_after(e: &std::io::Error, short_warned: &mut Option<Instant>) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    let out_of_descriptors = matches!(e.raw_os_error(), Some(23 | 24)); // ENFILE, EMFILE
    if out_of_descriptors {
        if short_warned.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            tracing::warn!(
                "out of file descriptors ({e}): new connections wait until slow or idle ones are closed; raise the limit (ulimit -n) if this lasts"
            );
            *short_warned = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    } else {
        tracing::warn!("cannot accept a connection: {e}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Raise the soft limit on open files to the hard limit, as servers do:
/// the default soft limit (often 1,024) is far below what the system
/// allows, and every connection and stored file being read takes one.
pub fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!("cannot raise the open files limit: {e}");
            }
        }
    }
}
