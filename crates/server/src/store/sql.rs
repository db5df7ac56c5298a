//! What the SQL stores share: the column lists, the status conditions the
//! lifecycle dictates, and the decoding of a row into a record, for any
//! backend's rows ([`Columns`]).

use crate::lifecycle;
use crate::objects::{BatchRecord, FileRecord, Stamps, Status, Usage};

use super::{Event, ResultRow, StoreError, StoreResult, UsageRow};

/// What a slice of newly recorded results adds to its batch's counts.
#[derive(Default)]
pub(super) struct Tally {
    /// 2xx responses.
    pub completed: i64,
    /// The others.
    pub failed: i64,
    /// Their tokens.
    pub usage: Usage,
}

impl Tally {
    /// Count one newly recorded result.
    pub fn add(&mut self, r: &ResultRow) {
        if r.ok {
            self.completed += 1;
        } else {
            self.failed += 1;
        }
        self.usage.add(&r.usage);
    }
}

/// A batch row's columns, in the order [`batch_from`] reads them.
pub(super) const BATCH_COLUMNS: &str = "id, tenant, endpoint, model, input_file_id, completion_window, status, \
    output_file_id, error_file_id, created_at, expires_at, in_progress_at, finalizing_at, \
    completed_at, failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed, \
    metadata, errors, input_tokens, cached_tokens, output_tokens, reasoning_tokens, total_tokens, \
    output_expires_after";

/// What the other `in_progress` batches of batch `?1`'s tenant still hold
/// of their enqueued tokens (for model `?2` only, unless it is NULL): each
/// in proportion to its requests not yet finished.
pub(super) const ENQUEUED_SQLITE: &str = "SELECT COALESCE(SUM(enqueued_tokens * (total - completed - failed) / total), 0) \
    FROM batches WHERE tenant = (SELECT tenant FROM batches WHERE id = ?1) AND id <> ?1 \
    AND status = 'in_progress' AND total > 0 AND (?2 IS NULL OR model = ?2)";

/// [`ENQUEUED_SQLITE`] in PostgreSQL's dialect.
#[cfg(feature = "postgres")]
pub(super) const ENQUEUED_POSTGRES: &str = "SELECT COALESCE(SUM(enqueued_tokens * (total - completed - failed) / total), 0)::bigint \
    FROM batches WHERE tenant = (SELECT tenant FROM batches WHERE id = $1) AND id <> $1 \
    AND status = 'in_progress' AND total > 0 AND ($2::text IS NULL OR model = $2)";

/// Add batch `?1`'s end to the webhook outbox: event id `?2`, type `?3`,
/// at `?4` (s), due at `?5` (ms). The same text runs on SQLite and
/// PostgreSQL with `$` for `?`.
pub(super) const ADD_EVENT: &str = "INSERT INTO events (id, tenant, batch_id, type, created_at, attempts, next_at) \
    SELECT ?2, tenant, id, ?3, ?4, 0, ?5 FROM batches WHERE id = ?1";

/// A file row's columns, in the order [`file_from`] reads them.
pub(super) const FILE_COLUMNS: &str =
    "id, tenant, bytes, created_at, expires_at, filename, purpose";

/// `statuses` as an SQL list: `('validating', 'in_progress')`.
pub(super) fn sql_list(statuses: &[Status]) -> String {
    let names: Vec<String> = statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("({})", names.join(", "))
}

/// The `WHERE` condition of a move to `to`: from a status the lifecycle
/// allows, and no other.
pub(super) fn may_become(to: Status) -> String {
    format!("status IN {}", sql_list(lifecycle::sources(to)))
}

/// The statuses that are not final, as an SQL list: `('validating', ...)`.
pub(super) fn unfinished() -> &'static str {
    static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let open: Vec<Status> = Status::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        sql_list(&open)
    });
    &LIST
}

/// The stamp column a batch's end sets; an error for a status a batch
/// cannot end in by `finish` (failed is validation's).
pub(super) fn finish_stamp(status: Status) -> StoreResult<&'static str> {
    match (status.is_terminal(), lifecycle::stamp(status)) {
        (true, Some(stamp)) if status != Status::Failed => Ok(stamp),
        _ => Err(StoreError::Corrupt(format!(
            "a batch cannot finish as '{}'",
            status.as_str()
        ))),
    }
}

/// A lease period in milliseconds, for a column.
pub(super) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A count or offset for a signed 64-bit column (SQL has no unsigned one).
pub(super) fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// JSON text for a column.
pub(super) fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A row of any backend, read by column index.
pub(super) trait Columns {
    /// The backend's error.
    type Error;
    /// A text column.
    fn text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    /// An integer column.
    fn int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    /// An error for a value that is there but wrong.
    fn corrupt(&self, i: usize, what: String) -> Self::Error;
}

fn text<R: Columns>(r: &R, i: usize) -> Result<String, R::Error> {
    r.text(i)?
        .ok_or_else(|| r.corrupt(i, "NULL where a text is required".into()))
}

fn int<R: Columns>(r: &R, i: usize) -> Result<i64, R::Error> {
    r.int(i)?
        .ok_or_else(|| r.corrupt(i, "NULL where a number is required".into()))
}

fn count<R: Columns>(r: &R, i: usize) -> Result<u64, R::Error> {
    int(r, i).map(|v| v.max(0) as u64)
}

fn json<R: Columns, T: serde::de::DeserializeOwned>(
    r: &R,
    i: usize,
    what: &str,
) -> Result<Option<T>, R::Error> {
    r.text(i)?
        .map(|m| serde_json::from_str(&m).map_err(|e| r.corrupt(i, format!("{what}: {e}"))))
        .transpose()
}

/// A file record from a row of [`FILE_COLUMNS`].
pub(super) fn file_from<R: Columns>(r: &R) -> Result<FileRecord, R::Error> {
    Ok(FileRecord {
        id: text(r, 0)?,
        tenant: text(r, 1)?,
        bytes: count(r, 2)?,
        created_at: int(r, 3)?,
        expires_at: r.int(4)?,
        filename: text(r, 5)?,
        purpose: text(r, 6)?,
    })
}

/// Usage of the batches that ended in [`?1`, `?2`), by tenant and model,
/// in the order [`usage_from`] reads it (`$` for `?` and `::bigint` sums
/// on PostgreSQL).
pub(super) const USAGE: &str = "SELECT tenant, model, COUNT(*), SUM(completed)::bigint, SUM(failed)::bigint, \
    SUM(input_tokens)::bigint, SUM(cached_tokens)::bigint, SUM(output_tokens)::bigint, \
    SUM(reasoning_tokens)::bigint, SUM(total_tokens)::bigint FROM batches \
    WHERE COALESCE(completed_at, failed_at, expired_at, cancelled_at) >= ?1 \
    AND COALESCE(completed_at, failed_at, expired_at, cancelled_at) < ?2 \
    GROUP BY tenant, model ORDER BY tenant, model";

/// A row of [`USAGE`].
pub(super) fn usage_from<R: Columns>(r: &R) -> Result<UsageRow, R::Error> {
    Ok(UsageRow {
        tenant: text(r, 0)?,
        model: r.text(1)?,
        batches: count(r, 2)?,
        completed: count(r, 3)?,
        failed: count(r, 4)?,
        usage: Usage {
            input_tokens: count(r, 5)?,
            cached_tokens: count(r, 6)?,
            output_tokens: count(r, 7)?,
            reasoning_tokens: count(r, 8)?,
            total_tokens: count(r, 9)?,
        },
    })
}

/// An event row's columns, in the order [`event_from`] reads them.
pub(super) const EVENT_COLUMNS: &str = "id, tenant, batch_id, type, created_at, attempts";

/// A webhook event from a row of [`EVENT_COLUMNS`].
pub(super) fn event_from<R: Columns>(r: &R) -> Result<Event, R::Error> {
    Ok(Event {
        id: text(r, 0)?,
        tenant: text(r, 1)?,
        batch_id: text(r, 2)?,
        kind: text(r, 3)?,
        created_at: int(r, 4)?,
        attempts: u32::try_from(count(r, 5)?).unwrap_or(u32::MAX),
    })
}

/// A batch record from a row of [`BATCH_COLUMNS`].
pub(super) fn batch_from<R: Columns>(r: &R) -> Result<BatchRecord, R::Error> {
    let status = text(r, 6)?;
    Ok(BatchRecord {
        id: text(r, 0)?,
        tenant: text(r, 1)?,
        endpoint: text(r, 2)?,
        model: r.text(3)?,
        input_file_id: text(r, 4)?,
        completion_window: text(r, 5)?,
        status: Status::parse(&status)
            .ok_or_else(|| r.corrupt(6, format!("no status '{status}'")))?,
        output_file_id: r.text(7)?,
        error_file_id: r.text(8)?,
        created_at: int(r, 9)?,
        expires_at: int(r, 10)?,
        stamps: Stamps {
            in_progress: r.int(11)?,
            finalizing: r.int(12)?,
            completed: r.int(13)?,
            failed: r.int(14)?,
            expired: r.int(15)?,
            cancelling: r.int(16)?,
            cancelled: r.int(17)?,
        },
        total: count(r, 18)?,
        completed: count(r, 19)?,
        failed: count(r, 20)?,
        metadata: json(r, 21, "metadata")?,
        errors: json(r, 22, "errors")?,
        usage: Usage {
            input_tokens: count(r, 23)?,
            cached_tokens: count(r, 24)?,
            output_tokens: count(r, 25)?,
            reasoning_tokens: count(r, 26)?,
            total_tokens: count(r, 27)?,
        },
        output_expires_after: r.int(28)?,
    })
}
