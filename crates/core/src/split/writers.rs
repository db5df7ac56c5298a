//! Threads that write chunks from lists of input ranges.
//!
//! Chunk `c` belongs to writer `c % n`, so one chunk's appends stay in
//! order while different chunks are written at once. Each writer copies
//! and hashes; its [`Stager`] thread does the disk writes meanwhile.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{Scope, ScopedJoinHandle};

use tempfile::TempPath;

use super::chunkfile::{ChunkFile, Stager};

/// Writer threads.
pub(crate) const WRITERS: usize = 2;

/// Jobs queued per writer before the sender waits: bounds the memory held
/// in range lists when the writers fall behind.
const QUEUE: usize = 8;

/// Work for a writer.
enum Job {
    /// Append these input ranges to a chunk, creating its file (with
    /// `reserve` bytes allocated) on the first append.
    Append {
        chunk: usize,
        runs: Vec<Range<usize>>,
        reserve: u64,
    },
    /// The chunk is complete.
    Close(usize),
}

type Done = Vec<(usize, TempPath, String)>;

/// The writer threads of one split.
pub(crate) struct Writers<'scope> {
    senders: Vec<mpsc::SyncSender<Job>>,
    threads: Vec<ScopedJoinHandle<'scope, io::Result<Done>>>,
    stop: &'scope AtomicBool,
}

impl<'scope> Writers<'scope> {
    /// Start the writers, which copy from `bytes` into files in `dir`
    /// (direct I/O if `direct`) and call `written` with bytes written.
    /// Setting `stop` makes them drop their files and only drain.
    pub(crate) fn spawn<'env>(
        scope: &'scope Scope<'scope, 'env>,
        bytes: &'env [u8],
        dir: &'env Path,
        direct: bool,
        stop: &'scope AtomicBool,
        written: &'env (dyn Fn(u64) + Sync),
    ) -> Writers<'scope> {
        let mut senders = Vec::with_capacity(WRITERS);
        let mut threads = Vec::with_capacity(WRITERS);
        for _ in 0..WRITERS {
            let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
            senders.push(tx);
            threads.push(scope.spawn(move || write_jobs(rx, bytes, dir, direct, stop, written)));
        }
        Writers {
            senders,
            threads,
            stop,
        }
    }

    /// Queue appending `runs` to `chunk` (`reserve`: its expected size,
    /// if known, else 0).
    pub(crate) fn append(&self, chunk: usize, runs: Vec<Range<usize>>, reserve: u64) {
        self.send(
            chunk,
            Job::Append {
                chunk,
                runs,
                reserve,
            },
        );
    }

    /// Queue closing `chunk`: it is complete.
    pub(crate) fn close(&self, chunk: usize) {
        self.send(chunk, Job::Close(chunk));
    }

    fn send(&self, chunk: usize, job: Job) {
        // Writers keep their end until the senders are dropped.
        let _ = self.senders[chunk % self.senders.len()].send(job);
    }

    /// Whether a writer has failed (or the writing was stopped).
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Wait for every queued job; the completed chunks by number, or the
    /// first failure. After `abort`, every file is removed.
    pub(crate) fn finish(self, abort: bool) -> io::Result<HashMap<usize, (TempPath, String)>> {
        if abort {
            self.stop.store(true, Ordering::Relaxed);
        }
        drop(self.senders);
        let mut files = HashMap::new();
        let mut failure = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok(done)) => files.extend(done.into_iter().map(|(c, p, s)| (c, (p, s)))),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(io::Error::other("a chunk writer failed"))),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(files),
        }
    }
}

/// A writer thread: apply jobs in order until the channel closes; return
/// the chunks it completed. After `stop` (or its own error) it only drains.
fn write_jobs(
    jobs: mpsc::Receiver<Job>,
    bytes: &[u8],
    dir: &Path,
    direct: bool,
    stop: &AtomicBool,
    written: &(dyn Fn(u64) + Sync),
) -> io::Result<Done> {
    let mut stager = Stager::new()?;
    let mut open: HashMap<usize, ChunkFile> = HashMap::new();
    let mut done = Vec::new();
    let mut failure = None;
    for job in jobs {
        if failure.is_some() || stop.load(Ordering::Relaxed) {
            open.clear();
            done.clear();
            continue;
        }
        let result = match job {
            Job::Append {
                chunk,
                runs,
                reserve,
            } => {
                let file = match open.entry(chunk) {
                    Entry::Occupied(e) => Ok(e.into_mut()),
                    Entry::Vacant(e) => {
                        ChunkFile::create(dir, direct, reserve).map(|f| e.insert(f))
                    }
                };
                file.and_then(|f| f.append(runs.iter().map(|r| &bytes[r.clone()]), &mut stager))
                    .map(|()| written(runs.iter().map(|r| r.len() as u64).sum()))
            }
            Job::Close(chunk) => match open.remove(&chunk) {
                Some(file) => file
                    .finish(&mut stager)
                    .map(|(path, sum)| done.push((chunk, path, sum))),
                None => Ok(()),
            },
        };
        if let Err(e) = result {
            failure = Some(e);
            stop.store(true, Ordering::Relaxed);
        }
    }
    // The disk's own error, if it had one, says more than ours.
    let flushed = stager.finish();
    match (flushed, failure) {
        (Err(e), _) | (Ok(()), Some(e)) => {
            stop.store(true, Ordering::Relaxed);
            Err(e)
        }
        (Ok(()), None) => Ok(done),
    }
}
