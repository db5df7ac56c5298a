//! The job store in SQLite (WAL): all of the server's SQL is in this file.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::sql::{
    self, BATCH_COLUMNS, EVENT_COLUMNS, FILE_COLUMNS, may_become, to_json, unfinished,
};
use super::{
    Cancel, Chunk, Claim, Event, Finish, JobStore, Lease, LineSet, ListError, Listed, Page,
    Renewed, ResultRow, Start, Started, StoreError, StoreResult, Unit, UsageRow,
};
use crate::objects::{BatchError, BatchRecord, FileRecord, Status, Usage};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    tenant     TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant, seq);
CREATE INDEX IF NOT EXISTS files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT NOT NULL UNIQUE,
    tenant               TEXT NOT NULL,
    endpoint             TEXT NOT NULL,
    model                TEXT,
    input_file_id        TEXT NOT NULL,
    completion_window    TEXT NOT NULL,
    status               TEXT NOT NULL,
    output_file_id       TEXT,
    error_file_id        TEXT,
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    in_progress_at       INTEGER,
    finalizing_at        INTEGER,
    completed_at         INTEGER,
    failed_at            INTEGER,
    expired_at           INTEGER,
    cancelling_at        INTEGER,
    cancelled_at         INTEGER,
    total                INTEGER NOT NULL DEFAULT 0,
    completed            INTEGER NOT NULL DEFAULT 0,
    failed               INTEGER NOT NULL DEFAULT 0,
    metadata             TEXT,
    errors               TEXT,
    input_tokens         INTEGER NOT NULL DEFAULT 0,
    cached_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens        INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens     INTEGER NOT NULL DEFAULT 0,
    total_tokens         INTEGER NOT NULL DEFAULT 0,
    output_expires_after INTEGER,
    enqueued_tokens      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_by_tenant ON batches (tenant, seq);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status);
CREATE TABLE IF NOT EXISTS results (
    batch_id TEXT NOT NULL,
    line     INTEGER NOT NULL,
    ok       INTEGER NOT NULL,
    body     TEXT NOT NULL,
    PRIMARY KEY (batch_id, line)
) WITHOUT ROWID;
-- A batch's units of work and their leases: unit 0 is the batch itself
-- (validation, finalization), 1.. its chunks. Lease times are in ms.
CREATE TABLE IF NOT EXISTS units (
    batch_id    TEXT NOT NULL,
    unit        INTEGER NOT NULL,
    first_line  INTEGER NOT NULL DEFAULT 1,
    end_line    INTEGER NOT NULL DEFAULT 0,
    start_byte  INTEGER NOT NULL DEFAULT 0,
    end_byte    INTEGER NOT NULL DEFAULT 0,
    done        INTEGER NOT NULL DEFAULT 0,
    owner       TEXT,
    epoch       INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, unit)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS units_leased ON units (owner) WHERE owner IS NOT NULL;
-- The webhook outbox: a batch's end, until its event is delivered.
-- next_at is in ms.
CREATE TABLE IF NOT EXISTS events (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    batch_id   TEXT NOT NULL,
    type       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    last_error TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_due ON events (next_at);
";

/// Batches from before units existed: the batch unit for each unfinished
/// one, and one chunk of the whole input for each that was running.
fn add_missing_units(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT OR IGNORE INTO units (batch_id, unit) \
             SELECT id, 0 FROM batches WHERE status IN {}",
            unfinished()
        ),
        [],
    )?;
    conn.execute(
        "INSERT OR IGNORE INTO units (batch_id, unit, first_line, end_line, start_byte, end_byte) \
         SELECT id, 1, 1, ?1, 0, ?1 FROM batches b WHERE status = 'in_progress' \
         AND NOT EXISTS (SELECT 1 FROM units u WHERE u.batch_id = b.id AND u.unit > 0)",
        params![i64::MAX],
    )?;
    Ok(())
}

/// Add a column a database made by an older batchkit lacks (SQLite's
/// `CREATE TABLE IF NOT EXISTS` leaves an existing table as it was).
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
        params![column],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// Put the end of batch `id` (as `status`, at `at`) in the webhook
/// outbox, due now.
fn add_event(tx: &Transaction<'_>, id: &str, status: Status, at: i64) -> StoreResult<()> {
    tx.execute(
        sql::ADD_EVENT,
        params![
            id,
            crate::ids::new_id("evt_", 32),
            super::event_kind(status),
            at,
            crate::ids::now_ms()
        ],
    )?;
    Ok(())
}

/// Make a write only while `lease` is still held: same owner, same epoch.
fn fence(tx: &Transaction<'_>, lease: &Lease) -> StoreResult<()> {
    let held = tx
        .query_row(
            "SELECT 1 FROM units WHERE batch_id = ?1 AND unit = ?2 AND owner = ?3 AND epoch = ?4",
            params![lease.batch_id, lease.unit.0, lease.owner, lease.epoch],
            |_| Ok(()),
        )
        .optional()?;
    held.ok_or_else(|| StoreError::Fenced(lease.to_string()))
}

/// `in_progress` -> `finalizing`, in a transaction; whether it moved.
fn finalizing_in(tx: &Transaction<'_>, id: &str, now: i64) -> StoreResult<bool> {
    let n = tx.execute(
        &format!(
            "UPDATE batches SET status = 'finalizing', finalizing_at = ?2 WHERE id = ?1 AND {}",
            may_become(Status::Finalizing)
        ),
        params![id, now],
    )?;
    Ok(n > 0)
}

/// SQLite's errors become the store's, which name no backend.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::failed(e)
    }
}

/// The job store in SQLite: its calls run on tokio's blocking threads, off
/// the async ones, one at a time on one connection.
pub struct SqliteStore {
    db: Arc<Db>,
    exclusive: bool,
}

impl SqliteStore {
    /// Open (creating) the database at `path`, for one server.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        Ok(SqliteStore {
            db: Arc::new(Db::open(path)?),
            exclusive: true,
        })
    }

    /// The same store, used by several engines at once (several nodes in
    /// one test process): the leases held at an engine's start are then
    /// not all its predecessor's.
    #[cfg(test)]
    pub(crate) fn shared(self) -> SqliteStore {
        SqliteStore {
            exclusive: false,
            ..self
        }
    }

    /// Run `f` on the database on a blocking thread.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(StoreError::failed)?
    }
}

/// SQLite behind one connection, called synchronously.
struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Open (creating) the database at `path`.
    fn open(path: &Path) -> StoreResult<Db> {
        let conn = Connection::open(path)?;
        // WAL with NORMAL sync survives a killed process with every
        // committed transaction; a power cut may lose the last few, which
        // the engine then redoes (results are recorded at most once).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        add_missing_units(&conn)?;
        add_column(
            &conn,
            "batches",
            "enqueued_tokens",
            "INTEGER NOT NULL DEFAULT 0",
        )?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open
        // (rusqlite rolls back on drop), so the connection is still sound.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl sql::Columns for Row<'_> {
    type Error = rusqlite::Error;

    fn text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }

    fn int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }

    fn corrupt(&self, i: usize, what: String) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    }
}

fn file_from(row: &Row<'_>) -> rusqlite::Result<FileRecord> {
    sql::file_from(row)
}

fn batch_from(row: &Row<'_>) -> rusqlite::Result<BatchRecord> {
    sql::batch_from(row)
}

/// One page of `table` for `tenant` (with an extra filter), newest first
/// unless ascending: fetches one more than asked to know whether more follow.
fn page_of<T>(
    conn: &Connection,
    table: &str,
    columns: &str,
    tenant: &str,
    filter: Option<(&str, &str)>,
    page: &Page<'_>,
    from: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Listed<T>, ListError> {
    let mut sql = format!("SELECT {columns} FROM {table} WHERE tenant = ?1");
    let mut args: Vec<String> = vec![tenant.to_owned()];
    if let Some((column, value)) = filter {
        args.push(value.to_owned());
        sql.push_str(&format!(" AND {column} = ?{}", args.len()));
    }
    let (cmp, order) = if page.ascending {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    if let Some(after) = page.after {
        let seq: Option<i64> = conn
            .query_row(
                &format!("SELECT seq FROM {table} WHERE id = ?1 AND tenant = ?2"),
                params![after, tenant],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::from)?;
        let seq = seq.ok_or_else(|| ListError::UnknownAfter(after.to_owned()))?;
        args.push(seq.to_string());
        sql.push_str(&format!(" AND seq {cmp} CAST(?{} AS INTEGER)", args.len()));
    }
    sql.push_str(&format!(" ORDER BY seq {order} LIMIT {}", page.limit + 1));
    let mut stmt = conn.prepare(&sql).map_err(StoreError::from)?;
    let mut items = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), from)
        .map_err(StoreError::from)?
        .collect::<rusqlite::Result<Vec<T>>>()
        .map_err(StoreError::from)?;
    let more = items.len() > page.limit;
    items.truncate(page.limit);
    Ok((items, more))
}

fn insert_file_in(conn: &Connection, f: &FileRecord) -> rusqlite::Result<()> {
    conn.execute(
        &format!("INSERT INTO files ({FILE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            f.id,
            f.tenant,
            f.bytes as i64,
            f.created_at,
            f.expires_at,
            f.filename,
            f.purpose
        ],
    )?;
    Ok(())
}

impl Db {
    fn insert_file(&self, f: &FileRecord) -> StoreResult<()> {
        Ok(insert_file_in(&self.conn(), f)?)
    }

    fn file(&self, tenant: &str, id: &str) -> StoreResult<Option<FileRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1 AND tenant = ?2"),
                params![id, tenant],
                file_from,
            )
            .optional()?)
    }

    fn list_files(
        &self,
        tenant: &str,
        purpose: Option<&str>,
        page: &Page<'_>,
    ) -> Result<Listed<FileRecord>, ListError> {
        let filter = purpose.map(|p| ("purpose", p));
        page_of(
            &self.conn(),
            "files",
            FILE_COLUMNS,
            tenant,
            filter,
            page,
            file_from,
        )
    }

    fn delete_file(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let n = self.conn().execute(
            "DELETE FROM files WHERE id = ?1 AND tenant = ?2",
            params![id, tenant],
        )?;
        Ok(n > 0)
    }

    fn expired_files(&self, now: i64) -> StoreResult<Vec<FileRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?1"
        ))?;
        let rows = stmt.query_map(params![now], file_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn file_needed(&self, id: &str) -> StoreResult<bool> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT 1 FROM files WHERE id = ?1 UNION ALL \
                     SELECT 1 FROM batches WHERE input_file_id = ?1 AND status IN {} LIMIT 1",
                    unfinished()
                ),
                params![id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn insert_batch(&self, b: &BatchRecord) -> StoreResult<()> {
        let metadata = b.metadata.as_ref().map(to_json).transpose()?;
        let errors = b.errors.as_ref().map(to_json).transpose()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO units (batch_id, unit) VALUES (?1, 0)",
            params![b.id],
        )?;
        tx.execute(
            "INSERT INTO batches (id, tenant, endpoint, model, input_file_id, completion_window, status, \
             created_at, expires_at, metadata, output_expires_after, errors) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                b.id,
                b.tenant,
                b.endpoint,
                b.model,
                b.input_file_id,
                b.completion_window,
                b.status.as_str(),
                b.created_at,
                b.expires_at,
                metadata,
                b.output_expires_after,
                errors
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn batch(&self, tenant: &str, id: &str) -> StoreResult<Option<BatchRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1 AND tenant = ?2"),
                params![id, tenant],
                batch_from,
            )
            .optional()?)
    }

    fn batch_by_id(&self, id: &str) -> StoreResult<Option<BatchRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1"),
                params![id],
                batch_from,
            )
            .optional()?)
    }

    fn list_batches(
        &self,
        tenant: &str,
        page: &Page<'_>,
    ) -> Result<Listed<BatchRecord>, ListError> {
        page_of(
            &self.conn(),
            "batches",
            BATCH_COLUMNS,
            tenant,
            None,
            page,
            batch_from,
        )
    }

    fn cancel(&self, tenant: &str, id: &str, now: i64) -> StoreResult<Cancel> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "UPDATE batches SET status = 'cancelling', cancelling_at = ?3 \
                 WHERE id = ?1 AND tenant = ?2 AND {}",
                may_become(Status::Cancelling)
            ),
            params![id, tenant, now],
        )?;
        let batch = tx
            .query_row(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1 AND tenant = ?2"),
                params![id, tenant],
                batch_from,
            )
            .optional()?;
        tx.commit()?;
        Ok(match batch {
            None => Cancel::NotFound,
            Some(b) if b.status == Status::Cancelling => Cancel::Cancelling(Box::new(b)),
            Some(b) => Cancel::Unchanged(Box::new(b)),
        })
    }

    fn unfinished_batches(&self, tenant: &str) -> StoreResult<u64> {
        let n: i64 = self.conn().query_row(
            &format!(
                "SELECT COUNT(*) FROM batches WHERE tenant = ?1 AND status IN {}",
                unfinished()
            ),
            params![tenant],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    fn count_by_status(&self) -> StoreResult<Vec<(Status, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM batches GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (s, n) = row?;
            if let Some(s) = Status::parse(&s) {
                out.push((s, n as u64));
            }
        }
        Ok(out)
    }

    fn claim(&self, owner: &str, lease: Duration, busy: &[String]) -> StoreResult<Option<Claim>> {
        // The store's clock, which for SQLite is this one machine's.
        let (now, now_s) = (crate::ids::now_ms(), crate::ids::now());
        let busy = to_json(&busy)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // The batch unit first (validations and finalizations are short and
        // unblock the rest), then chunks; oldest batch first.
        let whole: Option<(String, u32)> = tx
            .query_row(
                "SELECT u.batch_id, 0 FROM units u JOIN batches b ON b.id = u.batch_id \
                 WHERE u.unit = 0 AND u.lease_until < ?1 \
                   AND (b.status IN ('validating', 'finalizing', 'cancelling') \
                        OR (b.status = 'in_progress' AND b.expires_at <= ?2)) \
                   AND (b.status = 'validating' OR NOT EXISTS (SELECT 1 FROM units c \
                        WHERE c.batch_id = u.batch_id AND c.unit > 0 AND c.done = 0 \
                          AND c.lease_until >= ?1)) \
                 ORDER BY b.seq LIMIT 1",
                params![now, now_s],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let found = match whole {
            Some(w) => Some(w),
            None => tx
                .query_row(
                    "SELECT c.batch_id, c.unit FROM units c JOIN batches b ON b.id = c.batch_id \
                     WHERE c.unit > 0 AND c.done = 0 AND c.lease_until < ?1 \
                       AND b.status = 'in_progress' AND b.expires_at > ?2 \
                       AND c.batch_id NOT IN (SELECT value FROM json_each(?3)) \
                     ORDER BY b.seq, c.unit LIMIT 1",
                    params![now, now_s, busy],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
        };
        let Some((batch_id, unit)) = found else {
            return Ok(None);
        };
        let (epoch, [first_line, end_line, start, end]) = tx.query_row(
            "UPDATE units SET owner = ?3, epoch = epoch + 1, lease_until = ?4 \
             WHERE batch_id = ?1 AND unit = ?2 \
             RETURNING epoch, first_line, end_line, start_byte, end_byte",
            params![
                batch_id,
                unit,
                owner,
                now.saturating_add(sql::millis(lease))
            ],
            |r| {
                let u = |i| r.get::<_, i64>(i).map(|v| v as u64);
                Ok((r.get::<_, i64>(0)?, [u(1)?, u(2)?, u(3)?, u(4)?]))
            },
        )?;
        let batch = tx.query_row(
            &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1"),
            params![batch_id],
            batch_from,
        )?;
        tx.commit()?;
        let unit = Unit(unit);
        Ok(Some(Claim {
            chunk: unit.is_chunk().then_some(Chunk {
                unit,
                first_line,
                end_line,
                start,
                end,
            }),
            lease: Lease {
                batch_id,
                unit,
                owner: owner.to_owned(),
                epoch,
            },
            batch,
        }))
    }

    fn renew(&self, leases: &[Lease], lease: Duration) -> StoreResult<Vec<Renewed>> {
        let until = crate::ids::now_ms().saturating_add(sql::millis(lease));
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(leases.len());
        {
            let mut renew = tx.prepare_cached(
                "UPDATE units SET lease_until = ?5 \
                 WHERE batch_id = ?1 AND unit = ?2 AND owner = ?3 AND epoch = ?4",
            )?;
            let mut status = tx.prepare_cached("SELECT status FROM batches WHERE id = ?1")?;
            for l in leases {
                let held =
                    renew.execute(params![l.batch_id, l.unit.0, l.owner, l.epoch, until])? > 0;
                let now: Option<String> = if held {
                    status
                        .query_row(params![l.batch_id], |r| r.get(0))
                        .optional()?
                } else {
                    None
                };
                out.push(match now.as_deref().and_then(Status::parse) {
                    Some(s) => Renewed::Held(s),
                    None => Renewed::Lost,
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn release(&self, l: &Lease) -> StoreResult<()> {
        self.conn().execute(
            "UPDATE units SET owner = NULL, lease_until = 0 \
             WHERE batch_id = ?1 AND unit = ?2 AND owner = ?3 AND epoch = ?4",
            params![l.batch_id, l.unit.0, l.owner, l.epoch],
        )?;
        Ok(())
    }

    fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
        let n = self.conn().execute(
            "UPDATE units SET owner = NULL, lease_until = 0 \
             WHERE owner IS NOT NULL AND (?1 IS NULL OR owner = ?1)",
            params![owner],
        )?;
        Ok(n as u64)
    }

    fn start(&self, lease: &Lease, start: &Start, now: i64) -> StoreResult<Started> {
        let (id, chunks) = (&lease.batch_id, &start.chunks);
        let mut conn = self.conn();
        // One writer at a time (the connection is the server's only one):
        // no other start can slip between the check and the change.
        let tx = conn.transaction()?;
        fence(&tx, lease)?;
        for limit in &start.limits {
            let held: i64 =
                tx.query_row(sql::ENQUEUED_SQLITE, params![id, limit.model], |r| r.get(0))?;
            let held = held.max(0) as u64;
            if held.saturating_add(start.tokens) > limit.limit {
                return Ok(Started::OverLimit {
                    limit: limit.clone(),
                    held,
                });
            }
        }
        let n = tx.execute(
            &format!(
                "UPDATE batches SET status = 'in_progress', in_progress_at = ?2, total = ?3, model = ?4, \
                 enqueued_tokens = ?5 WHERE id = ?1 AND {}",
                may_become(Status::InProgress)
            ),
            params![
                id,
                now,
                start.total as i64,
                start.model,
                sql::signed(start.tokens)
            ],
        )?;
        if n == 0 {
            return Ok(Started::NotValidating);
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO units (batch_id, unit, first_line, end_line, start_byte, end_byte) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for c in chunks {
                let n = sql::signed;
                insert.execute(params![
                    id,
                    c.unit.0,
                    n(c.first_line),
                    n(c.end_line),
                    n(c.start),
                    n(c.end)
                ])?;
            }
        }
        if chunks.is_empty() {
            finalizing_in(&tx, id, now)?;
        }
        tx.execute(
            "UPDATE units SET owner = NULL, lease_until = 0 WHERE batch_id = ?1 AND unit = 0",
            params![id],
        )?;
        tx.commit()?;
        Ok(Started::Started)
    }

    fn fail(
        &self,
        lease: &Lease,
        total: u64,
        errors: &[BatchError],
        now: i64,
    ) -> StoreResult<bool> {
        let errors = to_json(&errors)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        fence(&tx, lease)?;
        let n = tx.execute(
            &format!(
                "UPDATE batches SET status = 'failed', failed_at = ?2, errors = ?3, total = ?4 \
                 WHERE id = ?1 AND {}",
                may_become(Status::Failed)
            ),
            params![lease.batch_id, now, errors, total as i64],
        )?;
        if n > 0 {
            tx.execute(
                "DELETE FROM units WHERE batch_id = ?1",
                params![lease.batch_id],
            )?;
            add_event(&tx, &lease.batch_id, Status::Failed, now)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    fn record(&self, lease: &Lease, rows: &[ResultRow]) -> StoreResult<()> {
        let id = &lease.batch_id;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        fence(&tx, lease)?;
        let mut tally = sql::Tally::default();
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO results (batch_id, line, ok, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in rows {
                if insert.execute(params![id, r.line as i64, r.ok, r.body])? > 0 {
                    tally.add(r);
                }
            }
        }
        tx.execute(
            "UPDATE batches SET completed = completed + ?2, failed = failed + ?3, \
             input_tokens = input_tokens + ?4, cached_tokens = cached_tokens + ?5, \
             output_tokens = output_tokens + ?6, reasoning_tokens = reasoning_tokens + ?7, \
             total_tokens = total_tokens + ?8 WHERE id = ?1",
            params![
                id,
                tally.completed,
                tally.failed,
                tally.usage.input_tokens as i64,
                tally.usage.cached_tokens as i64,
                tally.usage.output_tokens as i64,
                tally.usage.reasoning_tokens as i64,
                tally.usage.total_tokens as i64
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn chunk_done(&self, lease: &Lease, now: i64) -> StoreResult<bool> {
        let id = &lease.batch_id;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        fence(&tx, lease)?;
        tx.execute(
            "UPDATE units SET done = 1, owner = NULL, lease_until = 0 \
             WHERE batch_id = ?1 AND unit = ?2",
            params![id, lease.unit.0],
        )?;
        let left: i64 = tx.query_row(
            "SELECT COUNT(*) FROM units WHERE batch_id = ?1 AND unit > 0 AND done = 0",
            params![id],
            |r| r.get(0),
        )?;
        let moved = left == 0 && finalizing_in(&tx, id, now)?;
        tx.commit()?;
        Ok(moved)
    }

    fn recorded_lines(&self, id: &str, lines: Range<u64>) -> StoreResult<LineSet> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT line FROM results WHERE batch_id = ?1 AND line >= ?2 AND line < ?3",
        )?;
        let end = i64::try_from(lines.end).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![id, lines.start as i64, end])?;
        let mut set = LineSet::from(lines.start);
        while let Some(row) = rows.next()? {
            set.insert(row.get::<_, i64>(0)? as u64);
        }
        Ok(set)
    }

    fn results_after(
        &self,
        id: &str,
        after_line: u64,
        limit: usize,
    ) -> StoreResult<Vec<ResultRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT line, ok, body FROM results WHERE batch_id = ?1 AND line > ?2 ORDER BY line LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![id, after_line as i64, limit as i64], |r| {
            Ok(ResultRow {
                line: r.get::<_, i64>(0)? as u64,
                ok: r.get(1)?,
                body: r.get(2)?,
                usage: Usage::default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn finish(&self, lease: &Lease, f: &Finish) -> StoreResult<bool> {
        let id = &lease.batch_id;
        let stamp = sql::finish_stamp(f.status)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        fence(&tx, lease)?;
        let n = tx.execute(
            &format!(
                "UPDATE batches SET status = ?2, {stamp} = ?3, output_file_id = ?4, error_file_id = ?5, \
                 completed = ?6, failed = ?7, total = ?8 WHERE id = ?1 AND {}",
                may_become(f.status)
            ),
            params![
                id,
                f.status.as_str(),
                f.at,
                f.output.as_ref().map(|o| &o.id),
                f.error.as_ref().map(|e| &e.id),
                f.completed as i64,
                f.failed as i64,
                f.total as i64
            ],
        )?;
        if n == 0 {
            return Ok(false);
        }
        for file in f.output.iter().chain(&f.error) {
            insert_file_in(&tx, file)?;
        }
        tx.execute("DELETE FROM results WHERE batch_id = ?1", params![id])?;
        tx.execute("DELETE FROM units WHERE batch_id = ?1", params![id])?;
        add_event(&tx, id, f.status, f.at)?;
        tx.commit()?;
        Ok(true)
    }

    fn due_events(&self, now_ms: i64, hold: Duration, limit: usize) -> StoreResult<Vec<Event>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let events = {
            let mut due = tx.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE next_at <= ?1 ORDER BY next_at LIMIT ?2"
            ))?;
            let rows = due.query_map(params![now_ms, limit as i64], |r| sql::event_from(r))?;
            rows.collect::<rusqlite::Result<Vec<Event>>>()?
        };
        let until = now_ms.saturating_add(hold.as_millis() as i64);
        for e in &events {
            tx.execute(
                "UPDATE events SET next_at = ?2 WHERE id = ?1",
                params![e.id, until],
            )?;
        }
        tx.commit()?;
        Ok(events)
    }
}

/// A [`Page`] that owns its `after`, to cross to a blocking thread.
struct OwnedPage {
    after: Option<String>,
    limit: usize,
    ascending: bool,
}

impl OwnedPage {
    fn of(page: &Page<'_>) -> OwnedPage {
        OwnedPage {
            after: page.after.map(str::to_owned),
            limit: page.limit,
            ascending: page.ascending,
        }
    }

    fn page(&self) -> Page<'_> {
        Page {
            after: self.after.as_deref(),
            limit: self.limit,
            ascending: self.ascending,
        }
    }
}

/// Each call copies its arguments and runs on a blocking thread.
#[async_trait::async_trait]
impl JobStore for SqliteStore {
    /// The server opens its database only under the data directory's lock.
    fn exclusive(&self) -> bool {
        self.exclusive
    }

    async fn insert_file(&self, file: &FileRecord) -> StoreResult<()> {
        let file = file.clone();
        self.run(move |db| db.insert_file(&file)).await
    }

    async fn file(&self, tenant: &str, id: &str) -> StoreResult<Option<FileRecord>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.run(move |db| db.file(&tenant, &id)).await
    }

    async fn list_files(
        &self,
        tenant: &str,
        purpose: Option<&str>,
        page: &Page<'_>,
    ) -> Result<Listed<FileRecord>, ListError> {
        let (tenant, purpose) = (tenant.to_owned(), purpose.map(str::to_owned));
        let page = OwnedPage::of(page);
        self.run(move |db| Ok(db.list_files(&tenant, purpose.as_deref(), &page.page())))
            .await?
    }

    async fn delete_file(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.run(move |db| db.delete_file(&tenant, &id)).await
    }

    async fn expired_files(&self, now: i64) -> StoreResult<Vec<FileRecord>> {
        self.run(move |db| db.expired_files(now)).await
    }

    async fn file_needed(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.run(move |db| db.file_needed(&id)).await
    }

    async fn insert_batch(&self, batch: &BatchRecord) -> StoreResult<()> {
        let batch = batch.clone();
        self.run(move |db| db.insert_batch(&batch)).await
    }

    async fn batch(&self, tenant: &str, id: &str) -> StoreResult<Option<BatchRecord>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.run(move |db| db.batch(&tenant, &id)).await
    }

    async fn batch_by_id(&self, id: &str) -> StoreResult<Option<BatchRecord>> {
        let id = id.to_owned();
        self.run(move |db| db.batch_by_id(&id)).await
    }

    async fn list_batches(
        &self,
        tenant: &str,
        page: &Page<'_>,
    ) -> Result<Listed<BatchRecord>, ListError> {
        let tenant = tenant.to_owned();
        let page = OwnedPage::of(page);
        self.run(move |db| Ok(db.list_batches(&tenant, &page.page())))
            .await?
    }

    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> StoreResult<Cancel> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.run(move |db| db.cancel(&tenant, &id, now)).await
    }

    async fn count_by_status(&self) -> StoreResult<Vec<(Status, u64)>> {
        self.run(|db| db.count_by_status()).await
    }

    async fn unfinished_batches(&self, tenant: &str) -> StoreResult<u64> {
        let tenant = tenant.to_owned();
        self.run(move |db| db.unfinished_batches(&tenant)).await
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        busy: &[String],
    ) -> StoreResult<Option<Claim>> {
        let (owner, busy) = (owner.to_owned(), busy.to_vec());
        self.run(move |db| db.claim(&owner, lease, &busy)).await
    }

    async fn renew(&self, leases: &[Lease], lease: Duration) -> StoreResult<Vec<Renewed>> {
        let leases = leases.to_vec();
        self.run(move |db| db.renew(&leases, lease)).await
    }

    async fn release(&self, lease: &Lease) -> StoreResult<()> {
        let lease = lease.clone();
        self.run(move |db| db.release(&lease)).await
    }

    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
        let owner = owner.map(str::to_owned);
        self.run(move |db| db.release_all(owner.as_deref())).await
    }

    async fn start(&self, lease: &Lease, start: &Start, now: i64) -> StoreResult<Started> {
        let (lease, start) = (lease.clone(), start.clone());
        self.run(move |db| db.start(&lease, &start, now)).await
    }

    async fn fail(
        &self,
        lease: &Lease,
        total: u64,
        errors: &[BatchError],
        now: i64,
    ) -> StoreResult<bool> {
        let (lease, errors) = (lease.clone(), errors.to_vec());
        self.run(move |db| db.fail(&lease, total, &errors, now))
            .await
    }

    async fn record(&self, lease: &Lease, rows: &[ResultRow]) -> StoreResult<()> {
        let (lease, rows) = (lease.clone(), rows.to_vec());
        self.run(move |db| db.record(&lease, &rows)).await
    }

    async fn chunk_done(&self, lease: &Lease, now: i64) -> StoreResult<bool> {
        let lease = lease.clone();
        self.run(move |db| db.chunk_done(&lease, now)).await
    }

    async fn recorded_lines(&self, id: &str, lines: Range<u64>) -> StoreResult<LineSet> {
        let id = id.to_owned();
        self.run(move |db| db.recorded_lines(&id, lines)).await
    }

    async fn results_after(
        &self,
        id: &str,
        after_line: u64,
        limit: usize,
    ) -> StoreResult<Vec<ResultRow>> {
        let id = id.to_owned();
        self.run(move |db| db.results_after(&id, after_line, limit))
            .await
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> StoreResult<bool> {
        let (lease, finish) = (lease.clone(), finish.clone());
        self.run(move |db| db.finish(&lease, &finish)).await
    }

    async fn due_events(
        &self,
        now_ms: i64,
        hold: Duration,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        self.run(move |db| db.due_events(now_ms, hold, limit)).await
    }

    async fn event_done(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.run(move |db| {
            db.conn()
                .execute("DELETE FROM events WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
    }

    async fn event_retry(&self, event: &Event, next_ms: i64, why: &str) -> StoreResult<()> {
        let (id, why) = (event.id.clone(), why.to_owned());
        self.run(move |db| {
            db.conn().execute(
                "UPDATE events SET attempts = attempts + 1, next_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next_ms, why],
            )?;
            Ok(())
        })
        .await
    }

    async fn usage(&self, since: i64, until: i64) -> StoreResult<Vec<UsageRow>> {
        self.run(move |db| {
            let conn = db.conn();
            // SQLite has no ::bigint; its sums of integers are integers.
            let sql = sql::USAGE.replace("::bigint", "");
            let mut q = conn.prepare_cached(&sql)?;
            let rows = q.query_map(params![since, until], |r| sql::usage_from(r))?;
            Ok(rows.collect::<rusqlite::Result<Vec<UsageRow>>>()?)
        })
        .await
    }

    async fn pending_events(&self) -> StoreResult<u64> {
        self.run(|db| {
            let n: i64 = db
                .conn()
                .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database made before batches had `enqueued_tokens` gains it.
    #[test]
    fn an_older_database_gains_the_new_columns() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("db");
        let old = SCHEMA.replace(
            "output_expires_after INTEGER,\n    enqueued_tokens      INTEGER NOT NULL DEFAULT 0",
            "output_expires_after INTEGER",
        );
        assert_ne!(old, SCHEMA);
        Connection::open(&path)
            .expect("open")
            .execute_batch(&old)
            .expect("the old schema");
        let db = Db::open(&path).expect("reopened");
        let n: i64 = db
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('batches') WHERE name = 'enqueued_tokens'",
                [],
                |r| r.get(0),
            )
            .expect("columns");
        assert_eq!(n, 1);
        drop(db);
        Db::open(&path).expect("opened again, with nothing to add");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = SqliteStore::open(&dir.path().join("db")).expect("a store");
        super::super::conformance::run(&store).await;
    }

    /// The counts survive a reopen: what a restart reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("db");
        {
            let store = SqliteStore::open(&path).expect("a store");
            super::super::conformance::run(&store).await;
        }
        let store = SqliteStore::open(&path).expect("reopened");
        let b = store
            .batch("t", "batch-rec")
            .await
            .expect("get")
            .expect("found");
        assert_eq!((b.status, b.completed, b.failed), (Status::Completed, 2, 1));
    }
}
