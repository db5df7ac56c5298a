//! The engine: one task per active batch takes it through its lifecycle
//! (validating, in progress, finalizing, and the ends), sharing one pool of
//! upstream permits fairly among batches.
//!
//! State lives in the stores, never only in memory: a runner reads its
//! batch's status and carries on from there, so a restart (after a crash or
//! a shutdown) resumes every unfinished batch where it stood.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::store::{FileStore, JobStore, StoreResult};

mod finalize;
pub mod health;
pub mod output_lines;
mod runner;
pub mod upstream;

use upstream::Upstream;

/// How often expired files are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How old a file without a record must be before it is removed: longer
/// than any upload takes to be recorded once written.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// The shared machinery of all batch runners.
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
    upstream: Upstream,
    /// Upstream requests in flight, across batches. Tokio's semaphore is
    /// fair (first come, first served), and each runner waits for one
    /// permit at a time, so active batches take turns: a small batch is
    /// not starved by a large one created before it.
    permits: Arc<Semaphore>,
    running: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Engine {
    /// An engine over these stores; nothing runs until [`Engine::start`].
    pub fn new(
        store: Arc<dyn JobStore>,
        files: Arc<dyn FileStore>,
        cfg: Arc<ServerConfig>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Engine>, reqwest::Error> {
        let upstream = Upstream::new(cfg.clone(), metrics.clone())?;
        Ok(Arc::new(Engine {
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            store,
            files,
            cfg,
            metrics,
            health: health::Health::default(),
            upstream,
            running: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// Remove stored files that no record names (a crash between writing a
    /// file and recording it), resume every unfinished batch, and start
    /// removing files as they expire.
    pub async fn start(self: &Arc<Self>) -> StoreResult<()> {
        self.sweep_orphans().await?;
        for batch in self.store.unfinished().await? {
            tracing::info!(batch = %batch.id, status = batch.status.as_str(), "resuming");
            self.launch(&batch.id);
        }
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
        for f in self.files.stored().unwrap_or_default() {
            if f.written <= old_enough && !self.store.file_exists(&f.id).await? {
                orphans.push(f.id);
            }
        }
        for id in orphans {
            tracing::info!(file = %id, "removing a file left without a record");
            if let Err(e) = self.files.remove(&id) {
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
            let (tenant, id) = (f.tenant.clone(), f.id.clone());
            match self.store.delete_file(&tenant, &id).await {
                Ok(_) => {
                    tracing::info!(file = %f.id, "file expired; removed");
                    if let Err(e) = self.files.remove(&f.id) {
                        tracing::warn!(file = %f.id, "cannot remove: {e}");
                    }
                }
                Err(e) => tracing::warn!(file = %f.id, "cannot remove expired file: {e}"),
            }
        }
    }

    /// Make sure a runner is taking batch `id` through its lifecycle.
    pub fn launch(self: &Arc<Self>, id: &str) {
        let token = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(id) || self.shutdown.is_cancelled() {
                return;
            }
            let token = self.shutdown.child_token();
            running.insert(id.to_owned(), token.clone());
            token
        };
        let engine = self.clone();
        let id = id.to_owned();
        self.tasks.spawn(async move {
            runner::run(&engine, &id, &token).await;
            engine
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }

    /// Tell batch `id`'s runner that a cancel was recorded (starting one if
    /// none is running, so the cancel is carried out).
    pub fn cancelled(self: &Arc<Self>, id: &str) {
        let token = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        match token {
            // The token also stops the runner on shutdown; a cancel is told
            // apart by the batch's status, which the runner reads.
            Some(t) => t.cancel(),
            None => self.launch(id),
        }
    }

    /// Stop every runner (requests in flight get `cancel_grace` to finish;
    /// what is not recorded is sent again on the next start) and wait.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}
