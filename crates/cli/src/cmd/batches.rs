//! `batchkit batches`: create, get, list, cancel, wait, download.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use batchkit_client::{Batch, Client, CreateBatch};
use batchkit_core::atomic::Output;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::service::{self, Printer, batch_line, connect, failed, utc};
use crate::exit::Exit;

/// Which call to make, of which service.
pub struct Options {
    /// The service.
    pub service: service::Options,
    /// The call.
    pub action: Action,
}

/// A `batches` call.
pub enum Action {
    /// Create a batch (uploading `file` first, if given).
    Create {
        /// The uploaded request file.
        input_file_id: Option<String>,
        /// A request file to upload first.
        file: Option<PathBuf>,
        /// The endpoint of every request.
        endpoint: String,
        /// The completion window.
        completion_window: String,
        /// Metadata pairs.
        metadata: Vec<(String, String)>,
        /// Seconds after creation that the output files expire.
        output_expires_after: Option<i64>,
    },
    /// Get a batch's object.
    Get {
        /// The batch id.
        id: String,
    },
    /// List batches, newest first.
    List {
        /// At most this many per page.
        limit: Option<u32>,
        /// After this batch id.
        after: Option<String>,
        /// Every page.
        all: bool,
    },
    /// Cancel a batch.
    Cancel {
        /// The batch id.
        id: String,
    },
    /// Wait until batches end.
    Wait {
        /// The batch ids.
        ids: Vec<String>,
        /// Give up after this long.
        timeout: Option<Duration>,
        /// Time between polls.
        every: Duration,
    },
    /// Download a finished batch's files into `dir`.
    Download {
        /// The batch id.
        id: String,
        /// Where to write them.
        dir: PathBuf,
    },
}

/// Run a `batches` call.
pub fn run(args: &Options) -> anyhow::Result<Exit> {
    let (rt, client) = connect(&args.service)?;
    let mut print = Printer::new(args.service.format);
    let exit = match &args.action {
        Action::Create {
            input_file_id,
            file,
            endpoint,
            completion_window,
            metadata,
            output_expires_after,
        } => {
            let mut req = CreateBatch {
                input_file_id: input_file_id.clone().unwrap_or_default(),
                endpoint: endpoint.clone(),
                completion_window: completion_window.clone(),
                metadata: metadata.iter().cloned().collect(),
                output_expires_after: *output_expires_after,
            };
            if metadata.len() != req.metadata.len() {
                anyhow::bail!("a --metadata key is given twice");
            }
            // Checked before anything is sent (exit 2 on a usage error).
            req.check().map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(path) = file {
                match rt.block_on(client.upload(path, "batch", None)) {
                    Ok(f) => {
                        eprintln!("uploaded {} as {}", path.display(), f.id);
                        req.input_file_id = f.id;
                    }
                    Err(e) => return failed(&format!("upload of {}", path.display()), e),
                }
            }
            match rt.block_on(client.create_batch(&req)) {
                Ok(b) => {
                    print.batch(&b)?;
                    Exit::Ok
                }
                Err(e) => return failed(&format!("batch on {}", req.input_file_id), e),
            }
        }
        Action::Get { id } => match rt.block_on(client.batch(id)) {
            Ok(b) => {
                print.object(&b.raw, || details(&b))?;
                Exit::Ok
            }
            Err(e) => return failed(&format!("batch {id}"), e),
        },
        Action::List { limit, after, all } => {
            let mut after = after.clone();
            loop {
                let page = match rt.block_on(client.batches(*limit, after.as_deref())) {
                    Ok(p) => p,
                    Err(e) => return failed("batches", e),
                };
                for b in &page.data {
                    print.batch(b)?;
                }
                if !*all || !page.has_more || page.last_id.is_none() {
                    break Exit::Ok;
                }
                after = page.last_id;
            }
        }
        Action::Cancel { id } => match rt.block_on(client.cancel_batch(id)) {
            Ok(b) => {
                print.batch(&b)?;
                Exit::Ok
            }
            Err(e) => return failed(&format!("batch {id}"), e),
        },
        Action::Wait {
            ids,
            timeout,
            every,
        } => match rt.block_on(wait(&client, ids, *timeout, *every)) {
            Ok(Waited::Ended(batches)) => {
                let mut exit = Exit::Ok;
                for b in &batches {
                    print.batch(b)?;
                    if b.status != "completed" {
                        exit = Exit::Invalid;
                        explain(b);
                    }
                }
                exit
            }
            Ok(Waited::TimedOut(b)) => {
                crate::print_error(&anyhow::anyhow!(
                    "batch {} is still {} after {:?} (--timeout)",
                    b.id,
                    b.status,
                    timeout.unwrap_or_default()
                ));
                Exit::Invalid
            }
            Err((id, e)) => return failed(&format!("batch {id}"), e),
        },
        Action::Download { id, dir: output } => {
            let b = match rt.block_on(client.batch(id)) {
                Ok(b) => b,
                Err(e) => return failed(&format!("batch {id}"), e),
            };
            if !b.is_terminal() {
                crate::print_error(&anyhow::anyhow!(
                    "batch {id} is {}: its files are written when it ends (`batchkit batches wait {id}`)",
                    b.status
                ));
                return Ok(Exit::Invalid);
            }
            std::fs::create_dir_all(output)?;
            let files = [("output", &b.output_file_id), ("error", &b.error_file_id)];
            let mut any = false;
            for (kind, file_id) in files {
                let Some(file_id) = file_id else { continue };
                let path = output.join(format!("{id}_{kind}.jsonl"));
                if let Err(e) = rt.block_on(download(&client, file_id, &path)) {
                    return match e {
                        Fetch::Client(e) => failed(&format!("file {file_id} of batch {id}"), e),
                        Fetch::Io(e) => Err(e),
                    };
                }
                println!("{}", path.display());
                any = true;
            }
            if !any {
                eprintln!("batch {id} ended {} with no output or error file", b.status);
            }
            Exit::Ok
        }
    };
    print.finish()?;
    Ok(exit)
}

enum Fetch {
    Client(batchkit_client::ClientError),
    Io(anyhow::Error),
}

async fn download(client: &Client, file_id: &str, path: &Path) -> Result<(), Fetch> {
    let mut out = Output::create(path, false).map_err(|e| Fetch::Io(e.into()))?;
    client
        .content(file_id, &mut out, None)
        .await
        .map_err(Fetch::Client)?;
    out.commit().map_err(|e| Fetch::Io(e.into()))
}

/// A batch, field by field.
fn details(b: &Batch) -> String {
    let c = b.counts();
    let mut s = format!(
        "id:            {}\nstatus:        {}\nendpoint:      {}\ninput file:    {}\nrequests:      {} total, {} completed, {} failed\ncreated:       {}\n",
        b.id,
        b.status,
        b.endpoint,
        b.input_file_id,
        c.total,
        c.completed,
        c.failed,
        utc(b.created_at)
    );
    if let Some(t) = b.expires_at {
        s.push_str(&format!("expires:       {}\n", utc(t)));
    }
    for (name, id) in [
        ("output file:", &b.output_file_id),
        ("error file:", &b.error_file_id),
    ] {
        if let Some(id) = id {
            s.push_str(&format!("{name:<14} {id}\n"));
        }
    }
    if let Some(m) = &b.metadata {
        for (k, v) in m {
            s.push_str(&format!("metadata:      {k}={v}\n"));
        }
    }
    for e in b.errors.iter().flat_map(|e| &e.data) {
        s.push_str(&format!("error:         {}\n", error_text(e)));
    }
    s.trim_end().to_owned()
}

fn error_text(e: &batchkit_client::BatchErrorItem) -> String {
    format!(
        "{}{}: {}",
        e.line.map(|l| format!("line {l}: ")).unwrap_or_default(),
        e.code.as_deref().unwrap_or("error"),
        e.message.as_deref().unwrap_or("")
    )
}

/// Why a batch did not complete, on stderr.
fn explain(b: &Batch) {
    let errors: Vec<String> = b
        .errors
        .iter()
        .flat_map(|e| &e.data)
        .map(error_text)
        .collect();
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "batch {} ended {}", b.id, b.status);
    if errors.is_empty() {
        let c = b.counts();
        let _ = writeln!(err, " ({} of {} requests completed)", c.completed, c.total);
    } else {
        let _ = writeln!(err, ":");
        for e in errors.iter().take(10) {
            let _ = writeln!(err, "  {e}");
        }
        if errors.len() > 10 {
            let _ = writeln!(err, "  ... and {} more", errors.len() - 10);
        }
    }
}

enum Waited {
    Ended(Vec<Batch>),
    TimedOut(Box<Batch>),
}

/// Poll until every batch is terminal, with a bar each on a terminal and a
/// line per status change otherwise.
async fn wait(
    client: &Client,
    ids: &[String],
    timeout: Option<Duration>,
    every: Duration,
) -> Result<Waited, (String, batchkit_client::ClientError)> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if tty {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:36} {msg:11} [{bar:30}] {pos}/{len}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: Vec<ProgressBar> = ids
        .iter()
        .map(|id| {
            let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
            bar.set_prefix(id.clone());
            bar
        })
        .collect();
    let mut last: Vec<Option<Batch>> = vec![None; ids.len()];
    loop {
        for (i, id) in ids.iter().enumerate() {
            if last[i].as_ref().is_some_and(Batch::is_terminal) {
                continue;
            }
            let b = client.batch(id).await.map_err(|e| (id.clone(), e))?;
            let c = b.counts();
            bars[i].set_length(c.total);
            bars[i].set_position(c.completed + c.failed);
            bars[i].set_message(b.status.clone());
            let changed = last[i].as_ref().is_none_or(|l| l.status != b.status);
            if changed && !tty {
                eprintln!("{}", batch_line(&b));
            }
            if b.is_terminal() {
                // Cleared, not left drawn: the summary printed at the end
                // says how each batch ended (a bar left behind was the
                // same line twice).
                bars[i].finish_and_clear();
            }
            last[i] = Some(b);
        }
        if last
            .iter()
            .all(|b| b.as_ref().is_some_and(Batch::is_terminal))
        {
            let _ = multi.clear();
            return Ok(Waited::Ended(last.into_iter().flatten().collect()));
        }
        if let Some(t) = timeout {
            if start.elapsed() >= t {
                let _ = multi.clear();
                let pending = last.into_iter().flatten().find(|b| !b.is_terminal());
                return Ok(Waited::TimedOut(Box::new(pending.unwrap_or_default())));
            }
        }
        tokio::time::sleep(every).await;
    }
}
