//! Several engines (nodes) on one job store and one file store, in one
//! process: chunks spread over them, and a node that dies without a word
//! (its runtime dropped, as `kill -9` would leave it: leases held, nothing
//! released) has its work taken over once its leases run out. Every request
//! ends in exactly one line of the output or error file.

// Test code may unwrap.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchkit_testkit::{Options, TestUpstream};
use tokio::io::AsyncReadExt;

use super::Engine;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::objects::{BatchRecord, FileRecord, Status};
use crate::store::{DiskFiles, FileStore, JobStore, SqliteStore};

struct Cluster {
    store: Arc<SqliteStore>,
    files: Arc<DiskFiles>,
    upstream: TestUpstream,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn new(latency: Duration) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let upstream = TestUpstream::start(Options {
            latency,
            ..Options::default()
        })
        .await;
        Cluster {
            store: Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap().shared()),
            files: Arc::new(DiskFiles::open(dir.path()).unwrap()),
            upstream,
            _dir: dir,
        }
    }

    fn config(&self, node: &str) -> ServerConfig {
        let mut cfg = ServerConfig::new(self.upstream.url());
        cfg.node_id = node.to_owned();
        // Short, so that a dead node's work moves quickly; long enough
        // that a loaded machine's late renewal does not lose it.
        cfg.lease = Duration::from_millis(1500);
        cfg.poll_interval = Duration::from_millis(100);
        cfg.chunk_requests = 10;
        cfg.concurrency = 4;
        cfg.retry_base_delay = Duration::from_millis(10);
        cfg.cancel_grace = Duration::from_millis(100);
        cfg
    }

    /// A node on the current runtime, started.
    async fn node(&self, name: &str) -> Arc<Engine> {
        self.node_with(name, |_| {}).await
    }

    async fn node_with(&self, name: &str, tune: impl FnOnce(&mut ServerConfig)) -> Arc<Engine> {
        let mut cfg = self.config(name);
        tune(&mut cfg);
        let e = Engine::new(
            self.store.clone(),
            self.files.clone(),
            Arc::new(cfg),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        e.start().await.unwrap();
        e
    }

    /// Upload `n` requests and create a batch of them.
    async fn batch(&self, n: usize) -> String {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                "{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"q{i}\"}}]}}}}\n"
            ));
        }
        let file = FileRecord {
            id: crate::ids::new_id("file-", 24),
            tenant: "t".into(),
            bytes: text.len() as u64,
            created_at: crate::ids::now(),
            expires_at: None,
            filename: "in.jsonl".into(),
            purpose: "batch".into(),
        };
        crate::store::put_bytes(self.files.as_ref(), &file.id, text.as_bytes())
            .await
            .unwrap();
        self.store.insert_file(&file).await.unwrap();
        let now = crate::ids::now();
        let batch = BatchRecord::validating(
            crate::ids::new_id("batch_", 24),
            "t".into(),
            "/v1/chat/completions".into(),
            file.id,
            "24h".into(),
            now,
            now + 86_400,
        );
        self.store.insert_batch(&batch).await.unwrap();
        batch.id
    }

    async fn wait_for(&self, id: &str, what: impl Fn(&BatchRecord) -> bool) -> BatchRecord {
        let start = Instant::now();
        loop {
            let b = self.store.batch_by_id(id).await.unwrap().unwrap();
            if what(&b) {
                return b;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "stuck: {b:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many lines of the batch's output and error files name each id.
    async fn lines(&self, b: &BatchRecord) -> HashMap<String, u32> {
        let mut seen = HashMap::new();
        for file in b.output_file_id.iter().chain(&b.error_file_id) {
            let mut text = String::new();
            let mut r = self.files.read(file, None).await.unwrap();
            r.read_to_string(&mut text).await.unwrap();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                *seen
                    .entry(v["custom_id"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
        seen
    }

    async fn assert_every_request_once(&self, id: &str, n: usize) -> BatchRecord {
        let b = self.wait_for(id, |b| b.status.is_terminal()).await;
        assert_eq!(b.status, Status::Completed, "{b:?}");
        assert_eq!((b.completed, b.failed, b.total), (n as u64, 0, n as u64));
        let seen = self.lines(&b).await;
        assert_eq!(seen.len(), n, "every request has a line");
        assert!(seen.values().all(|&c| c == 1), "and only one");
        b
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_spread_over_the_nodes_and_every_request_lands_once() {
    let c = Cluster::new(Duration::from_millis(5)).await;
    let nodes = [c.node("a").await, c.node("b").await, c.node("c").await];
    let id = c.batch(300).await;
    for n in &nodes {
        n.wake();
    }
    c.assert_every_request_once(&id, 300).await;
    let sent: Vec<u64> = nodes.iter().map(|n| n.metrics.dispatched.get()).collect();
    assert!(
        sent.iter().all(|&s| s > 0),
        "every node sent a share: {sent:?}"
    );
    assert_eq!(sent.iter().sum::<u64>(), 300, "and no request twice");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_chunks_are_taken_over_within_two_lease_periods() {
    let c = Cluster::new(Duration::from_millis(20)).await;
    let id = c.batch(400).await;
    // Node a runs on a runtime of its own, which is dropped mid-batch:
    // its tasks vanish with their leases held, as after kill -9.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (store, files, cfg) = (c.store.clone(), c.files.clone(), c.config("a"));
    rt.spawn(async {
        let a = Engine::new(store, files, Arc::new(cfg), Arc::new(Metrics::new())).unwrap();
        a.start().await.unwrap();
        a.wake();
    })
    .await
    .unwrap();
    c.wait_for(&id, |b| b.completed >= 40).await;
    rt.shutdown_background();
    let killed = Instant::now();
    let lease = c.config("b").lease;
    let b = c.node("b").await;
    // b's claims fail while a's leases are live, then take them over.
    c.wait_for(&id, |b| b.completed >= 100 || b.status.is_terminal())
        .await;
    let resumed = killed.elapsed();
    assert!(
        resumed < 2 * lease + Duration::from_millis(1500),
        "taken over after {resumed:?} (lease {lease:?})"
    );
    c.assert_every_request_once(&id, 400).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_one_node_stops_the_chunks_on_all() {
    let c = Cluster::new(Duration::from_millis(50)).await;
    // Chunks of 1000: each node holds one, so only the renewal can tell
    // node b of the cancel before it has sent its whole chunk.
    let big = |cfg: &mut ServerConfig| cfg.chunk_requests = 1000;
    let nodes = [c.node_with("a", big).await, c.node_with("b", big).await];
    let id = c.batch(2000).await;
    for n in &nodes {
        n.wake();
    }
    c.wait_for(&id, |b| b.completed >= 20).await;
    let sent_at_cancel: u64 = nodes.iter().map(|n| n.metrics.dispatched.get()).sum();
    c.store.cancel("t", &id, crate::ids::now()).await.unwrap();
    // Told on node a only; node b hears of it at its next renewal.
    nodes[0].cancelled(&id);
    let b = c.wait_for(&id, |b| b.status.is_terminal()).await;
    assert_eq!(b.status, Status::Cancelled);
    let sent: u64 = nodes.iter().map(|n| n.metrics.dispatched.get()).sum();
    assert!(
        sent < sent_at_cancel + 200,
        "dispatch stopped: {sent_at_cancel} sent at the cancel, {sent} in all"
    );
    let seen = c.lines(&b).await;
    assert_eq!(seen.len(), 2000, "every request has a line");
    assert!(seen.values().all(|&n| n == 1), "and only one");
    assert_eq!(b.completed + b.failed, 2000);
    for n in &nodes {
        n.shutdown().await;
    }
}
