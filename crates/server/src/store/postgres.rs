//! The job store in PostgreSQL, shared by any number of nodes: all of its
//! SQL is in this file (the schema in `postgres/*.sql`).
//!
//! - **Migrations** are embedded and applied at start under an advisory
//!   lock, so nodes may start together; a database whose schema is newer
//!   than this binary knows is refused.
//! - **Claims** lock the candidate unit `FOR UPDATE SKIP LOCKED`: two nodes
//!   claiming at once take different units, never wait for each other.
//! - **Fencing**: a write under a lease first locks the unit's row and
//!   checks its owner and epoch, so a takeover cannot slip in between the
//!   check and the write.
//! - **Lease times** are the database's clock (`now()`), never a node's.
//! - **Wake-ups**: new work and cancels are announced with `NOTIFY` on the
//!   channel `batchkit`; each node `LISTEN`s on a connection of its own
//!   ([`PgStore::events`]) and still polls, in case a notice is missed.

use std::ops::Range;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Transaction};

use super::sql::{
    self, BATCH_COLUMNS, EVENT_COLUMNS, FILE_COLUMNS, may_become, millis, signed, to_json,
    unfinished,
};
use super::{
    Cancel, Chunk, Claim, Event, Finish, JobStore, Lease, LineSet, ListError, Listed, Page,
    Renewed, ResultRow, Start, Started, StoreError, StoreEvent, StoreResult, Unit, UsageRow,
};
use crate::objects::{BatchError, BatchRecord, FileRecord, Status, Usage};

/// The schema, one migration per version, applied in order.
const MIGRATIONS: &[&str] = &[
    include_str!("postgres/0001_init.sql"),
    include_str!("postgres/0002_tenants.sql"),
];

/// The advisory lock migrations run under ("batchkit" in ASCII).
const MIGRATION_LOCK: i64 = 0x6261_7463_686b_6974;

/// The channel work and cancels are announced on.
const CHANNEL: &str = "batchkit";

/// Connections per node.
const POOL_SIZE: usize = 16;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::failed(e)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::failed(e)
    }
}

impl sql::Columns for Row {
    type Error = StoreError;

    fn text(&self, i: usize) -> StoreResult<Option<String>> {
        Ok(self.try_get(i)?)
    }

    fn int(&self, i: usize) -> StoreResult<Option<i64>> {
        Ok(self.try_get(i)?)
    }

    fn corrupt(&self, i: usize, what: String) -> StoreError {
        StoreError::Corrupt(format!("column {i}: {what}"))
    }
}

/// The job store in a PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
}

impl PgStore {
    /// Connect to `url` (`postgres://USER[:PASS]@HOST[:PORT]/DB`) and bring
    /// the schema up to date.
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Schema(format!(
                "'{}' is not a PostgreSQL URL ({e}); give postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                redact(url)
            ))
        })?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(StoreError::failed)?;
        let store = PgStore { pool, config };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<Object> {
        Ok(self.pool.get().await?)
    }

    /// Apply the migrations this database lacks, one node at a time.
    async fn migrate(&self) -> StoreResult<()> {
        let mut c = self.client().await?;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let done = migrate_locked(&mut c).await;
        c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        done
    }
}

async fn migrate_locked(c: &mut Object) -> StoreResult<()> {
    c.batch_execute("CREATE TABLE IF NOT EXISTS batchkit_schema (version INTEGER NOT NULL)")
        .await?;
    let version: i32 = c
        .query_opt("SELECT max(version) FROM batchkit_schema", &[])
        .await?
        .and_then(|r| r.get::<_, Option<i32>>(0))
        .unwrap_or(0);
    let known = MIGRATIONS.len();
    if version as usize > known {
        return Err(StoreError::Schema(format!(
            "the database's schema is version {version}, newer than this batchkit knows (up to {known}): \
             a newer batchkit has used it; run that version, or a newer one, on every node"
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = c.transaction().await?;
        tx.batch_execute(migration).await?;
        tx.execute("DELETE FROM batchkit_schema", &[]).await?;
        tx.execute(
            "INSERT INTO batchkit_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    Ok(())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Put the end of batch `id` (as `status`, at `at`) in the webhook
/// outbox, due now.
async fn add_event(tx: &Transaction<'_>, id: &str, status: Status, at: i64) -> StoreResult<()> {
    static ADD_EVENT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| sql::ADD_EVENT.replace('?', "$"));
    tx.execute(
        ADD_EVENT.as_str(),
        &[
            &id,
            &crate::ids::new_id("evt_", 32),
            &super::event_kind(status),
            &at,
            &crate::ids::now_ms(),
        ],
    )
    .await?;
    Ok(())
}

/// Make a write only while `lease` is still held: the unit's row is
/// locked until the transaction ends, so no takeover slips in.
async fn fence(tx: &Transaction<'_>, lease: &Lease) -> StoreResult<()> {
    let held = tx
        .query_opt(
            "SELECT 1 FROM units WHERE batch_id = $1 AND unit = $2 AND owner = $3 AND epoch = $4 \
             FOR UPDATE",
            &[
                &lease.batch_id,
                &(lease.unit.0 as i32),
                &lease.owner,
                &lease.epoch,
            ],
        )
        .await?;
    held.map(|_| ())
        .ok_or_else(|| StoreError::Fenced(lease.to_string()))
}

async fn notify(tx: &Transaction<'_>, what: &str) -> StoreResult<()> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &what])
        .await?;
    Ok(())
}

/// `in_progress` -> `finalizing`; whether it moved.
async fn finalizing_in(tx: &Transaction<'_>, id: &str, now: i64) -> StoreResult<bool> {
    let n = tx
        .execute(
            &format!(
                "UPDATE batches SET status = 'finalizing', finalizing_at = $2 WHERE id = $1 AND {}",
                may_become(Status::Finalizing)
            ),
            &[&id, &now],
        )
        .await?;
    Ok(n > 0)
}

async fn insert_file_in(tx: &Transaction<'_>, f: &FileRecord) -> StoreResult<()> {
    tx.execute(
        &format!("INSERT INTO files ({FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        &[
            &f.id,
            &f.tenant,
            &signed(f.bytes),
            &f.created_at,
            &f.expires_at,
            &f.filename,
            &f.purpose,
        ],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// The row `sql` finds, if any, as a record.
    async fn one<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        from: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let c = self.client().await?;
        c.query_opt(sql, params)
            .await?
            .as_ref()
            .map(from)
            .transpose()
    }

    /// One page of `table` for `tenant` (with an extra filter), newest
    /// first unless ascending: one more than asked is fetched to know
    /// whether more follow.
    async fn page_of<T>(
        &self,
        table: &str,
        columns: &str,
        tenant: &str,
        filter: Option<(&str, &str)>,
        page: &Page<'_>,
        from: fn(&Row) -> StoreResult<T>,
    ) -> Result<Listed<T>, ListError> {
        let c = self.client().await?;
        let mut sql = format!("SELECT {columns} FROM {table} WHERE tenant = $1");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(tenant.to_owned())];
        if let Some((column, value)) = filter {
            args.push(Box::new(value.to_owned()));
            sql.push_str(&format!(" AND {column} = ${}", args.len()));
        }
        let (cmp, order) = if page.ascending {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        if let Some(after) = page.after {
            let seq: i64 = c
                .query_opt(
                    &format!("SELECT seq FROM {table} WHERE id = $1 AND tenant = $2"),
                    &[&after, &tenant],
                )
                .await
                .map_err(StoreError::from)?
                .map(|r| r.get(0))
                .ok_or_else(|| ListError::UnknownAfter(after.to_owned()))?;
            args.push(Box::new(seq));
            sql.push_str(&format!(" AND seq {cmp} ${}", args.len()));
        }
        sql.push_str(&format!(" ORDER BY seq {order} LIMIT {}", page.limit + 1));
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = c.query(&sql, &params).await.map_err(StoreError::from)?;
        let mut items = rows.iter().map(from).collect::<StoreResult<Vec<T>>>()?;
        let more = items.len() > page.limit;
        items.truncate(page.limit);
        Ok((items, more))
    }
}

fn file_from(r: &Row) -> StoreResult<FileRecord> {
    sql::file_from(r)
}

fn batch_from(r: &Row) -> StoreResult<BatchRecord> {
    sql::batch_from(r)
}

#[async_trait::async_trait]
impl JobStore for PgStore {
    async fn insert_file(&self, file: &FileRecord) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        insert_file_in(&tx, file).await?;
        Ok(tx.commit().await?)
    }

    async fn file(&self, tenant: &str, id: &str) -> StoreResult<Option<FileRecord>> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND tenant = $2");
        self.one(&sql, &[&id, &tenant], file_from).await
    }

    async fn list_files(
        &self,
        tenant: &str,
        purpose: Option<&str>,
        page: &Page<'_>,
    ) -> Result<Listed<FileRecord>, ListError> {
        let filter = purpose.map(|p| ("purpose", p));
        self.page_of("files", FILE_COLUMNS, tenant, filter, page, file_from)
            .await
    }

    async fn delete_file(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM files WHERE id = $1 AND tenant = $2",
                &[&id, &tenant],
            )
            .await?;
        Ok(n > 0)
    }

    async fn expired_files(&self, now: i64) -> StoreResult<Vec<FileRecord>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1"
            ),
            &[&now],
        )
        .await?
        .iter()
        .map(file_from)
        .collect()
    }

    async fn file_needed(&self, id: &str) -> StoreResult<bool> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT 1 FROM files WHERE id = $1 UNION ALL \
                     SELECT 1 FROM batches WHERE input_file_id = $1 AND status IN {} LIMIT 1",
                    unfinished()
                ),
                &[&id],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn insert_batch(&self, b: &BatchRecord) -> StoreResult<()> {
        let metadata = b.metadata.as_ref().map(to_json).transpose()?;
        let errors = b.errors.as_ref().map(to_json).transpose()?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO batches (id, tenant, endpoint, model, input_file_id, completion_window, status, \
             created_at, expires_at, metadata, output_expires_after, errors) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &b.id,
                &b.tenant,
                &b.endpoint,
                &b.model,
                &b.input_file_id,
                &b.completion_window,
                &b.status.as_str(),
                &b.created_at,
                &b.expires_at,
                &metadata,
                &b.output_expires_after,
                &errors,
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO units (batch_id, unit) VALUES ($1, 0)",
            &[&b.id],
        )
        .await?;
        notify(&tx, "work").await?;
        Ok(tx.commit().await?)
    }

    async fn batch(&self, tenant: &str, id: &str) -> StoreResult<Option<BatchRecord>> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1 AND tenant = $2");
        self.one(&sql, &[&id, &tenant], batch_from).await
    }

    async fn batch_by_id(&self, id: &str) -> StoreResult<Option<BatchRecord>> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1");
        self.one(&sql, &[&id], batch_from).await
    }

    async fn list_batches(
        &self,
        tenant: &str,
        page: &Page<'_>,
    ) -> Result<Listed<BatchRecord>, ListError> {
        self.page_of("batches", BATCH_COLUMNS, tenant, None, page, batch_from)
            .await
    }

    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> StoreResult<Cancel> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let moved = tx
            .execute(
                &format!(
                    "UPDATE batches SET status = 'cancelling', cancelling_at = $3 \
                     WHERE id = $1 AND tenant = $2 AND {}",
                    may_become(Status::Cancelling)
                ),
                &[&id, &tenant, &now],
            )
            .await?;
        let batch = tx
            .query_opt(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1 AND tenant = $2"),
                &[&id, &tenant],
            )
            .await?
            .as_ref()
            .map(batch_from)
            .transpose()?;
        if moved > 0 {
            notify(&tx, &format!("cancel:{id}")).await?;
        }
        tx.commit().await?;
        Ok(match batch {
            None => Cancel::NotFound,
            Some(b) if b.status == Status::Cancelling => Cancel::Cancelling(Box::new(b)),
            Some(b) => Cancel::Unchanged(Box::new(b)),
        })
    }

    async fn unfinished_batches(&self, tenant: &str) -> StoreResult<u64> {
        let c = self.client().await?;
        let row = c
            .query_one(
                &format!(
                    "SELECT COUNT(*) FROM batches WHERE tenant = $1 AND status IN {}",
                    unfinished()
                ),
                &[&tenant],
            )
            .await?;
        let n: i64 = row.get(0);
        Ok(n.max(0) as u64)
    }

    async fn count_by_status(&self) -> StoreResult<Vec<(Status, u64)>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT status, COUNT(*) FROM batches GROUP BY status", &[])
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let s: String = r.get(0);
                Some((Status::parse(&s)?, r.get::<_, i64>(1) as u64))
            })
            .collect())
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        busy: &[String],
    ) -> StoreResult<Option<Claim>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The batch unit first (validations and finalizations are short and
        // unblock the rest), then chunks; oldest batch first. A unit
        // another node is claiming right now is skipped, not waited for.
        let whole = tx
            .query_opt(
                "SELECT u.batch_id, u.unit FROM units u JOIN batches b ON b.id = u.batch_id \
                 WHERE u.unit = 0 AND u.lease_until < now() \
                   AND (b.status IN ('validating', 'finalizing', 'cancelling') \
                        OR (b.status = 'in_progress' AND b.expires_at <= extract(epoch FROM now()))) \
                   AND (b.status = 'validating' OR NOT EXISTS (SELECT 1 FROM units c \
                        WHERE c.batch_id = u.batch_id AND c.unit > 0 AND NOT c.done \
                          AND c.lease_until >= now())) \
                 ORDER BY b.seq LIMIT 1 FOR UPDATE OF u SKIP LOCKED",
                &[],
            )
            .await?;
        let found = match whole {
            Some(row) => Some(row),
            None => {
                tx.query_opt(
                    "SELECT c.batch_id, c.unit FROM units c JOIN batches b ON b.id = c.batch_id \
                     WHERE c.unit > 0 AND NOT c.done AND c.lease_until < now() \
                       AND b.status = 'in_progress' AND b.expires_at > extract(epoch FROM now()) \
                       AND NOT (c.batch_id = ANY($1)) \
                     ORDER BY b.seq, c.unit LIMIT 1 FOR UPDATE OF c SKIP LOCKED",
                    &[&busy],
                )
                .await?
            }
        };
        let Some(row) = found else {
            return Ok(None);
        };
        let (batch_id, unit): (String, i32) = (row.get(0), row.get(1));
        let got = tx
            .query_one(
                "UPDATE units SET owner = $3, epoch = epoch + 1, \
                 lease_until = now() + $4 * interval '1 millisecond' \
                 WHERE batch_id = $1 AND unit = $2 \
                 RETURNING epoch, first_line, end_line, start_byte, end_byte",
                &[&batch_id, &unit, &owner, &(millis(lease) as f64)],
            )
            .await?;
        let batch = tx
            .query_one(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1"),
                &[&batch_id],
            )
            .await?;
        let batch = batch_from(&batch)?;
        tx.commit().await?;
        let u = |i: usize| got.get::<_, i64>(i).max(0) as u64;
        let unit = Unit(unit.max(0) as u32);
        Ok(Some(Claim {
            chunk: unit.is_chunk().then(|| Chunk {
                unit,
                first_line: u(1),
                end_line: u(2),
                start: u(3),
                end: u(4),
            }),
            lease: Lease {
                batch_id,
                unit,
                owner: owner.to_owned(),
                epoch: got.get(0),
            },
            batch,
        }))
    }

    async fn renew(&self, leases: &[Lease], lease: Duration) -> StoreResult<Vec<Renewed>> {
        let c = self.client().await?;
        let renew = c
            .prepare_cached(
                "UPDATE units u SET lease_until = now() + $5 * interval '1 millisecond' \
                 FROM batches b \
                 WHERE u.batch_id = $1 AND u.unit = $2 AND u.owner = $3 AND u.epoch = $4 \
                   AND b.id = u.batch_id \
                 RETURNING b.status",
            )
            .await?;
        let mut out = Vec::with_capacity(leases.len());
        for l in leases {
            let row = c
                .query_opt(
                    &renew,
                    &[
                        &l.batch_id,
                        &(l.unit.0 as i32),
                        &l.owner,
                        &l.epoch,
                        &(millis(lease) as f64),
                    ],
                )
                .await?;
            let status = row.and_then(|r| Status::parse(&r.get::<_, String>(0)));
            out.push(status.map_or(Renewed::Lost, Renewed::Held));
        }
        Ok(out)
    }

    async fn release(&self, l: &Lease) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE units SET owner = NULL, lease_until = '-infinity' \
                 WHERE batch_id = $1 AND unit = $2 AND owner = $3 AND epoch = $4",
                &[&l.batch_id, &(l.unit.0 as i32), &l.owner, &l.epoch],
            )
            .await?;
        if n > 0 {
            notify(&tx, "work").await?;
        }
        Ok(tx.commit().await?)
    }

    async fn release_all(&self, owner: Option<&str>) -> StoreResult<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE units SET owner = NULL, lease_until = '-infinity' \
                 WHERE owner IS NOT NULL AND ($1::text IS NULL OR owner = $1)",
                &[&owner],
            )
            .await?;
        if n > 0 {
            notify(&tx, "work").await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn start(&self, lease: &Lease, start: &Start, now: i64) -> StoreResult<Started> {
        let (id, chunks) = (&lease.batch_id, &start.chunks);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        fence(&tx, lease).await?;
        if !start.limits.is_empty() {
            // One start per tenant at a time, across the nodes: held until
            // the transaction ends, so no other start slips between this
            // check and the change.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('batchkit quota ' || tenant)) FROM batches WHERE id = $1",
                &[id],
            )
            .await?;
        }
        for limit in &start.limits {
            let held: i64 = tx
                .query_one(sql::ENQUEUED_POSTGRES, &[id, &limit.model])
                .await?
                .get(0);
            let held = held.max(0) as u64;
            if held.saturating_add(start.tokens) > limit.limit {
                return Ok(Started::OverLimit {
                    limit: limit.clone(),
                    held,
                });
            }
        }
        let n = tx
            .execute(
                &format!(
                    "UPDATE batches SET status = 'in_progress', in_progress_at = $2, total = $3, model = $4, \
                     enqueued_tokens = $5 WHERE id = $1 AND {}",
                    may_become(Status::InProgress)
                ),
                &[
                    id,
                    &now,
                    &signed(start.total),
                    &start.model,
                    &signed(start.tokens),
                ],
            )
            .await?;
        if n == 0 {
            return Ok(Started::NotValidating);
        }
        let column =
            |f: fn(&Chunk) -> u64| chunks.iter().map(|c| signed(f(c))).collect::<Vec<i64>>();
        let units: Vec<i32> = chunks.iter().map(|c| c.unit.0 as i32).collect();
        tx.execute(
            "INSERT INTO units (batch_id, unit, first_line, end_line, start_byte, end_byte) \
             SELECT $1, * FROM UNNEST($2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])",
            &[
                id,
                &units,
                &column(|c| c.first_line),
                &column(|c| c.end_line),
                &column(|c| c.start),
                &column(|c| c.end),
            ],
        )
        .await?;
        if chunks.is_empty() {
            finalizing_in(&tx, id, now).await?;
        }
        tx.execute(
            "UPDATE units SET owner = NULL, lease_until = '-infinity' WHERE batch_id = $1 AND unit = 0",
            &[id],
        )
        .await?;
        notify(&tx, "work").await?;
        tx.commit().await?;
        Ok(Started::Started)
    }

    async fn fail(
        &self,
        lease: &Lease,
        total: u64,
        errors: &[BatchError],
        now: i64,
    ) -> StoreResult<bool> {
        let errors = to_json(&errors)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        fence(&tx, lease).await?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE batches SET status = 'failed', failed_at = $2, errors = $3, total = $4 \
                     WHERE id = $1 AND {}",
                    may_become(Status::Failed)
                ),
                &[&lease.batch_id, &now, &errors, &signed(total)],
            )
            .await?;
        if n > 0 {
            tx.execute("DELETE FROM units WHERE batch_id = $1", &[&lease.batch_id])
                .await?;
            add_event(&tx, &lease.batch_id, Status::Failed, now).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn record(&self, lease: &Lease, rows: &[ResultRow]) -> StoreResult<()> {
        let id = &lease.batch_id;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        fence(&tx, lease).await?;
        let lines: Vec<i64> = rows.iter().map(|r| signed(r.line)).collect();
        let oks: Vec<bool> = rows.iter().map(|r| r.ok).collect();
        let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
        let inserted = tx
            .query(
                "INSERT INTO results (batch_id, line, ok, body) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::bool[], $4::text[]) \
                 ON CONFLICT DO NOTHING RETURNING line",
                &[id, &lines, &oks, &bodies],
            )
            .await?;
        let inserted: std::collections::HashSet<i64> =
            inserted.iter().map(|r| r.get::<_, i64>(0)).collect();
        // A line given twice in one slice counts once: the first is kept.
        let mut tally = sql::Tally::default();
        let mut counted = std::collections::HashSet::new();
        for r in rows {
            let line = signed(r.line);
            if inserted.contains(&line) && counted.insert(line) {
                tally.add(r);
            }
        }
        tx.execute(
            "UPDATE batches SET completed = completed + $2, failed = failed + $3, \
             input_tokens = input_tokens + $4, cached_tokens = cached_tokens + $5, \
             output_tokens = output_tokens + $6, reasoning_tokens = reasoning_tokens + $7, \
             total_tokens = total_tokens + $8 WHERE id = $1",
            &[
                id,
                &tally.completed,
                &tally.failed,
                &signed(tally.usage.input_tokens),
                &signed(tally.usage.cached_tokens),
                &signed(tally.usage.output_tokens),
                &signed(tally.usage.reasoning_tokens),
                &signed(tally.usage.total_tokens),
            ],
        )
        .await?;
        Ok(tx.commit().await?)
    }

    async fn chunk_done(&self, lease: &Lease, now: i64) -> StoreResult<bool> {
        let id = &lease.batch_id;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        fence(&tx, lease).await?;
        tx.execute(
            "UPDATE units SET done = true, owner = NULL, lease_until = '-infinity' \
             WHERE batch_id = $1 AND unit = $2",
            &[id, &(lease.unit.0 as i32)],
        )
        .await?;
        // Lock the batch's row: two last chunks finishing at once on two
        // nodes then see each other's `done`.
        tx.execute("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE", &[id])
            .await?;
        let left: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM units WHERE batch_id = $1 AND unit > 0 AND NOT done",
                &[id],
            )
            .await?
            .get(0);
        let moved = left == 0 && finalizing_in(&tx, id, now).await?;
        if moved {
            notify(&tx, "work").await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    async fn recorded_lines(&self, id: &str, lines: Range<u64>) -> StoreResult<LineSet> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT line FROM results WHERE batch_id = $1 AND line >= $2 AND line < $3",
                &[&id, &signed(lines.start), &signed(lines.end)],
            )
            .await?;
        let mut set = LineSet::from(lines.start);
        for r in rows {
            set.insert(r.get::<_, i64>(0).max(0) as u64);
        }
        Ok(set)
    }

    async fn results_after(
        &self,
        id: &str,
        after_line: u64,
        limit: usize,
    ) -> StoreResult<Vec<ResultRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT line, ok, body FROM results WHERE batch_id = $1 AND line > $2 \
                 ORDER BY line LIMIT $3",
                &[&id, &signed(after_line), &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ResultRow {
                line: r.get::<_, i64>(0).max(0) as u64,
                ok: r.get(1),
                body: r.get(2),
                usage: Usage::default(),
            })
            .collect())
    }

    async fn finish(&self, lease: &Lease, f: &Finish) -> StoreResult<bool> {
        let stamp = sql::finish_stamp(f.status)?;
        let id = &lease.batch_id;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        fence(&tx, lease).await?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE batches SET status = $2, {stamp} = $3, output_file_id = $4, error_file_id = $5, \
                     completed = $6, failed = $7, total = $8 WHERE id = $1 AND {}",
                    may_become(f.status)
                ),
                &[
                    id,
                    &f.status.as_str(),
                    &f.at,
                    &f.output.as_ref().map(|o| &o.id),
                    &f.error.as_ref().map(|e| &e.id),
                    &signed(f.completed),
                    &signed(f.failed),
                    &signed(f.total),
                ],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        for file in f.output.iter().chain(&f.error) {
            insert_file_in(&tx, file).await?;
        }
        tx.execute("DELETE FROM results WHERE batch_id = $1", &[id])
            .await?;
        tx.execute("DELETE FROM units WHERE batch_id = $1", &[id])
            .await?;
        add_event(&tx, id, f.status, f.at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn due_events(
        &self,
        now_ms: i64,
        hold: Duration,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let until = now_ms.saturating_add(hold.as_millis() as i64);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "UPDATE events SET next_at = $2 WHERE id IN (\
                       SELECT id FROM events WHERE next_at <= $1 ORDER BY next_at LIMIT $3 \
                       FOR UPDATE SKIP LOCKED) \
                     RETURNING {EVENT_COLUMNS}"
                ),
                &[&now_ms, &until, &(limit as i64)],
            )
            .await?;
        let mut events = rows
            .iter()
            .map(sql::event_from)
            .collect::<StoreResult<Vec<Event>>>()?;
        events.sort_by_key(|e| e.created_at);
        Ok(events)
    }

    async fn event_done(&self, id: &str) -> StoreResult<()> {
        self.client()
            .await?
            .execute("DELETE FROM events WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    async fn event_retry(&self, event: &Event, next_ms: i64, why: &str) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "UPDATE events SET attempts = attempts + 1, next_at = $2, last_error = $3 WHERE id = $1",
                &[&event.id, &next_ms, &why],
            )
            .await?;
        Ok(())
    }

    async fn usage(&self, since: i64, until: i64) -> StoreResult<Vec<UsageRow>> {
        static USAGE: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| sql::USAGE.replace('?', "$"));
        let rows = self
            .client()
            .await?
            .query(USAGE.as_str(), &[&since, &until])
            .await?;
        rows.iter().map(sql::usage_from).collect()
    }

    async fn pending_events(&self) -> StoreResult<u64> {
        let n: i64 = self
            .client()
            .await?
            .query_one("SELECT COUNT(*) FROM events", &[])
            .await?
            .get(0);
        Ok(n.max(0) as u64)
    }

    async fn events(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        let (tx, rx) = mpsc::channel(256);
        let config = self.config.clone();
        tokio::spawn(listen(config, tx));
        Some(rx)
    }
}

/// Hold a connection that `LISTEN`s on the channel and pass its notices
/// on, reconnecting after a loss (and then saying there may be work, for
/// what was missed meanwhile), until the receiver is dropped.
async fn listen(config: tokio_postgres::Config, tx: mpsc::Sender<StoreEvent>) {
    let mut delay = Duration::from_millis(250);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (notices_tx, mut notices) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                if notices_tx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!("the database connection for notices was lost: {e}");
                                return;
                            }
                            None => return,
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!("cannot LISTEN for work: {e}");
                } else {
                    delay = Duration::from_millis(250);
                    if tx.send(StoreEvent::Work).await.is_err() {
                        return;
                    }
                    while let Some(payload) = notices.recv().await {
                        let event = match payload.strip_prefix("cancel:") {
                            Some(id) => StoreEvent::Cancelled(id.to_owned()),
                            None => StoreEvent::Work,
                        };
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!("cannot connect to the database for notices: {e}"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use batchkit_testkit::postgres::Postgres;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_passes_the_conformance_suite() {
        let url = Postgres::shared().database();
        let store = PgStore::connect(&url).await.expect("a store");
        super::super::conformance::run(&store).await;
    }

    /// Nodes start at once: the schema is made once; and a schema newer
    /// than the binary's is refused with a message saying what to do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_run_once_and_a_newer_schema_is_refused() {
        let url = Postgres::shared().database();
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let url = url.clone();
            starts.spawn(async move { PgStore::connect(&url).await.map(|_| ()) });
        }
        while let Some(started) = starts.join_next().await {
            started.expect("joined").expect("every node starts");
        }
        let store = PgStore::connect(&url).await.expect("again");
        let c = store.client().await.expect("a connection");
        let v: i32 = c
            .query_one("SELECT max(version) FROM batchkit_schema", &[])
            .await
            .expect("version")
            .get(0);
        assert_eq!(v as usize, MIGRATIONS.len());
        c.execute("UPDATE batchkit_schema SET version = version + 1", &[])
            .await
            .expect("bump");
        let err = PgStore::connect(&url).await.err().expect("refused");
        assert!(
            err.to_string().contains("newer than this batchkit knows"),
            "{err}"
        );
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
