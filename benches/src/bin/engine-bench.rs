//! `engine-bench`: `batchkit serve` in front of a real engine, llama.cpp's
//! `llama-server` with the tests' tiny random-weight model (two slots;
//! built once per machine by `crates/testkit/engines/llama-server.sh`),
//! against the same engine driven directly, in one run.
//!
//! ```sh
//! cargo build --profile dist -p batchkit -p batchkit-benches
//! target/dist/engine-bench --requests 200 --runs 5
//! ```
//!
//! Prints, as medians over the runs: the engine's own time for the
//! requests (sent directly, as many at once as it has slots); the same
//! batch through `serve` with its default flags (an adaptive limit under a
//! ceiling of 64), and with `--concurrency` fixed at the slots; the ratios;
//! the limit `serve` settled on and how long that took; then one batch with
//! the engine killed for 25 s midway: the pause, how soon dispatch resumed
//! after the engine was back, and the requests lost (none).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use batchkit_testkit::llama::{Llama, MODEL};
use serde_json::{Value, json};

fn die(msg: &str) -> ! {
    eprintln!("engine-bench: {msg}");
    std::process::exit(2)
}

struct Args {
    requests: usize,
    runs: usize,
    outage_secs: u64,
    bin_dir: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        requests: 200,
        runs: 5,
        outage_secs: 25,
        bin_dir: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("target/dist")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| die(&format!("{flag} needs a value")));
        let num = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| die(&format!("{flag}: not a number: {value}")))
        };
        match flag.as_str() {
            "--requests" => a.requests = num() as usize,
            "--runs" => a.runs = (num() as usize).max(1),
            "--outage-secs" => a.outage_secs = num(),
            "--bin-dir" => a.bin_dir = PathBuf::from(&value),
            _ => die(&format!(
                "unknown flag {flag} (--requests N --runs N --outage-secs S --bin-dir DIR)"
            )),
        }
    }
    a
}

fn body(i: usize) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": format!("hello {i}")}]})
}

fn file(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        let line = json!({"custom_id": format!("r-{i}"), "method": "POST",
            "url": "/v1/chat/completions", "body": body(i)});
        s.push_str(&format!("{line}\n"));
    }
    s.into_bytes()
}

/// The engine's own time: `n` requests sent directly, `at_once` at a time.
fn direct(engine: &Llama, n: usize, at_once: usize) -> Duration {
    let client = reqwest::blocking::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/v1/chat/completions", engine.url());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..at_once {
            let (client, next, url) = (client.clone(), next.clone(), url.clone());
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let r = client.post(&url).json(&body(i)).send();
                    if !r.is_ok_and(|r| r.status().is_success()) {
                        die("a direct request failed");
                    }
                }
            });
        }
    });
    started.elapsed()
}

struct Serve {
    child: Child,
    base: String,
    client: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(bin_dir: &std::path::Path, upstream: &str, extra: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap_or_else(|e| die(&e.to_string()));
        let mut child = Command::new(bin_dir.join("batchkit"))
            .args(["serve", "--listen", "127.0.0.1:0", "--upstream", upstream])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| die(&format!("cannot start batchkit serve: {e}")));
        let mut stderr = BufReader::new(child.stderr.take().unwrap_or_else(|| die("no stderr")));
        let mut line = String::new();
        let base = loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                die("batchkit serve exited before listening");
            }
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                break a.to_owned();
            }
        };
        std::thread::spawn(move || for _ in stderr.lines() {});
        Serve {
            child,
            base,
            client: reqwest::blocking::Client::new(),
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| die(&format!("GET {path}: {e}")))
    }

    /// Upload and create; the batch id and when it was created.
    fn create(&self, n: usize) -> (String, Instant) {
        let form = reqwest::blocking::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::blocking::multipart::Part::bytes(file(n)).file_name("bench.jsonl"),
            );
        let f: Value = self
            .client
            .post(format!("{}/v1/files", self.base))
            .multipart(form)
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| die(&format!("upload: {e}")));
        let started = Instant::now();
        let b: Value = self
            .client
            .post(format!("{}/v1/batches", self.base))
            .json(&json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| die(&format!("create: {e}")));
        let id = b["id"]
            .as_str()
            .unwrap_or_else(|| die(&format!("{b}")))
            .to_owned();
        (id, started)
    }

    fn batch(&self, id: &str) -> Value {
        self.get(&format!("/v1/batches/{id}"))
    }

    /// Wait for the batch to end: its time from create, and the batch.
    fn finish(&self, id: &str, started: Instant) -> (Duration, Value) {
        loop {
            let b = self.batch(id);
            if matches!(
                b["status"].as_str(),
                Some("completed" | "failed" | "expired" | "cancelled")
            ) {
                if b["status"] != "completed" || b["request_counts"]["failed"] != 0 {
                    die(&format!("the batch did not complete cleanly: {b}"));
                }
                return (started.elapsed(), b);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn limit(&self) -> u64 {
        self.get("/health")["upstreams"][0]["concurrency_limit"]
            .as_u64()
            .unwrap_or(0)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args = parse_args();
    let n = args.requests;
    let mut engine = Llama::start(&[]);
    let slots = 2usize;
    let defaults = Serve::start(&args.bin_dir, &engine.url(), &[]);
    let fixed = Serve::start(
        &args.bin_dir,
        &engine.url(),
        &["--concurrency", &slots.to_string()],
    );
    // Warm up the engine and both servers.
    direct(&engine, 8, slots);
    for s in [&defaults, &fixed] {
        let (id, t) = s.create(8);
        s.finish(&id, t);
    }
    let (mut d, mut via_defaults, mut via_fixed, mut settle) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut limit = 0;
    for _ in 0..args.runs {
        d.push(direct(&engine, n, slots));
        let (id, t) = defaults.create(n);
        // How long until the limit stands at what it settles on.
        let mut seen = Vec::new();
        loop {
            let b = defaults.batch(&id);
            seen.push((t.elapsed(), defaults.limit()));
            if b["status"] == "completed" {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (took, _) = defaults.finish(&id, t);
        via_defaults.push(took);
        limit = seen.last().map_or(0, |s| s.1);
        let settled = seen
            .iter()
            .rev()
            .take_while(|s| s.1 == limit)
            .last()
            .map_or(Duration::ZERO, |s| s.0);
        settle.push(settled);
        let (id, t) = fixed.create(n);
        via_fixed.push(fixed.finish(&id, t).0);
    }
    let (d, vd, vf) = (median(d), median(via_defaults), median(via_fixed));
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    println!(
        "{n} chat requests, llama-server with {slots} slots, medians of {} runs",
        args.runs
    );
    println!("  engine directly, {slots} at a time:   {:8.0} ms", ms(d));
    println!(
        "  through serve, default flags:     {:8.0} ms  ({:.2}x the engine's time)",
        ms(vd),
        ms(vd) / ms(d)
    );
    println!(
        "  through serve, --concurrency {slots}:   {:8.0} ms  ({:.2}x)",
        ms(vf),
        ms(vf) / ms(d)
    );
    println!(
        "  the adaptive limit settled on {limit} within {:.0} ms of the create",
        ms(median(settle))
    );
    drop(fixed);

    // An outage: the engine killed midway, back after `outage_secs`.
    let big = n * 4;
    let (id, t) = defaults.create(big);
    while defaults.batch(&id)["request_counts"]["completed"]
        .as_u64()
        .unwrap_or(0)
        < (big / 4) as u64
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.kill();
    let killed = Instant::now();
    while defaults.get("/health")["upstreams"][0]["up"] != false {
        std::thread::sleep(Duration::from_millis(5));
    }
    let paused = killed.elapsed();
    let before = defaults.batch(&id)["request_counts"]["completed"]
        .as_u64()
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(args.outage_secs).saturating_sub(killed.elapsed()));
    engine.restart();
    let back = Instant::now();
    while defaults.batch(&id)["request_counts"]["completed"]
        .as_u64()
        .unwrap_or(0)
        <= before
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let resumed = back.elapsed();
    let (took, b) = defaults.finish(&id, t);
    println!(
        "  outage: {big} requests, the engine killed after {} and back {} s later: dispatch paused {:.0} ms after the kill, resumed {:.0} ms after the engine was back; {} completed, {} failed, {:.1} s in all",
        big / 4,
        args.outage_secs,
        ms(paused),
        ms(resumed),
        b["request_counts"]["completed"],
        b["request_counts"]["failed"],
        took.as_secs_f64()
    );
}
