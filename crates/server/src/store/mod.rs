//! The narrow interfaces behind which state lives: the job store (files'
//! and batches' records, and each request's result until the batch's files
//! are written) and the file store (the bytes of files).
//!
//! SQLite and the local disk are the embedded implementations. Every method
//! is one atomic step: a state change that must happen together is one
//! transaction, so a crash between any two calls leaves a state the engine
//! can carry on from. A shared database (PostgreSQL) and an object store
//! (S3) can take their places without touching the API or the engine.
//!
//! ## Work is leased
//!
//! A batch's work is cut into units: the batch itself (its validation and
//! its finalization: [`Unit::BATCH`]) and its chunks (runs of a few hundred
//! to a few thousand request lines, whose byte ranges validation records).
//! A node works on a unit only while it holds the unit's lease
//! ([`JobStore::claim`]), renews it by heartbeat ([`JobStore::renew`]), and
//! loses it when it stops renewing: then any node may claim it again. Each
//! claim raises the unit's epoch, and every write a holder makes names its
//! [`Lease`]: a write under a lease that was taken over fails with
//! [`StoreError::Fenced`], so a node presumed dead that wakes up cannot
//! write over its successor. Lease times are the store's clock, never a
//! node's.

use std::io;
use std::ops::Range;
use std::time::Duration;

use crate::objects::{BatchError, BatchRecord, FileRecord, Status, Usage};

#[cfg(test)]
pub(crate) mod conformance;
mod disk;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "s3")]
mod s3;
mod sql;
mod sqlite;

pub use disk::DiskFiles;
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(feature = "s3")]
pub use s3::S3Files;
pub use sqlite::SqliteStore;

/// A job store failure, in terms of no particular backend: the backend's
/// own error is kept as the source, for its message and its chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not do what was asked (a full disk, a lost
    /// connection, a locked database).
    #[error("the job store failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored value could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The database cannot be used by this binary (its schema is newer,
    /// its URL is not one).
    #[error("{0}")]
    Schema(String),
    /// The lease named was taken over (or its unit is gone): the write was
    /// not made, and the holder must stop working on the unit.
    #[error("the lease on {0} was lost: another node holds it now")]
    Fenced(String),
}

impl StoreError {
    /// A backend's failure.
    pub fn failed(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Failed(Box::new(e))
    }
}

/// Results of job store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which page of a list.
#[derive(Clone, Debug, Default)]
pub struct Page<'a> {
    /// Start after this id (in list order).
    pub after: Option<&'a str>,
    /// At most this many.
    pub limit: usize,
    /// Oldest first instead of newest first.
    pub ascending: bool,
}

/// A list page and whether more follow.
pub type Listed<T> = (Vec<T>, bool);

/// Why a list could not be paged.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// `after` names no object of this tenant.
    #[error("no object '{0}' to list after")]
    UnknownAfter(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of one request, as its line in the output or error file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRow {
    /// The request's 1-based line in the input file.
    pub line: u64,
    /// A 2xx response (output file) or not (error file).
    pub ok: bool,
    /// The output line, without its newline.
    pub body: String,
    /// Tokens the response reports.
    pub usage: Usage,
}

/// What a cancel found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cancel {
    /// Now (or already) cancelling.
    Cancelling(Box<BatchRecord>),
    /// Left as it was: finalizing, cancelled or ended (the handler
    /// decides whether that is an answer or a refusal).
    Unchanged(Box<BatchRecord>),
    /// No such batch for this tenant.
    NotFound,
}

/// How a batch ends, with the files it leaves.
#[derive(Clone, Debug)]
pub struct Finish {
    /// `completed`, `expired` or `cancelled`.
    pub status: Status,
    /// The output file, if any line succeeded.
    pub output: Option<FileRecord>,
    /// The error file, if any line did not.
    pub error: Option<FileRecord>,
    /// Final `request_counts.completed`.
    pub completed: u64,
    /// Final `request_counts.failed`.
    pub failed: u64,
    /// Final `request_counts.total`: every request line, so that
    /// `completed + failed == total`.
    pub total: u64,
    /// When.
    pub at: i64,
}

/// An enqueued-token limit of a tenant's that a batch must fit into when
/// it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenLimit {
    /// For this model only; `None`: across all of the tenant's models.
    pub model: Option<String>,
    /// The most tokens it may have enqueued at once.
    pub limit: u64,
}

/// What validation found, to start a batch with.
#[derive(Clone, Debug, Default)]
pub struct Start {
    /// Its request lines.
    pub total: u64,
    /// Its one model, if it has one.
    pub model: Option<String>,
    /// Its chunks, in input order.
    pub chunks: Vec<Chunk>,
    /// The tokens it enqueues (input estimates plus output caps; 0 when
    /// its tenant has no limit and they were not counted).
    pub tokens: u64,
    /// The tenant's limits it must fit into, with what its tenant's other
    /// `in_progress` batches still hold (a batch holds its tokens in
    /// proportion to its requests not yet finished).
    pub limits: Vec<TokenLimit>,
}

/// What [`JobStore::start`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// `in_progress` (or, without requests, `finalizing`).
    Started,
    /// Left `validating`: with the tokens it enqueues, its tenant would
    /// hold more than this limit (`held` already).
    OverLimit {
        /// The limit.
        limit: TokenLimit,
        /// What the tenant's other batches hold of it now.
        held: u64,
    },
    /// It was no longer validating.
    NotValidating,
}

/// A webhook event waiting in the store's outbox: written in the same
/// transaction as the batch's end, so that no crash loses it, and removed
/// once delivered (or given up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `evt_...`: the `webhook-id` of every delivery of it.
    pub id: String,
    /// Whose batch.
    pub tenant: String,
    /// The batch.
    pub batch_id: String,
    /// `batch.completed`, `batch.failed`, `batch.cancelled`,
    /// `batch.expired`.
    pub kind: String,
    /// When the batch ended (Unix seconds).
    pub created_at: i64,
    /// Deliveries tried so far.
    pub attempts: u32,
}

/// One tenant's use of one model over a period: its batches that ended in
/// the period, their requests and the tokens their responses reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageRow {
    /// The tenant.
    pub tenant: String,
    /// The model (`None`: batches that failed before a model was known).
    pub model: Option<String>,
    /// Batches that ended in the period, whatever their end.
    pub batches: u64,
    /// Requests answered with a 2xx.
    pub completed: u64,
    /// Requests that failed, expired or were cancelled.
    pub failed: u64,
    /// Tokens.
    pub usage: Usage,
}

/// The webhook event type of a batch's end status.
pub(crate) fn event_kind(status: Status) -> &'static str {
    match status {
        Status::Completed => "batch.completed",
        Status::Failed => "batch.failed",
        Status::Cancelled => "batch.cancelled",
        _ => "batch.expired",
    }
}

/// Which unit of a batch's work: the batch itself, or one of its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Unit(pub u32);

impl Unit {
    /// The batch itself: its validation, and its finalization.
    pub const BATCH: Unit = Unit(0);

    /// Whether this is a chunk of request lines.
    pub fn is_chunk(self) -> bool {
        self.0 > 0
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("the batch"),
            n => write!(f, "chunk {n}"),
        }
    }
}

/// A held lease on one unit, named by every write its holder makes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The batch.
    pub batch_id: String,
    /// Which of its units.
    pub unit: Unit,
    /// The node holding it.
    pub owner: String,
    /// Raised by every claim: a write under an older epoch is refused.
    pub epoch: i64,
}

impl std::fmt::Display for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {}", self.unit, self.batch_id)
    }
}

/// A chunk of a batch's request lines, as validation cut the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Its unit (1, 2, ... in input order).
    pub unit: Unit,
    /// The 1-based number of its first line.
    pub first_line: u64,
    /// The number of the line after its last.
    pub end_line: u64,
    /// Where its first line starts in the input file.
    pub start: u64,
    /// Where its last line ends (exclusive).
    pub end: u64,
}

/// A unit a node has just claimed.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The lease, to name in writes and renewals.
    pub lease: Lease,
    /// The batch, as it stood at the claim.
    pub batch: BatchRecord,
    /// The chunk's lines, for a chunk.
    pub chunk: Option<Chunk>,
}

/// What a renewal learnt of one lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewed {
    /// Still held, for another lease period; the batch is in this status
    /// (a chunk's holder stops when it reads `cancelling`).
    Held(Status),
    /// Taken over, or its unit is gone: stop working on it.
    Lost,
}

/// What a store shared by several nodes tells a node of other nodes'
/// writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// Work may have appeared: a batch created, a unit given up, a batch
    /// ready to finalize.
    Work,
    /// This batch was cancelled.
    Cancelled(String),
}

/// Records of files and batches, results in flight, and the leases on the
/// work.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Whether only one server ever uses this store (SQLite, under the
    /// data directory's lock): then every lease held when it starts is a
    /// dead predecessor's.
    fn exclusive(&self) -> bool {
        false
    }

    /// Add a file's record.
    async fn insert_file(&self, file: &FileRecord) -> StoreResult<()>;
    /// A tenant's file.
    async fn file(&self, tenant: &str, id: &str) -> StoreResult<Option<FileRecord>>;
    /// A tenant's files, newest first unless `page.ascending`.
    async fn list_files(
        &self,
        tenant: &str,
        purpose: Option<&str>,
        page: &Page<'_>,
    ) -> Result<Listed<FileRecord>, ListError>;
    /// Remove a file's record; false if there was none.
    async fn delete_file(&self, tenant: &str, id: &str) -> StoreResult<bool>;
    /// Files whose `expires_at` has passed.
    async fn expired_files(&self, now: i64) -> StoreResult<Vec<FileRecord>>;
    /// Whether a file's bytes are still needed: a record names it (any
    /// tenant's), or an unfinished batch reads it (a deleted input keeps
    /// its bytes until its batch ends).
    async fn file_needed(&self, id: &str) -> StoreResult<bool>;

    /// Add a new batch (status `validating`).
    async fn insert_batch(&self, batch: &BatchRecord) -> StoreResult<()>;
    /// A tenant's batch.
    async fn batch(&self, tenant: &str, id: &str) -> StoreResult<Option<BatchRecord>>;
    /// A batch, whoever's it is (for the engine).
    async fn batch_by_id(&self, id: &str) -> StoreResult<Option<BatchRecord>>;
    /// A tenant's batches, newest first.
    async fn list_batches(
        &self,
        tenant: &str,
        page: &Page<'_>,
    ) -> Result<Listed<BatchRecord>, ListError>;
    /// How many of a tenant's batches have not ended.
    async fn unfinished_batches(&self, tenant: &str) -> StoreResult<u64>;
    /// Ask to cancel: `validating`/`in_progress` become `cancelling`.
    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> StoreResult<Cancel>;
    /// Counts of batches by status.
    async fn count_by_status(&self) -> StoreResult<Vec<(Status, u64)>>;

    /// Claim, for `lease`, a unit that no live lease holds and that has
    /// work: the validation of a `validating` batch; a chunk of an
    /// `in_progress` batch whose window is open (none of the batches in
    /// `busy`); the finalization of a batch that is `finalizing`,
    /// `cancelling` or past its window, once no chunk of it is leased.
    /// Batches are served oldest first.
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        busy: &[String],
    ) -> StoreResult<Option<Claim>>;
    /// Renew these leases for another `lease`: each one's fate, in order.
    async fn renew(&self, leases: &[Lease], lease: Duration) -> StoreResult<Vec<Renewed>>;
    /// Give a lease up: its unit may be claimed at once. Nothing happens if
    /// it was lost already.
    async fn release(&self, lease: &Lease) -> StoreResult<()>;
    /// Give up every lease `owner` holds (or, for `None`, every lease at
    /// all: for a store only one server uses, at its start). How many.
    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64>;

    /// `validating` -> `in_progress` with the file's request count, model,
    /// chunks and enqueued tokens (an input without requests goes on to
    /// `finalizing`), unless that would take its tenant over one of
    /// `start.limits`: the check and the change are one step, so two
    /// batches starting at once on two nodes cannot both take the last
    /// tokens. Fenced by the batch's lease.
    async fn start(&self, lease: &Lease, start: &Start, now: i64) -> StoreResult<Started>;
    /// [`JobStore::start`] without limits: false if the batch was no
    /// longer validating.
    async fn begin(
        &self,
        lease: &Lease,
        total: u64,
        model: Option<&str>,
        chunks: &[Chunk],
        now: i64,
    ) -> StoreResult<bool> {
        let start = Start {
            total,
            model: model.map(str::to_owned),
            chunks: chunks.to_vec(),
            ..Start::default()
        };
        Ok(self.start(lease, &start, now).await? == Started::Started)
    }
    /// `validating` -> `failed` with the validator's errors. Fenced.
    async fn fail(
        &self,
        lease: &Lease,
        total: u64,
        errors: &[BatchError],
        now: i64,
    ) -> StoreResult<bool>;
    /// Record results, at most once per line (a line already recorded is
    /// left as it is), updating the batch's counts and usage: one
    /// transaction for the whole slice. Fenced by the chunk's lease.
    async fn record(&self, lease: &Lease, rows: &[ResultRow]) -> StoreResult<()>;
    /// A chunk is done: every line of it has its result. When it was the
    /// last, the batch goes `in_progress` -> `finalizing` in the same
    /// transaction (true). Fenced.
    async fn chunk_done(&self, lease: &Lease, now: i64) -> StoreResult<bool>;
    /// The lines in `lines` recorded so far.
    async fn recorded_lines(&self, id: &str, lines: Range<u64>) -> StoreResult<LineSet>;
    /// Up to `limit` recorded results after `after_line`, in line order.
    async fn results_after(
        &self,
        id: &str,
        after_line: u64,
        limit: usize,
    ) -> StoreResult<Vec<ResultRow>>;
    /// End the batch: add its files, set its final status, counts and
    /// stamp, and drop its recorded results and its units, in one
    /// transaction. False if it had already ended. Fenced by the batch's
    /// lease.
    async fn finish(&self, lease: &Lease, finish: &Finish) -> StoreResult<bool>;

    /// Up to `limit` webhook events due at `now_ms` (ms), oldest first,
    /// each held for `hold` from now: no other caller gets it until then,
    /// so a node that dies mid-delivery leaves it to another.
    async fn due_events(
        &self,
        now_ms: i64,
        hold: Duration,
        limit: usize,
    ) -> StoreResult<Vec<Event>>;
    /// An event delivered, or given up: it leaves the outbox.
    async fn event_done(&self, id: &str) -> StoreResult<()>;
    /// A delivery of `event` failed (`why`): its attempts counted, it is
    /// due again at `next_ms`.
    async fn event_retry(&self, event: &Event, next_ms: i64, why: &str) -> StoreResult<()>;
    /// Usage by tenant and model of the batches that ended at or after
    /// `since` and before `until` (Unix seconds), by tenant and model.
    async fn usage(&self, since: i64, until: i64) -> StoreResult<Vec<UsageRow>>;
    /// Events waiting in the outbox.
    async fn pending_events(&self) -> StoreResult<u64>;

    /// Notices of other nodes' writes, for a store several nodes share;
    /// `None` where there are no other nodes to hear from (the engine
    /// polls in any case, for what a notice may miss).
    async fn events(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        None
    }
}

/// A set of line numbers from a first one on, one bit each (a chunk of a
/// thousand lines: 128 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineSet {
    first: u64,
    words: Vec<u64>,
}

impl LineSet {
    /// An empty set of lines from `first` on.
    pub fn from(first: u64) -> LineSet {
        LineSet {
            first,
            words: Vec::new(),
        }
    }

    /// Add `line` (lines before the first are not kept).
    pub fn insert(&mut self, line: u64) {
        let Some(i) = line.checked_sub(self.first) else {
            return;
        };
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    /// Whether `line` is in the set.
    pub fn contains(&self, line: u64) -> bool {
        let Some(i) = line.checked_sub(self.first) else {
            return false;
        };
        let (word, bit) = ((i / 64) as usize, i % 64);
        self.words.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
}

/// A file's bytes, read as they are needed.
pub type Reader = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// A file being written: its bytes go in, in order, and
/// [`FileWriter::commit`] makes them the content of its id, durably.
/// Dropped without a commit, nothing is stored (what a crash leaves is an
/// orphan the engine's sweep removes).
#[async_trait::async_trait]
pub trait FileWriter: Send {
    /// Append `bytes`.
    async fn write(&mut self, bytes: bytes::Bytes) -> io::Result<()>;
    /// Store what was written under the file's id.
    async fn commit(self: Box<Self>) -> io::Result<()>;
}

/// The bytes of files, by id. Writes and reads are streams (a read of a
/// whole file or of a byte range), so that a store need not be a local
/// disk, and a file is never held whole in memory.
#[async_trait::async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Start writing the file `id`.
    async fn create(&self, id: &str) -> io::Result<Box<dyn FileWriter>>;
    /// Read a file, or the bytes `range` of it (a range past the end reads
    /// what there is). A missing file is `NotFound`.
    async fn read(&self, id: &str, range: Option<std::ops::Range<u64>>) -> io::Result<Reader>;
    /// Remove a file (no error if it is gone already).
    async fn remove(&self, id: &str) -> io::Result<()>;
    /// Every stored file, with when it was written (to find files a crash
    /// left without a record, and to leave alone those just written).
    async fn stored(&self) -> io::Result<Vec<Stored>>;
}

/// `id`, if it can name a stored file: ids are made by the server, but a
/// path or key is never built from anything that could name another
/// place (`..`, `/`); anything else is a file that does not exist.
fn checked_id(id: &str) -> io::Result<&str> {
    let fine = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fine {
        Ok(id)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no file '{id}'"),
        ))
    }
}

/// Store `bytes` as file `id` in one go (for small files and tests).
pub async fn put_bytes(files: &dyn FileStore, id: &str, bytes: &[u8]) -> io::Result<()> {
    let mut w = files.create(id).await?;
    w.write(bytes::Bytes::copy_from_slice(bytes)).await?;
    w.commit().await
}

/// A stored file, as [`FileStore::stored`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its id.
    pub id: String,
    /// When its content was written.
    pub written: std::time::SystemTime,
}
