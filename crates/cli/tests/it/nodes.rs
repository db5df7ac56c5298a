//! Several `batchkit serve` processes on one PostgreSQL database (a real
//! server, started by the tests from the machine's binaries) and one
//! S3-compatible bucket (s3s-fs, a real S3 implementation) or shared files
//! directory: any node answers any request, a batch's chunks spread over
//! the nodes, a node killed with SIGKILL has its work taken over within
//! about two lease periods, and a cancel sent to one node stops the others.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use batchkit_testkit::postgres::Postgres;
use batchkit_testkit::s3::S3;
use common::serve::{Serve, requests, terminal};
use serde_json::Value;

const LEASE_SECONDS: u64 = 3;

struct Cluster {
    nodes: Vec<Option<Serve>>,
    _dirs: tempfile::TempDir,
}

/// Where the nodes keep the files.
#[derive(Clone, Copy)]
enum Objects {
    S3,
    SharedDir,
}

impl Cluster {
    fn start(n: usize, objects: Objects, extra: &[&str]) -> Cluster {
        Cluster::with_lease(n, objects, LEASE_SECONDS, extra)
    }

    fn with_lease(n: usize, objects: Objects, lease: u64, extra: &[&str]) -> Cluster {
        let dirs = tempfile::tempdir().unwrap();
        let database = Postgres::shared().database();
        let (objects, env) = match objects {
            Objects::S3 => {
                let s3 = S3::shared();
                (format!("s3://{}/batchkit", s3.bucket()), s3.env())
            }
            Objects::SharedDir => (
                format!("file://{}", dirs.path().join("objects").display()),
                Vec::new(),
            ),
        };
        let lease = lease.to_string();
        let nodes = (0..n)
            .map(|i| {
                let node = format!("node-{i}");
                let mut args = vec![
                    "--database",
                    &database,
                    "--object-store",
                    &objects,
                    "--node-id",
                    &node,
                    "--lease-seconds",
                    &lease,
                ];
                args.extend_from_slice(extra);
                Some(Serve::start_env(&dirs.path().join(&node), &args, &env))
            })
            .collect();
        Cluster { nodes, _dirs: dirs }
    }

    fn node(&self, i: usize) -> &Serve {
        self.nodes[i].as_ref().expect("a live node")
    }

    /// Upstream requests each live node has sent (every attempt).
    fn dispatched(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .flatten()
            .map(|n| {
                let text = reqwest::blocking::get(n.url("/metrics"))
                    .unwrap()
                    .text()
                    .unwrap();
                text.lines()
                    .find_map(|l| l.strip_prefix("batchkit_upstream_requests_dispatched_total "))
                    .map_or(0, |v| v.trim().parse().unwrap())
            })
            .collect()
    }
}

/// How many lines of the batch's output and error files name each id.
fn lines_by_id(node: &Serve, b: &Value) -> HashMap<String, u32> {
    let mut seen = HashMap::new();
    for key in ["output_file_id", "error_file_id"] {
        if let Some(file) = b[key].as_str() {
            for line in node.content(file).lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                *seen
                    .entry(v["custom_id"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
    }
    seen
}

fn wait_long(node: &Serve, id: &str, until: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let b = node.batch(id);
        if until(&b) {
            return b;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{b}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_nodes_share_a_batch_and_a_killed_nodes_chunks_move_within_two_leases() {
    let mut c = Cluster::start(
        3,
        Objects::S3,
        &["--concurrency", "4", "--chunk-requests", "40"],
    );
    let n = 900;
    // Upload on node 0, create on node 1, poll on node 2.
    let file = c
        .node(0)
        .upload(&requests(n, |i| format!("slow:20 nodes {i}")));
    let id = c.node(1).create(&file);
    c.node(2).wait(&id, |b| {
        b["request_counts"]["completed"].as_u64().unwrap() >= 150
    });
    let before = c.dispatched();
    assert!(
        before.iter().all(|&d| d > 0),
        "every node took chunks: {before:?}"
    );
    c.nodes[1].take().unwrap().kill9();
    let killed = Instant::now();
    let at_kill = c.node(2).batch(&id)["request_counts"]["completed"]
        .as_u64()
        .unwrap();
    let b = wait_long(c.node(2), &id, terminal);
    let took = killed.elapsed();
    eprintln!("the batch ended {took:?} after the kill, {at_kill} of {n} done then");
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["total"], n);
    assert_eq!(b["request_counts"]["completed"], n, "{b}");
    let seen = lines_by_id(c.node(0), &b);
    assert_eq!(seen.len(), n, "every request has a line");
    assert!(
        seen.values().all(|&k| k == 1),
        "and only one: {:?}",
        seen.iter().filter(|&(_, &k)| k != 1).collect::<Vec<_>>()
    );
    // The killed node's chunks waited at most for its leases to run out
    // (one lease period, renewed every third of it), then ran elsewhere:
    // the whole rest of the batch fits in two lease periods and the time
    // the two nodes need for the rest of the batch.
    let rest = (n as u64 - at_kill) as f64 / (2.0 * 4.0 / 0.020);
    let bound = Duration::from_secs(2 * LEASE_SECONDS) + Duration::from_secs_f64(rest * 3.0 + 2.0);
    assert!(
        took < bound,
        "the batch ended {took:?} after the kill (bound {bound:?})"
    );
    // And the killed node did hold work that had to wait for its leases to
    // run out (renewed every third of a period, so at least two thirds of
    // one remained): nothing released it.
    assert!(
        took >= Duration::from_secs(LEASE_SECONDS) * 2 / 3,
        "the batch ended {took:?} after the kill: the dead node's lease was not waited for"
    );
}

#[test]
fn a_cancel_sent_to_one_node_stops_dispatch_on_all() {
    let c = Cluster::start(
        3,
        Objects::SharedDir,
        &["--concurrency", "2", "--chunk-requests", "1000"],
    );
    let n = 3000;
    let file = c
        .node(0)
        .upload(&requests(n, |i| format!("slow:50 cancel {i}")));
    let id = c.node(0).create(&file);
    c.node(1).wait(&id, |b| {
        b["request_counts"]["completed"].as_u64().unwrap() >= 30
    });
    let sent = c.dispatched();
    assert!(
        sent.iter().all(|&d| d > 0),
        "each node had a chunk: {sent:?}"
    );
    let cancel: Value = reqwest::blocking::Client::new()
        .post(c.node(2).url(&format!("/v1/batches/{id}/cancel")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(cancel["status"], "cancelling", "{cancel}");
    let at_cancel: u64 = c.dispatched().iter().sum();
    let b = wait_long(c.node(0), &id, terminal);
    assert_eq!(b["status"], "cancelled", "{b}");
    let after: u64 = c.dispatched().iter().sum();
    // At most a renewal's worth of requests (a second, 3 nodes x 2 at a
    // time x 20 per second), not the rest of each node's chunk.
    assert!(
        after < at_cancel + 150,
        "dispatch went on: {at_cancel} sent at the cancel, {after} in the end"
    );
    let seen = lines_by_id(c.node(1), &b);
    assert_eq!(seen.len(), n);
    assert!(seen.values().all(|&k| k == 1));
    let counts = &b["request_counts"];
    assert_eq!(
        counts["completed"].as_u64().unwrap() + counts["failed"].as_u64().unwrap(),
        n as u64
    );
}

#[test]
fn postgres_without_shared_files_is_refused_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let database = Postgres::shared().database();
    let out = common::batchkit()
        .args([
            "serve",
            "--upstream",
            "http://127.0.0.1:9/v1",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--database", &database])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(err.contains("needs --object-store"), "{err}");
    assert!(err.contains("file:///PATH"), "{err}");
}

/// A node stopped with SIGTERM gives its leases up as it stops: the others
/// carry on with its chunks at once, not after the lease runs out.
#[test]
fn a_node_stopped_with_sigterm_hands_its_work_over_at_once() {
    let lease = 60;
    let mut c = Cluster::with_lease(
        2,
        Objects::S3,
        lease,
        &["--concurrency", "4", "--chunk-requests", "50"],
    );
    let n = 600;
    let file = c
        .node(0)
        .upload(&requests(n, |i| format!("slow:20 term {i}")));
    let id = c.node(0).create(&file);
    c.node(1).wait(&id, |b| {
        b["request_counts"]["completed"].as_u64().unwrap() >= 100
    });
    assert!(
        c.dispatched().iter().all(|&d| d > 0),
        "both nodes took chunks"
    );
    let mut stopped = c.nodes[1].take().unwrap();
    let pid = stopped.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = stopped.child.wait().unwrap();
    assert!(status.success(), "serve exited with {status} on SIGTERM");
    let at_stop = Instant::now();
    let b = wait_long(c.node(0), &id, terminal);
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], n);
    let took = at_stop.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the rest took {took:?}: the stopped node's leases ({lease} s) were waited for"
    );
    let seen = lines_by_id(c.node(0), &b);
    assert_eq!(seen.len(), n);
    assert!(seen.values().all(|&k| k == 1));
}
