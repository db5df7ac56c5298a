//! The narrow interfaces behind which state lives: the job store (files'
//! and batches' records, and each request's result until the batch's files
//! are written) and the file store (the bytes of files).
//!
//! SQLite and the local disk are the embedded implementations. Every method
//! is one atomic step: a state change that must happen together is one
//! transaction, so a crash between any two calls leaves a state the engine
//! can carry on from. A shared database (PostgreSQL) and an object store
//! (S3) can take their places without touching the API or the engine.

use std::io;
use std::path::Path;

use crate::objects::{BatchError, BatchRecord, FileRecord, Status, Usage};

#[cfg(test)]
pub(crate) mod conformance;
mod disk;
mod sqlite;

pub use disk::DiskFiles;
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
    /// The batch is past cancelling.
    Refused(Status),
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

/// Records of files and batches, and results in flight.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync + 'static {
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
    /// An unfinished batch of the tenant's that reads this file, if any.
    async fn file_in_use(&self, tenant: &str, id: &str) -> StoreResult<Option<String>>;
    /// Files whose `expires_at` has passed.
    async fn expired_files(&self, now: i64) -> StoreResult<Vec<FileRecord>>;
    /// Whether any tenant has a file of this id.
    async fn file_exists(&self, id: &str) -> StoreResult<bool>;

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
    /// Ask to cancel: `validating`/`in_progress` become `cancelling`.
    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> StoreResult<Cancel>;
    /// Every batch not yet in a terminal status, oldest first.
    async fn unfinished(&self) -> StoreResult<Vec<BatchRecord>>;
    /// Counts of batches by status.
    async fn count_by_status(&self) -> StoreResult<Vec<(Status, u64)>>;

    /// `validating` -> `in_progress` with the file's request count and
    /// model; false if the batch was no longer validating.
    async fn begin(&self, id: &str, total: u64, model: Option<&str>, now: i64)
    -> StoreResult<bool>;
    /// `validating` -> `failed` with the validator's errors.
    async fn fail(
        &self,
        id: &str,
        total: u64,
        errors: &[BatchError],
        now: i64,
    ) -> StoreResult<bool>;
    /// `in_progress` -> `finalizing`.
    async fn finalizing(&self, id: &str, now: i64) -> StoreResult<bool>;
    /// Record results, at most once per line (a line already recorded is
    /// left as it is), updating the batch's counts and usage: one
    /// transaction for the whole slice.
    async fn record(&self, id: &str, rows: &[ResultRow]) -> StoreResult<()>;
    /// Every line recorded so far.
    async fn recorded_lines(&self, id: &str) -> StoreResult<LineSet>;
    /// Up to `limit` recorded results after `after_line`, in line order.
    async fn results_after(
        &self,
        id: &str,
        after_line: u64,
        limit: usize,
    ) -> StoreResult<Vec<ResultRow>>;
    /// End the batch: add its files, set its final status, counts and
    /// stamp, and drop its recorded results, in one transaction. False if
    /// it had already ended.
    async fn finish(&self, id: &str, finish: &Finish) -> StoreResult<bool>;
}

/// A set of line numbers, one bit each (a million-line batch: 125 KB).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineSet(Vec<u64>);

impl LineSet {
    /// Add `line`.
    pub fn insert(&mut self, line: u64) {
        let (word, bit) = ((line / 64) as usize, line % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    /// Whether `line` is in the set.
    pub fn contains(&self, line: u64) -> bool {
        let (word, bit) = ((line / 64) as usize, line % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
}

/// A file's bytes, read as they are needed.
pub type Reader = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// The bytes of files, by id. Reads are streams of a whole file or of a
/// byte range, so that a store need not be a local disk.
#[async_trait::async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Scratch space for files being written (uploads, batch outputs).
    fn scratch_dir(&self) -> &Path;
    /// Make the finished scratch file `src` the content of `id`, durably.
    fn put(&self, id: &str, src: &Path) -> io::Result<()>;
    /// Read a file, or the bytes `range` of it (a range past the end reads
    /// what there is). A missing file is `NotFound`.
    async fn read(&self, id: &str, range: Option<std::ops::Range<u64>>) -> io::Result<Reader>;
    /// Remove a file (no error if it is gone already).
    fn remove(&self, id: &str) -> io::Result<()>;
    /// Every stored file, with when it was written (to find files a crash
    /// left without a record, and to leave alone those just written).
    fn stored(&self) -> io::Result<Vec<Stored>>;
}

/// A stored file, as [`FileStore::stored`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its id.
    pub id: String,
    /// When its content was written.
    pub written: std::time::SystemTime,
}
