//! The work on one claimed unit: a batch's validation or finalization
//! (whichever its status asks for), or the sending of one chunk's requests.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use batchkit_core::input::Source;
use batchkit_core::{Config, Input, Severity};
use bytes::Bytes;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

use super::chunks::ChunkPlan;
use super::finalize::finalize;
use super::gate::Ask;
use super::output_lines::{RequestLine, error_line, result_row};
use super::routes::Served;
use super::upstream::Reply;
use super::{Engine, RunError};
use crate::ids;
use crate::objects::{BatchError, BatchRecord, Status};
use crate::store::{Chunk, Claim, Lease, ResultRow, Start, Started, StoreError, TokenLimit};

/// Results written to the store in one transaction at most.
const RECORD_BATCH: usize = 512;

/// Do the work of a claimed unit. `sending` is cleared once a chunk's last
/// request is sent.
pub(super) async fn work(
    engine: &Arc<Engine>,
    claim: &Claim,
    token: &CancellationToken,
    sending: &AtomicBool,
) -> Result<(), RunError> {
    match claim.chunk {
        Some(chunk) => dispatch(engine, claim, chunk, token, sending).await,
        None => step(engine, &claim.lease).await,
    }
}

/// The batch unit: take the step the batch's status asks for.
async fn step(engine: &Arc<Engine>, lease: &Lease) -> Result<(), RunError> {
    let Some(batch) = engine.store.batch_by_id(&lease.batch_id).await? else {
        return Ok(());
    };
    let late = ids::now() >= batch.expires_at;
    match batch.status {
        s if s.is_terminal() => {}
        Status::Validating | Status::InProgress if late => {
            finalize(engine, lease, &batch, Status::Expired).await?
        }
        Status::Validating => validate(engine, lease, &batch).await?,
        Status::Finalizing => finalize(engine, lease, &batch, Status::Completed).await?,
        Status::Cancelling => finalize(engine, lease, &batch, Status::Cancelled).await?,
        // In progress: the chunks are the work.
        _ => {}
    }
    Ok(())
}

/// Check the input file with the core validator, as the service would:
/// `in_progress` with its chunks if it passes, `failed` with the errors if
/// not.
async fn validate(
    engine: &Arc<Engine>,
    lease: &Lease,
    batch: &BatchRecord,
) -> Result<(), RunError> {
    // A verdict reached when the batch was created (its input file was
    // not there): applied now, so the batch fails from `validating` as on
    // OpenAI.
    if let Some(errors) = batch.errors.as_ref().filter(|e| !e.is_empty()) {
        let detail = errors[0].message.clone();
        if engine.store.fail(lease, 0, errors, ids::now()).await? {
            tracing::info!(batch = %batch.id, from = "validating", to = "failed", "{detail}");
            engine.wake();
        }
        return Ok(());
    }
    let mut cfg = Config::new(engine.cfg.provider);
    let per_chunk = engine.cfg.chunk_requests;
    cfg.endpoint = Some(batch.endpoint.clone());
    // Streamed from the file store, not mapped: the server's memory stays
    // the same whatever the size of the file, and the store need not be a
    // local disk.
    let input = engine.files.read(&batch.input_file_id, None).await;
    let rt = tokio::runtime::Handle::current();
    let name = std::path::PathBuf::from(&batch.input_file_id);
    let file_id = batch.input_file_id.clone();
    let verdict = tokio::task::spawn_blocking(move || -> Result<_, BatchError> {
        let fail = |code: &str, message: String| BatchError {
            code: code.to_owned(),
            message,
            param: None,
            line: None,
        };
        let input = match input {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BatchError {
                    param: Some("file_id".to_owned()),
                    ..fail(
                        "invalid_request",
                        format!("Cannot find file {file_id}, or this API key does not have access to it."),
                    )
                });
            }
            other => other,
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
        batchkit_core::validate::validate_into(input, &cfg, ChunkPlan::new(per_chunk), &|_| {})
            .map_err(|e| unreadable(&e))
    })
    .await?;
    let unserved = match &verdict {
        Ok((report, _)) => unserved_models(engine, &report.summary).await,
        Err(_) => Vec::new(),
    };
    let now = ids::now();
    let (moved, to, detail) = match verdict {
        Ok((report, plan)) if report.is_valid() && unserved.is_empty() => {
            let requests = report.summary.requests;
            let model = match report.summary.models.as_slice() {
                [(m, _)] => Some(m.clone()),
                _ => None,
            };
            let chunks = plan.finish();
            let detail = format!("{requests} requests in {} chunks", chunks.len());
            let limits = engine
                .tenants
                .now()
                .get(&batch.tenant)
                .map(|t| t.token_limits(model.as_deref()))
                .unwrap_or_default();
            let tokens = if limits.is_empty() {
                0
            } else {
                match enqueued_tokens(engine, &batch.input_file_id).await? {
                    Ok(n) => n,
                    Err(e) => {
                        let detail = e.message.clone();
                        let moved = engine.store.fail(lease, requests, &[e], now).await?;
                        if moved {
                            tracing::info!(batch = %batch.id, from = "validating", to = "failed", "{detail}");
                            engine.wake();
                        }
                        return Ok(());
                    }
                }
            };
            let start = Start {
                total: requests,
                model: model.clone(),
                chunks,
                tokens,
                limits,
            };
            match engine.store.start(lease, &start, now).await? {
                Started::Started => (true, Status::InProgress, detail),
                Started::NotValidating => (false, Status::InProgress, detail),
                Started::OverLimit { limit, held } => {
                    let e = token_limit_exceeded(&batch.tenant, model.as_deref(), &limit);
                    let detail = format!(
                        "{} (it enqueues {tokens}; the tenant's other batches hold {held})",
                        e.message
                    );
                    let moved = engine.store.fail(lease, requests, &[e], now).await?;
                    (moved, Status::Failed, detail)
                }
            }
        }
        Ok((report, _)) => {
            let requests = report.summary.requests;
            let mut errors: Vec<BatchError> = report
                .diagnostics
                .iter()
                .filter(|d| d.severity() == Severity::Error)
                .map(|d| BatchError {
                    code: d.code.as_str().to_owned(),
                    message: d.message.clone(),
                    param: d.param.clone(),
                    line: d.line,
                })
                .chain(unserved)
                .collect();
            errors.sort_by_key(|e| e.line.unwrap_or(u64::MAX));
            let detail = format!("{} errors, first: {}", errors.len(), errors[0].message);
            let moved = engine.store.fail(lease, requests, &errors, now).await?;
            (moved, Status::Failed, detail)
        }
        Err(e) => {
            let detail = e.message.clone();
            let moved = engine.store.fail(lease, 0, &[e], now).await?;
            (moved, Status::Failed, detail)
        }
    };
    if moved {
        tracing::info!(batch = %batch.id, from = "validating", to = to.as_str(), "{detail}");
        engine.wake();
    }
    Ok(())
}

/// OpenAI's failure for a batch over an enqueued-token limit, in its
/// words.
fn token_limit_exceeded(tenant: &str, model: Option<&str>, limit: &TokenLimit) -> BatchError {
    let model = limit.model.as_deref().or(model).unwrap_or("all models");
    BatchError {
        code: "token_limit_exceeded".to_owned(),
        message: format!(
            "Enqueued token limit reached for {model} in organization {tenant}. Limit: {} enqueued tokens. \
             Please try again once some in_progress batches have been completed.",
            batchkit_core::diag::thousands(limit.limit)
        ),
        param: None,
        line: None,
    }
}

/// The tokens a batch's input enqueues (each request's estimated input
/// plus its output cap), read again from the file store in blocks of
/// whole lines, each counted in parallel.
async fn enqueued_tokens(
    engine: &Arc<Engine>,
    file_id: &str,
) -> Result<Result<u64, BatchError>, RunError> {
    const BLOCK: usize = 8 << 20;
    let input = engine.files.read(file_id, None).await;
    let rt = tokio::runtime::Handle::current();
    let counted = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        use std::io::BufRead;
        let mut file = std::io::BufReader::new(SyncIoBridge::new_with_handle(input?, rt));
        let counter = batchkit_core::tokens::TokenCounter { forced: None };
        let (mut total, mut block) = (0u64, Vec::with_capacity(BLOCK + 4096));
        loop {
            let n = file.read_until(b'\n', &mut block)?;
            if n == 0 || block.len() >= BLOCK {
                total = total.saturating_add(counter.enqueued(&block));
                block.clear();
            }
            if n == 0 {
                return Ok(total);
            }
        }
    })
    .await?;
    Ok(counted.map_err(|e| BatchError {
        code: "invalid_file".to_owned(),
        message: format!("The input file cannot be read: {e}."),
        param: None,
        line: None,
    }))
}

/// How long the upstream's model list is trusted; a model missing from a
/// list older than [`MODELS_RECHECK`] is asked about again before the
/// batch fails (it may have been loaded since).
const MODELS_TTL: Duration = Duration::from_secs(60);
const MODELS_RECHECK: Duration = Duration::from_secs(5);

/// OpenAI's `model_not_found` for each model of the batch that no
/// upstream serves (none when they cannot say, or are not asked).
async fn unserved_models(
    engine: &Engine,
    summary: &batchkit_core::validate::Summary,
) -> Vec<BatchError> {
    if !engine.cfg.check_models {
        return Vec::new();
    }
    let mut errors = Vec::new();
    for (model, _) in &summary.models {
        let listed = match engine.upstreams.serves(model, MODELS_TTL).await {
            Served::Yes => continue,
            // It may have been loaded since the list was read.
            Served::No(_) => match engine.upstreams.serves(model, MODELS_RECHECK).await {
                Served::Yes => continue,
                Served::No(listed) => listed,
            },
        };
        let served = match listed.len() {
            0 => "no models".to_owned(),
            n => {
                let names: Vec<String> = listed.iter().take(10).map(|m| format!("'{m}'")).collect();
                let more = if n > 10 { ", ..." } else { "" };
                format!("{}{more}", names.join(", "))
            }
        };
        errors.push(BatchError {
            line: summary
                .batch_model
                .as_ref()
                .filter(|(m, _)| m == model)
                .map(|(_, line)| *line),
            code: "model_not_found".to_owned(),
            message: format!(
                "The provided model '{model}' is not supported by the Batch API. The upstream serves: {served}."
            ),
            param: Some("body.model".to_owned()),
        });
    }
    errors
}

/// The row of a request that ends here, as an error line, without being
/// sent.
fn failed_row(line: u64, body: String) -> ResultRow {
    ResultRow {
        line,
        ok: false,
        body,
        usage: Default::default(),
    }
}

/// A request body's model, for routing (the rest of the body is skipped).
#[derive(serde::Deserialize)]
struct ModelOf<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
}

/// Why a chunk's dispatch stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DispatchEnd {
    /// Every request was sent and answered.
    Done,
    /// Cancel was asked, the lease was lost, or the server is stopping.
    Told,
    /// The window ended.
    Expired,
}

/// Send every request of the chunk without a recorded result to the
/// upstream, and record the results in batches, until all are done, cancel
/// is asked, the lease is lost, the window ends or the server stops. A
/// stopped chunk is given up, to be claimed again (or, for a batch that
/// ended, finalized with its results so far).
async fn dispatch(
    engine: &Arc<Engine>,
    claim: &Claim,
    chunk: Chunk,
    token: &CancellationToken,
    sending: &AtomicBool,
) -> Result<(), RunError> {
    let (batch, lease) = (&claim.batch, &claim.lease);
    let recorded = engine
        .store
        .recorded_lines(&batch.id, chunk.first_line..chunk.end_line)
        .await?;
    let file = engine
        .files
        .read(&batch.input_file_id, Some(chunk.start..chunk.end))
        .await?;
    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, file);
    let (tx, rx) = mpsc::channel::<ResultRow>(RECORD_BATCH * 8);
    let recorder = tokio::spawn(record(engine.clone(), lease.clone(), token.clone(), rx));
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs((batch.expires_at - ids::now()).max(0) as u64);
    let mut tasks = JoinSet::new();
    let mut buf = Vec::new();
    let mut line_no = chunk.first_line - 1;
    // The batch's tenant shares the upstreams with the others by weight
    // (read per chunk: a reload of the tenants applies from the next one).
    let tenant: Arc<str> = batch.tenant.as_str().into();
    // Usage is counted by the batch's model; a request that names another
    // (a mixed batch) has its counters looked up on its own.
    let batch_model = batch.model.clone().unwrap_or_else(|| "unknown".to_owned());
    let usage = engine.metrics.tenant(&batch.tenant, &batch_model);
    let weight = engine
        .tenants
        .now()
        .get(&batch.tenant)
        .map_or(1, |t| t.weight);
    // One ask ahead of the request waiting for its permit.
    let mut ahead: Option<Ask> = None;
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
        while tasks.try_join_next().is_some() {}
        let tx = tx.clone();
        match serde_json::from_slice::<RequestLine<'_>>(line) {
            Ok(req) => {
                let model = engine
                    .upstreams
                    .by_model()
                    .then(|| serde_json::from_str::<ModelOf<'_>>(req.body.get()).ok())
                    .flatten()
                    .and_then(|m| m.model);
                let Some(upstream) = engine.upstreams.pick(model.as_deref()).cloned() else {
                    let body = error_line(
                        Some(&req.custom_id),
                        "model_not_found",
                        &format!(
                            "No upstream serves the model '{}'.",
                            model.as_deref().unwrap_or_default()
                        ),
                    );
                    let _ = tx.send(failed_row(line_no, body)).await;
                    continue;
                };
                // The ask taken ahead, if it is for this upstream; else a
                // new one (the one ahead, for another, is given up).
                let ask = match ahead.take() {
                    Some(a) if Arc::ptr_eq(a.gate(), upstream.gate()) => a,
                    _ => upstream.gate().ask(&tenant, weight),
                };
                let permit = tokio::select! {
                    biased;
                    _ = token.cancelled() => break DispatchEnd::Told,
                    _ = tokio::time::sleep_until(deadline) => break DispatchEnd::Expired,
                    p = ask.granted() => p,
                };
                // Keep a place in the queue for the next request while
                // this one goes out (see `Gate::ask`).
                ahead = Some(upstream.gate().ask(&tenant, weight));
                let url = req.url.as_deref().unwrap_or(&batch.endpoint).to_owned();
                let custom_id = req.custom_id.into_owned();
                let body = Bytes::copy_from_slice(req.body.get().as_bytes());
                let metrics = engine.metrics.clone();
                let model = model.map(std::borrow::Cow::into_owned);
                let engine = engine.clone();
                let tenant = tenant.clone();
                let usage = match model.as_deref() {
                    Some(m) if m != batch_model => engine.metrics.tenant(&tenant, m),
                    _ => usage.clone(),
                };
                tasks.spawn(async move {
                    let (mut upstream, mut permit) = (upstream, permit);
                    let routes = &engine.upstreams;
                    let reply = loop {
                        let elsewhere = || routes.other_up(model.as_deref(), &upstream);
                        match upstream.send(&url, body.clone(), deadline, elsewhere).await {
                            // Its replica is down and another is up: go there.
                            Reply::Moved => match routes.pick(model.as_deref()) {
                                Some(next) => {
                                    drop(permit);
                                    upstream = next.clone();
                                    permit = upstream.gate().acquire(&tenant, weight).await;
                                }
                                None => {
                                    break Reply::NoResponse {
                                        code: "upstream_unavailable",
                                        message: "No upstream serves this request's model."
                                            .to_owned(),
                                    };
                                }
                            },
                            reply => break reply,
                        }
                    };
                    let row = result_row(line_no, &custom_id, reply);
                    if !row.ok {
                        metrics.failed.inc();
                    }
                    usage.count(row.ok, row.usage.input_tokens, row.usage.output_tokens);
                    let _ = tx.send(row).await;
                    drop(permit);
                });
            }
            // Validation passed, so only a file changed in the store gets here.
            Err(e) => {
                let body = error_line(
                    None,
                    "invalid_json_line",
                    &format!("This line is not parseable as a request: {e}."),
                );
                let _ = tx.send(failed_row(line_no, body)).await;
            }
        }
    };
    // Every request is sent: the place kept for another goes to other
    // batches, and another chunk of this one may be claimed while the last
    // answers come.
    drop(ahead);
    sending.store(false, Ordering::Release);
    engine.wake();
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
        // (and sent again by the chunk's next holder, or written as
        // cancelled/expired).
        let grace = engine.cfg.cancel_grace;
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    recorder.await??;
    if stop == DispatchEnd::Done && engine.store.chunk_done(lease, ids::now()).await? {
        tracing::info!(batch = %batch.id, from = "in_progress", to = "finalizing", "all requests answered");
    }
    Ok(())
}

/// Write results to the store as they come, many per transaction. A write
/// that fails is retried until the server stops: a result is never dropped
/// while it runs (and one not recorded is sent again by the chunk's next
/// holder). A lost lease stops the chunk.
async fn record(
    engine: Arc<Engine>,
    lease: Lease,
    token: CancellationToken,
    mut rx: mpsc::Receiver<ResultRow>,
) -> Result<(), RunError> {
    let mut rows = Vec::with_capacity(RECORD_BATCH);
    let what = format!("results of {lease}");
    while rx.recv_many(&mut rows, RECORD_BATCH).await > 0 {
        loop {
            match engine.store.record(&lease, &rows).await {
                Ok(()) => {
                    engine.health.succeeded(&what);
                    rows.clear();
                    break;
                }
                Err(e @ StoreError::Fenced(_)) => {
                    token.cancel();
                    return Err(e.into());
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
