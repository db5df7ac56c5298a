//! The engine: a node's share of the work. A scheduler claims units of
//! work from the job store (a batch's validation, its chunks of request
//! lines, its finalization: see [`crate::store`]), a task works on each
//! while its lease is held, and a heartbeat renews the leases, stopping the
//! work on any that was lost or whose batch was cancelled. The upstream's
//! [`gate::Gate`] (an adaptive limit and a circuit) is shared fairly among
//! the batches being sent.
//!
//! State lives in the stores, never only in memory: a unit's task reads
//! its batch and carries on from there, so a restart (after a crash or a
//! shutdown), or another node taking a lease over, resumes every unfinished
//! batch where it stood.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::objects::Status;
use crate::store::{
    Claim, FileStore, JobStore, Lease, Renewed, StoreError, StoreEvent, StoreResult, Unit,
};

mod chunks;
mod finalize;
pub mod gate;
pub mod health;
mod outbox;
pub mod output_lines;
mod routes;
mod runner;
#[cfg(test)]
mod tests;
pub mod upstream;

use routes::Routes;

/// How often expired files are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How old a file without a record must be before it is removed: longer
/// than any upload takes to be recorded once written.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);
/// How long a unit whose work failed (a full disk, a lost database) waits
/// before it is tried again, its lease still held.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Why a unit's work could not be done (it is tried again while the lease
/// is held, unless the lease was lost).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("file store: {0}")]
    Io(#[from] std::io::Error),
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A unit this node holds.
struct Held {
    lease: Lease,
    /// Stops its work: on cancel, on a lost lease, on shutdown.
    token: CancellationToken,
    /// A chunk still sending requests (not yet waiting on the last ones):
    /// while it is, no other chunk of its batch is claimed here, so that
    /// batches take turns.
    sending: Arc<AtomicBool>,
}

/// The shared machinery of a node's work.
pub struct Engine {
    /// Records.
    pub store: Arc<dyn JobStore>,
    /// Bytes.
    pub files: Arc<dyn FileStore>,
    /// Settings.
    pub cfg: Arc<ServerConfig>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Writes that keep failing (a full disk), for `/health`.
    pub health: health::Health,
    /// Who may call, with what weight and limits (reloaded in place).
    pub tenants: crate::tenants::TenantsCell,
    /// The upstreams, each behind its gate. A gate's permits are fair
    /// (first come, first served), and each sending chunk waits for one
    /// permit at a time, so active batches take turns: a small batch is
    /// not starved by a large one created before it.
    upstreams: Routes,
    held: Mutex<HashMap<(String, Unit), Held>>,
    /// Wakes the scheduler: work may have appeared (a batch created, a
    /// chunk sent, a lease given up).
    wake: Notify,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// How often the tenants file is looked at for a change.
const TENANTS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Engine {
    /// An engine over these stores; nothing runs until [`Engine::start`].
    pub fn new(
        store: Arc<dyn JobStore>,
        files: Arc<dyn FileStore>,
        cfg: Arc<ServerConfig>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Engine>, reqwest::Error> {
        let upstreams = Routes::new(&cfg, &metrics)?;
        let tenants = crate::tenants::TenantsCell::new(
            crate::tenants::Tenants::new(&cfg.api_keys, None).unwrap_or_default(),
        );
        metrics.set_node(&cfg.node_id);
        Ok(Arc::new(Engine {
            store,
            files,
            cfg,
            metrics,
            health: health::Health::default(),
            tenants,
            upstreams,
            held: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// Remove stored files that no record names (a crash between writing a
    /// file and recording it), give up the leases a former run of this node
    /// held (of every node, for a store only this server uses), start
    /// claiming work and renewing leases, and start removing files as they
    /// expire.
    pub async fn start(self: &Arc<Self>) -> StoreResult<()> {
        self.sweep_orphans().await?;
        let engine = self.clone();
        self.tasks
            .spawn(async move { engine.upstreams.read_capacity().await });
        if let Some(path) = self.cfg.tenants_file.clone() {
            let engine = self.clone();
            self.tasks
                .spawn(async move { engine.watch_tenants(&path).await });
        }
        let whose = (!self.store.exclusive()).then_some(self.cfg.node_id.as_str());
        let released = self.store.release_all(whose).await?;
        if released > 0 {
            tracing::info!(
                leases = released,
                "gave up the leases of a former run; resuming its work"
            );
        }
        if let Some(mut events) = self.store.events().await {
            let engine = self.clone();
            self.tasks.spawn(async move {
                loop {
                    let event = tokio::select! {
                        _ = engine.shutdown.cancelled() => return,
                        e = events.recv() => e,
                    };
                    match event {
                        Some(StoreEvent::Work) => engine.wake(),
                        Some(StoreEvent::Cancelled(id)) => engine.cancelled(&id),
                        None => return,
                    }
                }
            });
        }
        let engine = self.clone();
        self.tasks.spawn(engine.deliver_events());
        let engine = self.clone();
        self.tasks.spawn(async move { engine.schedule().await });
        let engine = self.clone();
        self.tasks.spawn(async move { engine.heartbeat().await });
        let engine = self.clone();
        self.tasks.spawn(async move {
            // Orphans are looked for once per grace period: each look asks
            // the store about every stored file.
            let mut orphans_swept = tokio::time::Instant::now();
            loop {
                engine.sweep_expired_files().await;
                if orphans_swept.elapsed() >= ORPHAN_GRACE {
                    orphans_swept = tokio::time::Instant::now();
                    if let Err(e) = engine.sweep_orphans().await {
                        tracing::warn!("cannot look for files without a record: {e}");
                    }
                }
                tokio::select! {
                    _ = engine.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(SWEEP_EVERY) => {}
                }
            }
        });
        Ok(())
    }

    /// Remove stored files that no record names and that were written more
    /// than [`ORPHAN_GRACE`] ago: what a crash left between writing a file
    /// and recording it. A younger file may be about to be recorded (an
    /// upload still finishing, on this node or, with a shared store, on
    /// another), so it is left for a later sweep.
    pub async fn sweep_orphans(&self) -> StoreResult<()> {
        let old_enough = std::time::SystemTime::now() - ORPHAN_GRACE;
        let mut orphans = Vec::new();
        let stored = match self.files.stored().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot list the stored files: {e}");
                Vec::new()
            }
        };
        for f in stored {
            if f.written <= old_enough && !self.store.file_needed(&f.id).await? {
                orphans.push(f.id);
            }
        }
        for id in orphans {
            tracing::info!(file = %id, "removing a file left without a record");
            if let Err(e) = self.files.remove(&id).await {
                tracing::warn!(file = %id, "cannot remove: {e}");
            }
        }
        Ok(())
    }

    /// Remove the files whose `expires_at` has passed.
    pub async fn sweep_expired_files(&self) {
        let now = crate::ids::now();
        let expired = match self.store.expired_files(now).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cannot look for expired files: {e}");
                return;
            }
        };
        for f in expired {
            match self.forget_file(&f.tenant, &f.id).await {
                Ok(_) => tracing::info!(file = %f.id, "file expired; removed"),
                Err(e) => tracing::warn!(file = %f.id, "cannot remove expired file: {e}"),
            }
        }
    }

    /// Delete a file's record, and its bytes unless an unfinished batch
    /// still reads them (they go once it ends, with the next sweep of
    /// files without a record). False if there was no record.
    pub async fn forget_file(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        if !self.store.delete_file(tenant, id).await? {
            return Ok(false);
        }
        if self.store.file_needed(id).await? {
            tracing::info!(file = %id, "the file's record is deleted; its bytes stay until the batch reading them ends");
        } else if let Err(e) = self.files.remove(id).await {
            // Left for the sweep of files without a record.
            tracing::warn!(file = %id, "cannot remove: {e}");
        }
        Ok(true)
    }

    /// Read the tenants file again on SIGHUP, and when it changes (its
    /// modification time or length, looked at every two seconds).
    async fn watch_tenants(&self, path: &std::path::Path) {
        let stamp = |p: &std::path::Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        let mut seen = stamp(path);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let told = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = hangup => true,
                _ = tokio::time::sleep(TENANTS_EVERY) => false,
            };
            let now = stamp(path);
            if told || now != seen {
                seen = now;
                self.tenants.reload(&self.cfg.api_keys, path);
            }
        }
    }

    /// Each upstream's state, for `GET /health`: whether it is up (since
    /// when it is down), its concurrency limit and ceiling, its load.
    pub fn upstream_state(&self) -> serde_json::Value {
        self.upstreams.state()
    }

    /// Tell the scheduler that work may have appeared (a batch was
    /// created).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Tell this node's work on batch `id` that a cancel was recorded: its
    /// chunks stop sending at once (other nodes hear of it at their next
    /// heartbeat), and the batch's finalization may be claimed.
    pub fn cancelled(&self, id: &str) {
        for h in self.held().values() {
            if h.lease.batch_id == id && h.lease.unit.is_chunk() {
                h.token.cancel();
            }
        }
        self.wake();
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Unit), Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim units while there are any, then wait to be woken (or for the
    /// poll interval: leases of dead nodes expire, windows end).
    async fn schedule(self: Arc<Self>) {
        let what = "claims of work";
        loop {
            if self.stopping() {
                return;
            }
            let busy: Vec<String> = self
                .held()
                .values()
                .filter(|h| h.sending.load(Ordering::Acquire))
                .map(|h| h.lease.batch_id.clone())
                .collect();
            match self
                .store
                .claim(&self.cfg.node_id, self.cfg.lease, &busy)
                .await
            {
                Ok(Some(claim)) => {
                    self.health.succeeded(what);
                    self.take(claim);
                    continue;
                }
                Ok(None) => self.health.succeeded(what),
                Err(e) => {
                    self.metrics.store_errors.inc();
                    self.health.failed(what, &e);
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
            }
        }
    }

    /// Work on a claimed unit until it is done, stopped or lost; then give
    /// its lease up (if it still holds it) and look for more work.
    fn take(self: &Arc<Self>, claim: Claim) {
        let key = (claim.lease.batch_id.clone(), claim.lease.unit);
        let token = self.shutdown.child_token();
        let sending = Arc::new(AtomicBool::new(claim.chunk.is_some()));
        if claim.chunk.is_some() && claim.lease.epoch > 1 {
            // Begun by an earlier holder: a node that died, stalled or
            // stopped (or this one, before a restart).
            self.metrics.chunks_resumed.inc();
            tracing::info!(batch = %key.0, unit = %key.1, epoch = claim.lease.epoch, "resuming a chunk an earlier holder began");
        } else {
            tracing::debug!(batch = %key.0, unit = %key.1, epoch = claim.lease.epoch, "claimed");
        }
        self.metrics.leases_held.inc();
        self.held().insert(
            key.clone(),
            Held {
                lease: claim.lease.clone(),
                token: token.clone(),
                sending: sending.clone(),
            },
        );
        let engine = self.clone();
        self.tasks.spawn(async move {
            let what = format!("work on {}", claim.lease);
            loop {
                match runner::work(&engine, &claim, &token, &sending).await {
                    Ok(()) => {
                        engine.health.succeeded(&what);
                        break;
                    }
                    Err(RunError::Store(StoreError::Fenced(lease))) => {
                        tracing::warn!(batch = %claim.lease.batch_id, "the lease on {lease} was lost to another node; its work there stops");
                        break;
                    }
                    Err(e) => {
                        engine.metrics.store_errors.inc();
                        engine.health.failed(&what, &e);
                        tracing::debug!(batch = %claim.lease.batch_id, "{e}; trying again in {RETRY_EVERY:?}");
                        tokio::select! {
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(RETRY_EVERY) => {}
                        }
                    }
                }
            }
            engine.held().remove(&key);
            engine.metrics.leases_held.dec();
            if let Err(e) = engine.store.release(&claim.lease).await {
                // It expires by itself within a lease period.
                tracing::warn!(batch = %claim.lease.batch_id, "cannot give up the lease on {}: {e}", claim.lease);
            }
            engine.wake();
        });
    }

    /// Renew every held lease each third of a lease period; stop the work
    /// on a lease that was lost, and on a chunk whose batch was cancelled
    /// or has ended (as another node recorded it).
    async fn heartbeat(self: Arc<Self>) {
        let every = self.cfg.lease / 3;
        let what = "lease renewals";
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let leases: Vec<Lease> = self.held().values().map(|h| h.lease.clone()).collect();
            if leases.is_empty() {
                continue;
            }
            let fates = match self.store.renew(&leases, self.cfg.lease).await {
                Ok(f) => {
                    self.health.succeeded(what);
                    f
                }
                Err(e) => {
                    self.metrics.store_errors.inc();
                    self.health.failed(what, &e);
                    continue;
                }
            };
            let held = self.held();
            for (lease, fate) in leases.iter().zip(fates) {
                let Some(h) = held.get(&(lease.batch_id.clone(), lease.unit)) else {
                    continue;
                };
                let stop = match fate {
                    Renewed::Lost => {
                        tracing::warn!(batch = %lease.batch_id, "the lease on {lease} was not renewed in time and another node may hold it; its work here stops");
                        true
                    }
                    Renewed::Held(s) => {
                        lease.unit.is_chunk() && (s == Status::Cancelling || s.is_terminal())
                    }
                };
                if stop {
                    h.token.cancel();
                }
            }
        }
    }

    /// Stop all work (requests in flight get `cancel_grace` to finish; what
    /// is not recorded is sent again by whichever node claims the unit
    /// next), give up the leases, and wait.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}
