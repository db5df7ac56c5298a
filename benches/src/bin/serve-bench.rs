//! `serve-bench`: one batch end to end through `batchkit serve` in front of
//! the test upstream, both as release processes on loopback.
//!
//! ```sh
//! cargo build --profile dist -p batchkit -p batchkit-testkit -p batchkit-benches
//! target/dist/serve-bench --requests 100000                       # zero-latency upstream
//! target/dist/serve-bench --requests 20000 --latency-ms 100 --concurrency 256
//! # several nodes on one PostgreSQL and one bucket (AWS_* in the environment)
//! target/dist/serve-bench --nodes 3 --database postgres://... --object-store s3://bucket/run1
//! # ... and node 1 killed (SIGKILL) once 20,000 requests are done
//! target/dist/serve-bench --nodes 3 --database ... --object-store ... --kill-after 20000
//! ```
//!
//! Prints the upload's speed, the batch's requests per second from create
//! to `completed`, and each server's peak memory (VmHWM) and the memory it
//! had before the batch, read from `/proc`. With `--kill-after`, also the
//! time from the kill until another node resumes one of the killed node's
//! chunks (`batchkit_chunks_resumed_total` on a survivor).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Args {
    requests: usize,
    latency_ms: u64,
    concurrency: u32,
    bin_dir: PathBuf,
    nodes: usize,
    database: Option<String>,
    object_store: Option<String>,
    kill_after: Option<u64>,
    lease_seconds: u64,
    chunk_requests: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        requests: 100_000,
        latency_ms: 0,
        concurrency: 64,
        // The binaries built beside this one, whichever profile built it.
        bin_dir: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("target/dist")),
        nodes: 1,
        database: None,
        object_store: None,
        kill_after: None,
        lease_seconds: 15,
        chunk_requests: 1000,
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
            "--latency-ms" => a.latency_ms = num(),
            "--concurrency" => a.concurrency = num() as u32,
            "--bin-dir" => a.bin_dir = PathBuf::from(&value),
            "--nodes" => a.nodes = (num() as usize).max(1),
            "--database" => a.database = Some(value),
            "--object-store" => a.object_store = Some(value),
            "--kill-after" => a.kill_after = Some(num()),
            "--lease-seconds" => a.lease_seconds = num(),
            "--chunk-requests" => a.chunk_requests = num(),
            _ => die(&format!(
                "unknown flag {flag} (--requests N --latency-ms MS --concurrency N --bin-dir DIR \
                 --nodes N --database URL --object-store URL --kill-after N --lease-seconds S \
                 --chunk-requests N)"
            )),
        }
    }
    if a.nodes > 1 && a.database.is_none() {
        die("--nodes above 1 needs --database and --object-store");
    }
    if a.kill_after.is_some() && a.nodes < 2 {
        die("--kill-after needs --nodes 2 or more (node 1 is killed)");
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("serve-bench: {msg}");
    std::process::exit(2)
}

/// Start a process and wait for its `listening on http://ADDR` line.
fn start(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            die(&format!(
                "cannot start {cmd:?}: {e} (build with --release first)"
            ))
        });
    let mut stderr = BufReader::new(child.stderr.take().unwrap_or_else(|| die("no stderr")));
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            die(&format!("{cmd:?} exited before listening"));
        }
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            break a.to_owned();
        }
    };
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    (child, addr)
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn write_requests(path: &Path, n: usize) -> u64 {
    let mut out =
        BufWriter::new(std::fs::File::create(path).unwrap_or_else(|e| die(&e.to_string())));
    let mut bytes = 0;
    for i in 0..n {
        let line = json!({"custom_id": format!("req-{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "test-model", "messages": [{"role": "user", "content": format!("Say something about the number {i}.")}], "max_tokens": 16}})
        .to_string();
        bytes += line.len() as u64 + 1;
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    bytes
}

/// A counter of a node's `/metrics`.
fn metric(client: &reqwest::blocking::Client, base: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn main() {
    let args = parse_args();
    let dir = tempfile::tempdir().unwrap_or_else(|e| die(&e.to_string()));
    let file = dir.path().join("requests.jsonl");
    let bytes = write_requests(&file, args.requests);

    let (mut upstream, up_addr) = start(Command::new(args.bin_dir.join("test-upstream")).args([
        "--listen",
        "127.0.0.1:0",
        "--latency-ms",
        &args.latency_ms.to_string(),
    ]));
    let mut nodes: Vec<(Option<Child>, String, u32)> = (0..args.nodes)
        .map(|i| {
            let mut cmd = Command::new(args.bin_dir.join("batchkit"));
            cmd.args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--provider",
                "vllm",
                "--max-upload-bytes",
                "100GiB",
            ])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--lease-seconds", &args.lease_seconds.to_string()])
            .args(["--chunk-requests", &args.chunk_requests.to_string()])
            .args(["--node-id", &format!("bench-{i}")])
            .arg("--upstream")
            .arg(format!("{up_addr}/v1"))
            .arg("--data-dir")
            .arg(dir.path().join(format!("data-{i}")))
            .env("RUST_LOG", "warn");
            if let Some(db) = &args.database {
                cmd.args(["--database", db]);
            }
            if let Some(os) = &args.object_store {
                cmd.args(["--object-store", os]);
            }
            let (child, base) = start(&mut cmd);
            let pid = child.id();
            (Some(child), base, pid)
        })
        .collect();
    let base = nodes[0].1.clone();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap_or_else(|e| die(&e.to_string()));

    let t = Instant::now();
    let form = reqwest::blocking::multipart::Form::new()
        .text("purpose", "batch")
        .file("file", &file)
        .unwrap_or_else(|e| die(&e.to_string()));
    let uploaded: Value = client
        .post(format!("{base}/v1/files"))
        .multipart(form)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| die(&format!("upload: {e}")));
    let upload_s = t.elapsed().as_secs_f64();
    let upload_peak_kb = status_kb(nodes[0].2, "VmHWM:");
    let rss_before: Vec<u64> = nodes.iter().map(|n| status_kb(n.2, "VmRSS:")).collect();

    // Created on another node than the upload's, when there is one.
    let creator = nodes[1 % nodes.len()].1.clone();
    let t = Instant::now();
    let batch: Value = client
        .post(format!("{creator}/v1/batches"))
        .json(&json!({"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| die(&format!("create: {e}")));
    let id = batch["id"]
        .as_str()
        .unwrap_or_else(|| die(&format!("create: {batch}")))
        .to_owned();
    let mut killed: Option<(Instant, u64)> = None;
    let mut killed_peak_kb = 0;
    let mut resumed_after: Option<f64> = None;
    let done = loop {
        std::thread::sleep(Duration::from_millis(if killed.is_some() {
            20
        } else {
            100
        }));
        let b: Value = client
            .get(format!("{base}/v1/batches/{id}"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| die(&format!("get: {e}")));
        if let (Some(at), None) = (args.kill_after, killed) {
            let completed = b["request_counts"]["completed"].as_u64().unwrap_or(0);
            if completed >= at {
                killed_peak_kb = status_kb(nodes[1].2, "VmHWM:");
                if let Some(mut child) = nodes[1].0.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let resumed_before =
                    metric(&client, &base, "batchkit_chunks_resumed_total").unwrap_or(0.0) as u64;
                killed = Some((Instant::now(), resumed_before));
            }
        }
        if let (Some((at, before)), None) = (killed, resumed_after) {
            let resumed: u64 = nodes
                .iter()
                .filter(|n| n.0.is_some())
                .filter_map(|n| metric(&client, &n.1, "batchkit_chunks_resumed_total"))
                .map(|v| v as u64)
                .sum();
            if resumed > before {
                resumed_after = Some(at.elapsed().as_secs_f64());
            }
        }
        if ["completed", "failed", "expired", "cancelled"]
            .contains(&b["status"].as_str().unwrap_or(""))
        {
            break b;
        }
    };
    let run_s = t.elapsed().as_secs_f64();
    let peaks: Vec<u64> = nodes
        .iter()
        .map(|n| match n.0 {
            Some(_) => status_kb(n.2, "VmHWM:"),
            None => killed_peak_kb,
        })
        .collect();
    for (child, _, _) in &mut nodes {
        if let Some(c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    let _ = upstream.kill();
    let _ = upstream.wait();

    let counts = &done["request_counts"];
    println!(
        "requests {}  latency {} ms  concurrency {} per node  nodes {}  status {}  completed {}  failed {}",
        args.requests,
        args.latency_ms,
        args.concurrency,
        args.nodes,
        done["status"],
        counts["completed"],
        counts["failed"]
    );
    println!(
        "upload   {:.1} MB in {upload_s:.2} s: {:.0} MB/s; the receiving node's peak RSS {:.0} MB",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / upload_s,
        upload_peak_kb as f64 / 1024.0
    );
    println!(
        "batch    {run_s:.2} s create to completed: {:.0} requests/s",
        args.requests as f64 / run_s
    );
    if args.latency_ms > 0 {
        let ceiling =
            (args.concurrency as usize * args.nodes) as f64 * 1000.0 / args.latency_ms as f64;
        println!(
            "         {:.0}% of the {ceiling:.0} requests/s that {} in flight at {} ms allow",
            100.0 * args.requests as f64 / run_s / ceiling,
            args.concurrency as usize * args.nodes,
            args.latency_ms
        );
    }
    if killed.is_some() {
        match resumed_after {
            Some(s) => println!(
                "kill     node 1 killed; a survivor resumed one of its chunks {s:.2} s later (lease {} s)",
                args.lease_seconds
            ),
            None => println!("kill     node 1 killed; no chunk of it was resumed (it held none?)"),
        }
    }
    for (i, (peak, before)) in peaks.iter().zip(&rss_before).enumerate() {
        let gone = if killed.is_some() && i == 1 {
            " (killed)"
        } else {
            ""
        };
        println!(
            "node {i}   peak RSS {:.0} MB (VmHWM), {:.0} MB before the batch{gone}",
            *peak as f64 / 1024.0,
            *before as f64 / 1024.0
        );
    }
}
