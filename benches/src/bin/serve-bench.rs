//! `serve-bench`: one batch end to end through `batchkit serve` in front of
//! the test upstream, both as release processes on loopback.
//!
//! ```sh
//! cargo build --profile dist -p batchkit -p batchkit-testkit -p batchkit-benches
//! target/dist/serve-bench --requests 100000                       # zero-latency upstream
//! target/dist/serve-bench --requests 20000 --latency-ms 100 --concurrency 256
//! ```
//!
//! Prints the upload's speed, the batch's requests per second from create
//! to `completed`, and the server's peak memory (VmHWM) and the memory it
//! had before the batch, read from `/proc`.

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
            _ => die(&format!(
                "unknown flag {flag} (--requests N --latency-ms MS --concurrency N --bin-dir DIR)"
            )),
        }
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
    let (mut serve, base) = start(
        Command::new(args.bin_dir.join("batchkit"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--provider",
                "vllm",
                "--max-upload-bytes",
                "100GiB",
            ])
            .args(["--concurrency", &args.concurrency.to_string()])
            .arg("--upstream")
            .arg(format!("{up_addr}/v1"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn"),
    );
    let pid = serve.id();
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
    let rss_before = status_kb(pid, "VmRSS:");

    let t = Instant::now();
    let batch: Value = client
        .post(format!("{base}/v1/batches"))
        .json(&json!({"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| die(&format!("create: {e}")));
    let id = batch["id"]
        .as_str()
        .unwrap_or_else(|| die(&format!("create: {batch}")))
        .to_owned();
    let done = loop {
        std::thread::sleep(Duration::from_millis(100));
        let b: Value = client
            .get(format!("{base}/v1/batches/{id}"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| die(&format!("get: {e}")));
        if ["completed", "failed", "expired", "cancelled"]
            .contains(&b["status"].as_str().unwrap_or(""))
        {
            break b;
        }
    };
    let run_s = t.elapsed().as_secs_f64();
    let peak_kb = status_kb(pid, "VmHWM:");
    let _ = serve.kill();
    let _ = upstream.kill();
    let _ = serve.wait();
    let _ = upstream.wait();

    let counts = &done["request_counts"];
    println!(
        "requests {}  latency {} ms  concurrency {}  status {}  completed {}  failed {}",
        args.requests,
        args.latency_ms,
        args.concurrency,
        done["status"],
        counts["completed"],
        counts["failed"]
    );
    println!(
        "upload   {:.1} MB in {upload_s:.2} s: {:.0} MB/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / upload_s
    );
    println!(
        "batch    {run_s:.2} s create to completed: {:.0} requests/s",
        args.requests as f64 / run_s
    );
    if args.latency_ms > 0 {
        let ceiling = args.concurrency as f64 * 1000.0 / args.latency_ms as f64;
        println!(
            "         {:.0}% of the {ceiling:.0} requests/s that {} in flight at {} ms allow",
            100.0 * args.requests as f64 / run_s / ceiling,
            args.concurrency,
            args.latency_ms
        );
    }
    println!(
        "server   peak RSS {:.0} MB (VmHWM), {:.0} MB before the batch",
        peak_kb as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
}
