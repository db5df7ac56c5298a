//! One batch's runner: reads where the batch stands and takes the next
//! step, until it reaches a terminal status or the server stops.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use batchkit_core::input::Source;
use batchkit_core::{Config, Input, Severity};
use bytes::Bytes;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::finalize::finalize;
use super::output_lines::{RequestLine, error_line, result_row};
use crate::ids;
use crate::objects::{BatchError, BatchRecord, Status};
use crate::store::{ResultRow, StoreError};

/// Results written to the store in one transaction at most.
const RECORD_BATCH: usize = 512;

/// Why a step could not be taken (it is tried again).
#[derive(Debug, thiserror::Error)]
pub(super) enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("file store: {0}")]
    Io(#[from] std::io::Error),
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

enum Next {
    Again,
    Done,
}

/// Take batch `id` through its lifecycle.
pub(super) async fn run(engine: &Arc<Engine>, id: &str, token: &CancellationToken) {
    let what = format!("records of {id}");
    loop {
        if engine.stopping() {
            return;
        }
        match step(engine, id, token).await {
            Ok(Next::Again) => engine.health.succeeded(&what),
            Ok(Next::Done) => return engine.health.succeeded(&what),
            Err(e) => {
                engine.metrics.store_errors.inc();
                engine.health.failed(&what, &e);
                tracing::debug!(batch = %id, "{e}; trying again in 5 s");
                tokio::select! {
                    _ = engine.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}

async fn step(engine: &Arc<Engine>, id: &str, token: &CancellationToken) -> Result<Next, RunError> {
    let owned = id.to_owned();
    let Some(batch) = engine.store.batch_by_id(&owned).await? else {
        return Ok(Next::Done);
    };
    let late = ids::now() >= batch.expires_at;
    match batch.status {
        s if s.is_terminal() => return Ok(Next::Done),
        Status::Validating | Status::InProgress if late => {
            finalize(engine, &batch, Status::Expired).await?
        }
        Status::Validating => validate(engine, &batch).await?,
        Status::InProgress => dispatch(engine, &batch, token).await?,
        Status::Finalizing => finalize(engine, &batch, Status::Completed).await?,
        Status::Cancelling => finalize(engine, &batch, Status::Cancelled).await?,
        _ => return Ok(Next::Done),
    }
    Ok(Next::Again)
}

/// Check the input file with the core validator, as the service would:
/// `in_progress` if it passes, `failed` with the errors if not.
async fn validate(engine: &Arc<Engine>, batch: &BatchRecord) -> Result<(), RunError> {
    let mut cfg = Config::new(engine.cfg.provider);
    cfg.endpoint = Some(batch.endpoint.clone());
    // Streamed from the file store, not mapped: the server's memory stays
    // the same whatever the size of the file, and the store need not be a
    // local disk.
    let input = engine.files.read(&batch.input_file_id, None).await;
    let rt = tokio::runtime::Handle::current();
    let name = std::path::PathBuf::from(&batch.input_file_id);
    let verdict = tokio::task::spawn_blocking(move || -> Result<_, BatchError> {
        let fail = |code: &str, message: String| BatchError {
            code: code.to_owned(),
            message,
            param: None,
            line: None,
        };
        let unreadable = |e: &dyn std::fmt::Display| {
            fail(
                "invalid_file",
                format!("The input file cannot be read: {e}."),
            )
        };
        let mut file = SyncIoBridge::new_with_handle(input.map_err(|e| unreadable(&e))?, rt);
        let mut magic = Vec::with_capacity(2);
        (&mut file)
            .take(2)
            .read_to_end(&mut magic)
            .map_err(|e| unreadable(&e))?;
        if magic == [0x1f, 0x8b] {
            return Err(fail(
                "invalid_file",
                "The input file is gzip-compressed; upload the uncompressed .jsonl file.".into(),
            ));
        }
        let input = Input {
            name,
            source: Source::Stream(Box::new(std::io::Cursor::new(magic).chain(file))),
            size_hint: None,
        };
        batchkit_core::validate(input, &cfg, &|_| {}).map_err(|e| unreadable(&e))
    })
    .await?;
    let id = batch.id.clone();
    let now = ids::now();
    let (moved, to, detail) = match verdict {
        Ok(report) if report.is_valid() => {
            let requests = report.summary.requests;
            let model = match report.summary.models.as_slice() {
                [(m, _)] => Some(m.clone()),
                _ => None,
            };
            let moved = engine
                .store
                .begin(&id, requests, model.as_deref(), now)
                .await?;
            (moved, Status::InProgress, format!("{requests} requests"))
        }
        Ok(report) => {
            let requests = report.summary.requests;
            let errors: Vec<BatchError> = report
                .diagnostics
                .iter()
                .filter(|d| d.severity() == Severity::Error)
                .map(|d| BatchError {
                    code: d.code.as_str().to_owned(),
                    message: d.message.clone(),
                    param: d.param.clone(),
                    line: d.line,
                })
                .collect();
            let detail = format!("{} errors, first: {}", report.errors(), errors[0].message);
            let moved = engine.store.fail(&id, requests, &errors, now).await?;
            (moved, Status::Failed, detail)
        }
        Err(e) => {
            let detail = e.message.clone();
            let moved = engine.store.fail(&id, 0, &[e], now).await?;
            (moved, Status::Failed, detail)
        }
    };
    if moved {
        tracing::info!(batch = %batch.id, from = "validating", to = to.as_str(), "{detail}");
    }
    Ok(())
}

/// Why dispatch stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DispatchEnd {
    /// Every request was sent.
    Done,
    /// Cancel was asked, or the server is stopping.
    Told,
    /// The window ended.
    Expired,
}

/// Send every request without a recorded result to the upstream, and
/// record the results in batches, until all are done, cancel is asked, the
/// window ends or the server stops.
async fn dispatch(
    engine: &Arc<Engine>,
    batch: &BatchRecord,
    token: &CancellationToken,
) -> Result<(), RunError> {
    let id = batch.id.clone();
    let recorded = engine.store.recorded_lines(&id).await?;
    let file = engine.files.read(&batch.input_file_id, None).await?;
    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, file);
    let (tx, rx) = mpsc::channel::<ResultRow>(RECORD_BATCH * 8);
    let recorder = tokio::spawn(record(engine.clone(), batch.id.clone(), rx));
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs((batch.expires_at - ids::now()).max(0) as u64);
    let mut tasks = JoinSet::new();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let stop = loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).await? == 0 {
            break DispatchEnd::Done;
        }
        line_no += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) || recorded.contains(line_no) {
            continue;
        }
        let permit = tokio::select! {
            biased;
            _ = token.cancelled() => break DispatchEnd::Told,
            _ = tokio::time::sleep_until(deadline) => break DispatchEnd::Expired,
            p = engine.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break DispatchEnd::Told,
            },
        };
        while tasks.try_join_next().is_some() {}
        let tx = tx.clone();
        match serde_json::from_slice::<RequestLine<'_>>(line) {
            Ok(req) => {
                let url = req.url.as_deref().unwrap_or(&batch.endpoint).to_owned();
                let custom_id = req.custom_id.into_owned();
                let body = Bytes::copy_from_slice(req.body.get().as_bytes());
                let upstream = engine.upstream.clone();
                let metrics = engine.metrics.clone();
                tasks.spawn(async move {
                    let row = result_row(line_no, &custom_id, upstream.send(&url, body).await);
                    if !row.ok {
                        metrics.failed.inc();
                    }
                    let _ = tx.send(row).await;
                    drop(permit);
                });
            }
            // Validation passed, so only a file changed on disk gets here.
            Err(e) => {
                let body = error_line(
                    None,
                    "invalid_json_line",
                    &format!("This line is not parseable as a request: {e}."),
                );
                let row = ResultRow {
                    line: line_no,
                    ok: false,
                    body,
                    usage: Default::default(),
                };
                let _ = tx.send(row).await;
            }
        }
    };
    drop(tx);
    let stop = match stop {
        DispatchEnd::Done => {
            // Wait for the last requests, still heeding cancel and expiry.
            let waited = tokio::select! {
                _ = async { while tasks.join_next().await.is_some() {} } => DispatchEnd::Done,
                _ = token.cancelled() => DispatchEnd::Told,
                _ = tokio::time::sleep_until(deadline) => DispatchEnd::Expired,
            };
            waited
        }
        other => other,
    };
    if stop != DispatchEnd::Done {
        // Requests in flight get a moment to finish; the rest are abandoned
        // (and sent again after a restart, or written as cancelled/expired).
        let grace = engine.cfg.cancel_grace;
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    recorder.await??;
    match stop {
        DispatchEnd::Done => {
            let (id, now) = (batch.id.clone(), ids::now());
            if engine.store.finalizing(&id, now).await? {
                tracing::info!(batch = %batch.id, from = "in_progress", to = "finalizing", "all requests answered");
            }
        }
        DispatchEnd::Expired => finalize(engine, batch, Status::Expired).await?,
        // Cancelled (the status says so) or stopping: the next step reads which.
        DispatchEnd::Told => {}
    }
    Ok(())
}

/// Write results to the store as they come, many per transaction. A write
/// that fails is retried until the server stops: a result is never dropped
/// while it runs (and one not recorded is sent again after a restart).
async fn record(
    engine: Arc<Engine>,
    id: String,
    mut rx: mpsc::Receiver<ResultRow>,
) -> Result<(), RunError> {
    let mut rows = Vec::with_capacity(RECORD_BATCH);
    let what = format!("results of {id}");
    while rx.recv_many(&mut rows, RECORD_BATCH).await > 0 {
        let slice = Arc::new(std::mem::take(&mut rows));
        loop {
            let (owned, slice) = (id.clone(), slice.clone());
            match engine.store.record(&owned, &slice).await {
                Ok(()) => {
                    engine.health.succeeded(&what);
                    break;
                }
                Err(e) if engine.stopping() => return Err(e.into()),
                Err(e) => {
                    engine.metrics.store_errors.inc();
                    engine.health.failed(&what, &e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    Ok(())
}
