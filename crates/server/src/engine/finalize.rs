//! The end of a batch: the output and error files written from the
//! recorded results in input order (requests that never ran go to the error
//! file as cancelled or expired), stored, and the batch closed in one
//! transaction with them.
//!
//! Finalizing may be interrupted anywhere and run again: a file is stored
//! only when complete, and a stored file the closing transaction did not
//! record is an orphan, removed by a later sweep.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::io::SyncIoBridge;

use super::output_lines::error_line;
use super::{Engine, RunError};
use crate::ids;
use crate::objects::{BatchRecord, FileRecord, Status};
use crate::store::{FileWriter, Finish, Lease, Reader, ResultRow};

/// Recorded results read from the store at a time.
const PAGE: usize = 2048;

/// An output or error file, written line by line from the blocking thread
/// that reads the input: lines are gathered into blocks of about 1 MiB,
/// each handed to the file store's writer (streamed to the store as it
/// goes, never held whole). Nothing is created until the first line.
struct OutputFile<'a> {
    engine: &'a Engine,
    rt: &'a tokio::runtime::Handle,
    writer: Option<(String, Box<dyn FileWriter>)>,
    buf: Vec<u8>,
    lines: u64,
    bytes: u64,
}

/// Bytes gathered before a write to the store.
const BLOCK: usize = 1 << 20;

impl<'a> OutputFile<'a> {
    fn new(engine: &'a Engine, rt: &'a tokio::runtime::Handle) -> OutputFile<'a> {
        OutputFile {
            engine,
            rt,
            writer: None,
            buf: Vec::with_capacity(BLOCK),
            lines: 0,
            bytes: 0,
        }
    }

    fn line(&mut self, line: &str) -> io::Result<()> {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.lines += 1;
        self.bytes += line.len() as u64 + 1;
        if self.buf.len() >= BLOCK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let block = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK)));
        let (engine, rt) = (self.engine, self.rt);
        rt.block_on(async {
            if self.writer.is_none() {
                let id = ids::new_id("file-", 24);
                let w = engine.files.create(&id).await?;
                self.writer = Some((id, w));
            }
            match &mut self.writer {
                Some((_, w)) => w.write(block).await,
                None => Ok(()),
            }
        })
    }

    /// Store the file under a new id, if it has lines.
    fn store(mut self, batch: &BatchRecord, kind: &str) -> io::Result<Option<FileRecord>> {
        if self.lines == 0 {
            return Ok(None);
        }
        self.flush()?;
        let Some((id, writer)) = self.writer.take() else {
            return Ok(None);
        };
        self.rt.block_on(writer.commit())?;
        let now = ids::now();
        Ok(Some(FileRecord {
            id,
            tenant: batch.tenant.clone(),
            bytes: self.bytes,
            created_at: now,
            expires_at: batch.output_expires_after.map(|s| now + s),
            filename: format!("{}_{kind}.jsonl", batch.id),
            purpose: "batch_output".to_owned(),
        }))
    }
}

/// End `batch` as `status` (`completed`, `expired` or `cancelled`).
pub(super) async fn finalize(
    engine: &Arc<Engine>,
    lease: &Lease,
    batch: &BatchRecord,
    status: Status,
) -> Result<(), RunError> {
    let (e, b) = (engine.clone(), batch.clone());
    let input = match engine.files.read(&batch.input_file_id, None).await {
        Ok(r) => Some(r),
        // Only a batch that never started can lose its input (it is kept
        // while the batch runs); it ends with no files.
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    // The files are written on a blocking thread, which reads the input and
    // asks the store for pages of results through the runtime.
    let rt = tokio::runtime::Handle::current();
    let finish =
        tokio::task::spawn_blocking(move || write_files(&rt, &e, &b, input, status)).await??;
    let ended = match engine.store.finish(lease, &finish).await {
        Ok(ended) => ended,
        Err(e) => {
            // Not recorded (the lease was lost, or the store failed): the
            // files just written are not needed; the next holder writes
            // its own.
            remove_files(engine, &finish).await;
            return Err(e.into());
        }
    };
    if ended {
        tracing::info!(
            batch = %batch.id,
            from = batch.status.as_str(),
            to = status.as_str(),
            completed = finish.completed,
            failed = finish.failed,
            "batch ended"
        );
    } else {
        // It had ended already: the files just written are not needed.
        remove_files(engine, &finish).await;
    }
    Ok(())
}

/// Remove the files of a finish that was not recorded (a file left behind
/// is found by the orphan sweep).
async fn remove_files(engine: &Engine, finish: &Finish) {
    for f in finish.output.iter().chain(&finish.error) {
        if let Err(e) = engine.files.remove(&f.id).await {
            tracing::warn!(file = %f.id, "cannot remove an unrecorded output: {e}");
        }
    }
}

fn write_files(
    rt: &tokio::runtime::Handle,
    engine: &Engine,
    batch: &BatchRecord,
    input: Option<Reader>,
    status: Status,
) -> Result<Finish, RunError> {
    let (code, message) = match status {
        Status::Cancelled => (
            "batch_cancelled",
            "This request was not executed because the batch was cancelled.",
        ),
        Status::Expired => (
            "batch_expired",
            "This request could not be executed before the completion window expired.",
        ),
        _ => ("batch_failed", "This request did not run."),
    };
    let mut output = OutputFile::new(engine, rt);
    let mut errors = OutputFile::new(engine, rt);
    let input = input
        .map(|r| BufReader::with_capacity(1 << 20, SyncIoBridge::new_with_handle(r, rt.clone())));
    let mut page: VecDeque<ResultRow> = VecDeque::new();
    let (mut after, mut exhausted) = (0u64, false);
    if let Some(mut reader) = input {
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            line_no += 1;
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if page.is_empty() && !exhausted {
                page.extend(rt.block_on(engine.store.results_after(&batch.id, after, PAGE))?);
                exhausted = page.len() < PAGE;
                after = page.back().map_or(after, |r| r.line);
            }
            while page.front().is_some_and(|r| r.line < line_no) {
                page.pop_front();
            }
            let result = if page.front().is_some_and(|r| r.line == line_no) {
                page.pop_front()
            } else {
                None
            };
            match result {
                Some(r) if r.ok => output.line(&r.body)?,
                Some(r) => errors.line(&r.body)?,
                None => errors.line(&error_line(
                    batchkit_core::custom_id::read(line).ok().as_deref(),
                    code,
                    message,
                ))?,
            }
        }
    }
    let (completed, failed) = (output.lines, errors.lines);
    Ok(Finish {
        status,
        output: output.store(batch, "output")?,
        error: errors.store(batch, "error")?,
        completed,
        failed,
        total: completed + failed,
        at: ids::now(),
    })
}
