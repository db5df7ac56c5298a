//! The rounds of a run against the service: upload, create, wait, download,
//! merge, and the next round from what can succeed when sent again.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use batchkit_client::{Client, ClientError, CreateBatch};
use batchkit_core::Input;
use batchkit_core::atomic::Output;
use batchkit_core::merge::MergedLine;
use batchkit_core::split::SplitConfig;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Options;
use super::state::State;
use super::{Paths, ask_cancel, merge_into, round, split_into};
use crate::cmd::service::failed;
use crate::exit::Exit;
use crate::report::thousands;

/// Files and batches of this many most recent are searched for a chunk's
/// upload or batch that a killed run made but did not record.
const ADOPT_WINDOW: u32 = 100;
/// How long waiting goes on while the service cannot be reached.
const PATIENCE: Duration = Duration::from_secs(600);

/// Why a round stopped.
enum RoundFailure {
    /// A service error (already the right exit) or a local failure.
    Client(String, ClientError),
    Local(anyhow::Error),
}

impl From<anyhow::Error> for RoundFailure {
    fn from(e: anyhow::Error) -> RoundFailure {
        RoundFailure::Local(e)
    }
}

/// Drive every round to its end, then write the merged output.
pub(super) fn run(
    args: &Options,
    paths: &Paths,
    state: &mut State,
    cfg: &SplitConfig,
    name: &Path,
) -> Result<Exit> {
    let mut conn = args.client.clone().map_err(anyhow::Error::msg)?;
    conn.timeout = conn.timeout.max(Duration::from_secs(1));
    let client = Client::new(conn)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let interrupted = runtime.block_on(async {
        tokio::select! {
            r = rounds(args, paths, state, cfg, name, &client) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match interrupted {
        Some(Ok(exit)) => Ok(exit),
        Some(Err(RoundFailure::Local(e))) => Err(e),
        Some(Err(RoundFailure::Client(what, e))) => failed(&what, e),
        None => {
            // The state was saved after every step; the batches go on.
            let running: Vec<String> = state
                .rounds
                .iter()
                .flat_map(|r| &r.chunks)
                .filter(|c| !c.status.as_deref().is_some_and(terminal))
                .filter_map(|c| c.batch_id.clone())
                .collect();
            if ask_cancel(running.len(), args.yes) {
                for id in &running {
                    match runtime.block_on(client.cancel_batch(id)) {
                        Ok(_) => eprintln!("cancelled {id}"),
                        Err(e) => eprintln!("cannot cancel {id}: {e}"),
                    }
                }
            } else if !running.is_empty() {
                eprintln!(
                    "interrupted: {} batches keep running; run the same command again to carry on",
                    running.len()
                );
            }
            Ok(Exit::Interrupted)
        }
    }
}

fn terminal(status: &str) -> bool {
    batchkit_client::BatchStatus::parse(status)
        .is_some_and(batchkit_client::BatchStatus::is_terminal)
}

async fn rounds(
    args: &Options,
    paths: &Paths,
    state: &mut State,
    cfg: &SplitConfig,
    name: &Path,
    client: &Client,
) -> Result<Exit, RoundFailure> {
    loop {
        let r = state.rounds.len() - 1;
        if !state.rounds[r].done {
            drive(args, paths, state, r, client).await?;
            state.rounds[r].done = true;
            state.save(&paths.state)?;
        }
        let results: Vec<PathBuf> = state
            .rounds
            .iter()
            .flat_map(|r| &r.chunks)
            .flat_map(|c| &c.results)
            .map(|p| paths.work.join(p))
            .collect();
        let number = state.rounds[r].number;
        if number < args.max_rounds {
            let next = number + 1;
            let retry = paths.work.join(format!("round-{next}.jsonl"));
            // A batch that failed for a reason of the file (a line the
            // service refuses, a model it does not have) fails the same
            // way when sent again.
            let hopeless = hopeless_codes(state);
            let picked = merge_into(
                name,
                results.clone(),
                &retry,
                &|rec, buf| {
                    let again = rec.worth_retrying()
                        && !rec.error_code().is_some_and(|c| hopeless.contains(c));
                    if again {
                        buf.extend_from_slice(rec.request_line);
                        buf.push(b'\n');
                    }
                    again
                },
                None,
            )?;
            let tally = match picked {
                Ok((t, _)) => t,
                Err(exit) => return Ok(exit),
            };
            if tally.written > 0 {
                eprintln!(
                    "round {next}: sending {} requests again (expired, cancelled, missing or failed with a retryable status)",
                    thousands(tally.written)
                );
                let mapped = Input::open(&retry)
                    .and_then(Input::into_mapped)
                    .map_err(anyhow::Error::from)?;
                let dir_name = format!("round-{next}");
                let stem = format!("{}.r{next}", state.run_id);
                let manifest = match split_into(
                    mapped.bytes(),
                    &retry,
                    cfg,
                    &paths.work.join(&dir_name),
                    &stem,
                )? {
                    Ok(m) => m,
                    Err(exit) => return Ok(exit),
                };
                state.rounds.push(round(next, &manifest, &dir_name));
                state.save(&paths.state)?;
                continue;
            }
        }
        // The final merge, in merge's line format.
        let line = MergedLine::default();
        let merged = merge_into(
            name,
            results,
            &args.output,
            &|rec, buf| {
                line.render(rec, buf);
                true
            },
            Some("merged into"),
        )?;
        let exit = match merged {
            Ok((_, true)) => Exit::Ok,
            Ok((_, false)) => Exit::Invalid,
            Err(exit) => return Ok(exit),
        };
        if args.clean {
            clean(paths)?;
        }
        // The reason, last: the first batch that failed, and why.
        let failed: Vec<&super::state::Chunk> = state
            .rounds
            .iter()
            .flat_map(|r| &r.chunks)
            .filter(|c| !c.errors.is_empty())
            .collect();
        if let Some(first) = failed.first() {
            let e = &first.errors[0];
            eprintln!(
                "error: {} of the run's batches failed; {} {}: {}",
                failed.len(),
                first.batch_id.as_deref().unwrap_or("?"),
                e.code.as_deref().unwrap_or("failed"),
                e.message.as_deref().unwrap_or("no reason given")
            );
        }
        return Ok(exit);
    }
}

/// One round: upload, create, wait, download; the state saved after each
/// step of each chunk.
async fn drive(
    args: &Options,
    paths: &Paths,
    state: &mut State,
    r: usize,
    client: &Client,
) -> Result<(), RoundFailure> {
    let number = state.rounds[r].number;
    let run_id = state.run_id.clone();
    let api = |what: String| move |e: ClientError| RoundFailure::Client(what.clone(), e);

    for i in 0..state.rounds[r].chunks.len() {
        if state.rounds[r].chunks[i].file_id.is_some() {
            continue;
        }
        let (cname, path, bytes) = {
            let c = &state.rounds[r].chunks[i];
            (c.name.clone(), paths.work.join(&c.path), c.bytes)
        };
        // An upload a killed run made but did not record is used, not repeated.
        let recent = client
            .files(Some("batch"), Some(ADOPT_WINDOW), None)
            .await
            .map_err(api("files".into()))?;
        let id = match recent
            .data
            .iter()
            .find(|f| f.filename == cname && f.bytes == bytes)
        {
            Some(f) => f.id.clone(),
            None => {
                let f = client
                    .upload(&path, "batch", None)
                    .await
                    .map_err(api(format!("upload of {}", path.display())))?;
                eprintln!("uploaded {cname} as {}", f.id);
                f.id
            }
        };
        state.rounds[r].chunks[i].file_id = Some(id);
        state.save(&paths.state)?;
    }

    for i in 0..state.rounds[r].chunks.len() {
        if state.rounds[r].chunks[i].batch_id.is_some() {
            continue;
        }
        let c = &state.rounds[r].chunks[i];
        let cname = c.name.clone();
        let recent = client
            .batches(Some(ADOPT_WINDOW), None)
            .await
            .map_err(api("batches".into()))?;
        let found = recent.data.iter().find(|b| {
            b.metadata.as_ref().is_some_and(|m| {
                m.get("batchkit_run") == Some(&run_id) && m.get("batchkit_chunk") == Some(&cname)
            })
        });
        let id = match found {
            Some(b) => b.id.clone(),
            None => create(args, state, r, i, client).await?,
        };
        state.rounds[r].chunks[i].batch_id = Some(id);
        state.save(&paths.state)?;
    }

    wait(args, paths, state, r, client).await?;

    let results_dir = paths.work.join(format!("round-{number}/results"));
    for i in 0..state.rounds[r].chunks.len() {
        if state.rounds[r].chunks[i].downloaded {
            continue;
        }
        let batch_id = state.rounds[r].chunks[i]
            .batch_id
            .clone()
            .unwrap_or_default();
        let b = client
            .batch(&batch_id)
            .await
            .map_err(api(format!("batch {batch_id}")))?;
        std::fs::create_dir_all(&results_dir).map_err(anyhow::Error::from)?;
        let mut saved = Vec::new();
        if b.status == "failed" {
            let errors = b.error_list().to_vec();
            let rel = format!("round-{number}/results/{batch_id}_failed.jsonl");
            let chunk = paths.work.join(&state.rounds[r].chunks[i].path);
            failure_lines(&chunk, &paths.work.join(&rel), &batch_id, &errors)?;
            saved.push(rel);
            state.rounds[r].chunks[i].errors = errors;
        }
        for (kind, file_id) in [("output", &b.output_file_id), ("error", &b.error_file_id)] {
            let Some(file_id) = file_id else { continue };
            let rel = format!("round-{number}/results/{batch_id}_{kind}.jsonl");
            let mut out =
                Output::create(&paths.work.join(&rel), false).map_err(anyhow::Error::from)?;
            client
                .content(file_id, &mut out, None)
                .await
                .map_err(api(format!("file {file_id} of batch {batch_id}")))?;
            out.commit().map_err(anyhow::Error::from)?;
            saved.push(rel);
        }
        let c = &mut state.rounds[r].chunks[i];
        c.results = saved;
        c.downloaded = true;
        state.save(&paths.state)?;
    }
    Ok(())
}

/// Create the batch of chunk `i` of round `r`, named by the run's
/// metadata so that a killed run finds it again; its id.
async fn create(
    args: &Options,
    state: &State,
    r: usize,
    i: usize,
    client: &Client,
) -> Result<String, RoundFailure> {
    let (round, c) = (&state.rounds[r], &state.rounds[r].chunks[i]);
    let mut metadata: BTreeMap<String, String> = args.metadata.iter().cloned().collect();
    metadata.insert("batchkit_run".into(), state.run_id.clone());
    metadata.insert("batchkit_chunk".into(), c.name.clone());
    let req = CreateBatch {
        input_file_id: c.file_id.clone().unwrap_or_default(),
        endpoint: c.endpoint.clone(),
        completion_window: args.completion_window.clone(),
        metadata,
        output_expires_after: None,
    };
    req.check()
        .map_err(|e| RoundFailure::Local(anyhow::anyhow!("{e}")))?;
    let b = client
        .create_batch(&req)
        .await
        .map_err(|e| RoundFailure::Client(format!("batch on {}", req.input_file_id), e))?;
    eprintln!("round {}: created {} for {}", round.number, b.id, c.name);
    Ok(b.id)
}

/// Whether a batch failed only because the service's enqueued-token limit
/// was reached: the same batch passes once other batches finish.
fn over_token_limit(errors: &[batchkit_client::BatchErrorItem]) -> bool {
    !errors.is_empty()
        && errors
            .iter()
            .all(|e| e.code.as_deref() == Some("token_limit_exceeded"))
}

/// Whether the chunk at `path` enqueues more tokens on its own than the
/// limit a `token_limit_exceeded` error names ("Limit: 2,000,000 enqueued
/// tokens"): then no wait helps, and it fails as any batch does, saying
/// how to split it.
fn too_large_alone(path: &Path, errors: &[batchkit_client::BatchErrorItem]) -> bool {
    let Some(limit) = errors
        .iter()
        .filter_map(|e| e.message.as_deref())
        .find_map(limit_in)
    else {
        return false;
    };
    let Ok(input) = Input::open(path).and_then(Input::into_mapped) else {
        return false;
    };
    let tokens = batchkit_core::tokens::TokenCounter { forced: None }.enqueued(input.bytes());
    if tokens <= limit {
        return false;
    }
    eprintln!(
        "{} alone enqueues about {} tokens (inputs and max_tokens), more than the limit of {}: \
         run it with a smaller --max-chunk-tokens or --max-requests",
        path.display(),
        thousands(tokens),
        thousands(limit)
    );
    true
}

/// The limit in OpenAI's `token_limit_exceeded` message.
fn limit_in(message: &str) -> Option<u64> {
    let rest = &message[message.find("Limit: ")? + "Limit: ".len()..];
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// How long a chunk over the token limit waits before its batch is
/// created again, after `tries` refusals, when none of the run's own
/// batches ends first (each of those frees tokens, and the waiting chunks
/// are tried at once): from the poll interval (at least a second),
/// doubling, up to ten minutes.
fn token_wait(every: Duration, tries: u32) -> Duration {
    let base = every.max(Duration::from_secs(1));
    base.saturating_mul(1 << tries.min(10))
        .min(Duration::from_secs(600))
}

/// Poll the round's batches until all have ended, with one overall bar on
/// a terminal and a line per change otherwise.
async fn wait(
    args: &Options,
    paths: &Paths,
    state: &mut State,
    r: usize,
    client: &Client,
) -> Result<(), RoundFailure> {
    let number = state.rounds[r].number;
    let total: u64 = state.rounds[r].chunks.iter().map(|c| c.requests).sum();
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("round {prefix}: {msg} [{bar:30}] {pos}/{len} requests")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_prefix(number.to_string());
        b
    } else {
        ProgressBar::hidden()
    };
    let every = args.every;
    let mut unreachable_since = Instant::now();
    let mut warned = false;
    let n = state.rounds[r].chunks.len();
    // Chunks whose batch the service refused for its enqueued-token limit:
    // when each is created again, and how often it was refused.
    let mut again_at: Vec<Option<Instant>> = vec![None; n];
    let mut refused = vec![0u32; n];
    loop {
        let mut unanswered = false;
        let mut done = 0u64;
        let mut ended = 0usize;
        let mut freed = false;
        for i in 0..n {
            if let Some(at) = again_at[i] {
                if Instant::now() < at {
                    continue;
                }
                let id = create(args, state, r, i, client).await?;
                state.rounds[r].chunks[i].batch_id = Some(id);
                state.save(&paths.state)?;
                again_at[i] = None;
            }
            let id = state.rounds[r].chunks[i]
                .batch_id
                .clone()
                .unwrap_or_default();
            if state.rounds[r].chunks[i]
                .status
                .as_deref()
                .is_some_and(terminal)
            {
                ended += 1;
                done += state.rounds[r].chunks[i].requests;
                continue;
            }
            let b = match client.batch(&id).await {
                Ok(b) => b,
                // The service is away for a while (a restart, a network
                // fault): the batches go on without us, so keep polling.
                Err(ClientError::Transport { reason, .. })
                    if unreachable_since.elapsed() < PATIENCE =>
                {
                    if !warned {
                        eprintln!(
                            "round {number}: cannot reach the service ({reason}); still trying"
                        );
                        warned = true;
                    }
                    unanswered = true;
                    break;
                }
                Err(e) => return Err(RoundFailure::Client(format!("batch {id}"), e)),
            };
            let chunk_path = paths.work.join(&state.rounds[r].chunks[i].path);
            if b.status == "failed"
                && over_token_limit(b.error_list())
                && !too_large_alone(&chunk_path, b.error_list())
            {
                // Not a failure of the lines: the service holds too many
                // of this account's tokens. Created again once the run's
                // own batches free some, or after a wait.
                let wait = token_wait(every, refused[i]);
                refused[i] += 1;
                let why = b.error_list()[0].message.as_deref().unwrap_or_default();
                bar.suspend(|| {
                    eprintln!(
                        "round {number}: {id} ({}) waits for the service's enqueued-token limit (created again when a batch of the run ends, or in {}s): {why}",
                        state.rounds[r].chunks[i].name,
                        wait.as_secs()
                    )
                });
                again_at[i] = Some(Instant::now() + wait);
                let c = &mut state.rounds[r].chunks[i];
                (c.batch_id, c.status) = (None, None);
                state.save(&paths.state)?;
                continue;
            }
            let c = b.counts();
            done += c.completed + c.failed;
            if state.rounds[r].chunks[i].status.as_deref() != Some(b.status.as_str()) {
                if bar.is_hidden() {
                    eprintln!(
                        "round {number}: {id} {} ({})",
                        b.status,
                        crate::cmd::service::counts_text(&c)
                    );
                }
                if b.status == "failed" {
                    let errors = b.error_list();
                    bar.suspend(|| {
                        print_failure(number, &id, &state.rounds[r].chunks[i].name, errors)
                    });
                }
                freed |= b.is_terminal();
                state.rounds[r].chunks[i].status = Some(b.status.clone());
                state.save(&paths.state)?;
            }
            if b.is_terminal() {
                ended += 1;
            }
        }
        if freed {
            // A batch of the run's ended: its tokens are free.
            for at in again_at.iter_mut().flatten() {
                *at = Instant::now();
            }
        }
        if unanswered {
            tokio::time::sleep(every.max(Duration::from_secs(1))).await;
            continue;
        }
        unreachable_since = Instant::now();
        warned = false;
        bar.set_position(done.min(total));
        bar.set_message(format!("{ended}/{n} batches ended"));
        if ended == n {
            bar.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

/// Delete the run's work folder and state file: the merged output holds
/// every outcome, and nothing is left to resume.
fn clean(paths: &Paths) -> Result<()> {
    match std::fs::remove_dir_all(&paths.work) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", paths.work.display()));
        }
        _ => {}
    }
    match std::fs::remove_file(&paths.state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", paths.state.display()));
        }
        _ => {}
    }
    eprintln!(
        "removed {} and {} (--clean)",
        paths.work.display(),
        paths.state.display()
    );
    Ok(())
}

/// Error codes of failed batches that a resubmission of the same lines
/// cannot fix: all but the service's own limits and faults.
fn hopeless_codes(state: &State) -> std::collections::HashSet<String> {
    state
        .rounds
        .iter()
        .flat_map(|r| &r.chunks)
        .flat_map(|c| &c.errors)
        .filter_map(|e| e.code.clone())
        .filter(|c| !fixable_by_resending(c))
        .collect()
}

/// A batch failure that may pass another time: a quota that frees up, a
/// fault of the service's.
fn fixable_by_resending(code: &str) -> bool {
    matches!(
        code,
        "token_limit_exceeded"
            | "rate_limit_exceeded"
            | "request_limit_exceeded"
            | "server_error"
            | "internal_error"
            | "upstream_unavailable"
    )
}

/// Most errors of one failed batch printed.
const SHOWN_ERRORS: usize = 10;

/// Why a batch failed, as the service says it: code, line, message.
fn print_failure(round: u32, batch: &str, chunk: &str, errors: &[batchkit_client::BatchErrorItem]) {
    eprintln!(
        "round {round}: {batch} ({chunk}) failed with {}:",
        crate::report::count(errors.len() as u64, "error")
    );
    for e in errors.iter().take(SHOWN_ERRORS) {
        let at = match (e.line, &e.param) {
            (Some(line), _) => format!("{chunk}:{line}: "),
            (None, Some(param)) => format!("{param}: "),
            (None, None) => String::new(),
        };
        eprintln!(
            "  {at}{}: {}",
            e.code.as_deref().unwrap_or("error"),
            e.message.as_deref().unwrap_or("no message")
        );
    }
    if errors.len() > SHOWN_ERRORS {
        eprintln!("  ... and {} more", errors.len() - SHOWN_ERRORS);
    }
}

/// The results of a batch that failed as a whole: one error line per
/// request of its chunk, with the batch's error for that line (or its
/// first error), so that the merged output says of each request why it
/// did not run.
fn failure_lines(
    chunk: &Path,
    to: &Path,
    batch: &str,
    errors: &[batchkit_client::BatchErrorItem],
) -> Result<()> {
    use std::io::{BufRead, Write};
    let general = errors
        .iter()
        .find(|e| e.line.is_none())
        .or_else(|| errors.first());
    let input =
        std::fs::File::open(chunk).with_context(|| format!("cannot read {}", chunk.display()))?;
    let mut out = Output::create(to, false)?;
    for (i, line) in std::io::BufReader::new(input).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("cannot read {}", chunk.display()))?;
        // The chunk was written by this run from validated lines: each has
        // a custom_id; a blank one has nothing to say.
        let Some(id) = serde_json::from_slice::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("custom_id")?.as_str().map(str::to_owned))
        else {
            continue;
        };
        let number = i as u64 + 1;
        let e = errors.iter().find(|e| e.line == Some(number)).or(general);
        let code = e.and_then(|e| e.code.as_deref()).unwrap_or("batch_failed");
        let why = e
            .and_then(|e| e.message.as_deref())
            .unwrap_or("no reason given");
        let record = serde_json::json!({
            "id": null,
            "custom_id": id,
            "response": null,
            "error": {"code": code, "message": format!("The batch {batch} failed: {why}")},
        });
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_read_from_openais_message() {
        let m = "Enqueued token limit reached for gpt-4o in organization org-x. Limit: 2,000,000 enqueued tokens. Please try again once some in_progress batches have been completed.";
        assert_eq!(limit_in(m), Some(2_000_000));
        assert_eq!(limit_in("Limit: 90000 enqueued tokens"), Some(90_000));
        assert_eq!(limit_in("no limit named"), None);
    }

    #[test]
    fn waits_double_from_the_poll_interval_up_to_ten_minutes() {
        let s = Duration::from_secs;
        assert_eq!(token_wait(Duration::from_millis(200), 0), s(1));
        assert_eq!(token_wait(s(5), 2), s(20));
        assert_eq!(token_wait(s(5), 40), s(600));
    }
}
