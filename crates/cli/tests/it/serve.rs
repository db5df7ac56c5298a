//! `batchkit serve` as a process: the official Python SDK against it, kill
//! -9 and restart, SIGTERM, refusal to serve open on a public address.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::serve::{Serve, requests, terminal, upstream};
use serde_json::{Value, json};

#[test]
fn the_official_python_sdk_runs_the_whole_lifecycle() {
    sdk_lifecycle(&[], &[]);
}

/// The same on a node of PostgreSQL and S3 (s3s-fs).
#[test]
fn the_official_python_sdk_runs_the_whole_lifecycle_on_postgres_and_s3() {
    let s3 = batchkit_testkit::s3::S3::shared();
    let database = batchkit_testkit::postgres::Postgres::shared().database();
    let objects = format!("s3://{}", s3.bucket());
    sdk_lifecycle(
        &["--database", &database, "--object-store", &objects],
        &s3.env(),
    );
}

fn sdk_lifecycle(stores: &[&str], env: &[(&str, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--api-key", "sk-test", "--concurrency", "4"];
    args.extend_from_slice(stores);
    let serve = Serve::start_env(&dir.path().join("data"), &args, env);
    let mut texts: Vec<String> = (0..40).map(|i| format!("question {i}")).collect();
    texts[5] = "fail:400".into();
    texts[9] = "flaky:429:1".into();
    let reqs = dir.path().join("requests.jsonl");
    std::fs::write(&reqs, requests(40, |i| texts[i].clone())).unwrap();
    let slow = dir.path().join("slow.jsonl");
    std::fs::write(&slow, requests(60, |i| format!("slow:100 {i}"))).unwrap();
    let out = Command::new(common::sdk_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/lifecycle.py"))
        .arg(serve.url("/v1"))
        .arg("sk-test")
        .arg(&reqs)
        .arg(&slow)
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK script failed:\n{stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["counts"],
        json!({"total": 40, "completed": 39, "failed": 1})
    );
    assert_eq!(
        seen["conflict"],
        "Cannot cancel a batch with status 'completed'."
    );
    assert_eq!(seen["listed"], 2);
    assert_eq!(seen["bad_endpoint"], "invalid_value");
    assert_eq!(seen["missing_file"], "invalid_request");
    assert_eq!(seen["errors_checked"], true);
    let c = &seen["cancelled_counts"];
    assert!(c["completed"].as_u64().unwrap() < 60, "{c}");

    // batchkit merge accounts for every request from the SDK's downloads.
    let merged = dir.path().join("merged.jsonl");
    let m = common::batchkit()
        .args(["merge", "--input"])
        .arg(&reqs)
        .arg(dir.path().join("output.jsonl"))
        .arg(dir.path().join("error.jsonl"))
        .arg("-o")
        .arg(&merged)
        .output()
        .unwrap();
    assert_eq!(
        m.status.code(),
        Some(1),
        "one request failed: {}",
        String::from_utf8_lossy(&m.stderr)
    );
    let lines: Vec<Value> = std::fs::read_to_string(&merged)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["custom_id"], format!("req-{i}"));
        let want = if i == 5 { "failed" } else { "succeeded" };
        assert_eq!(l["status"], want, "{l}");
    }
    assert_eq!(lines[5]["status_code"], 400);
}

/// A second client holds the shapes: the official Node SDK runs the
/// lifecycle and the error cases (`tests/sdk/lifecycle.cjs`).
#[test]
fn the_official_node_sdk_runs_the_lifecycle_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &["--api-key", "sk-node"]);
    let reqs = dir.path().join("requests.jsonl");
    let mut texts: Vec<String> = (0..20).map(|i| format!("node {i}")).collect();
    texts[3] = "fail:400".into();
    std::fs::write(&reqs, requests(20, |i| texts[i].clone())).unwrap();
    let out = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/lifecycle.cjs"))
        .arg(serve.url("/v1"))
        .arg("sk-node")
        .arg(&reqs)
        .arg(dir.path())
        .env("NODE_PATH", common::sdk_node_modules())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Node SDK script failed:\n{stderr}"
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["counts"],
        json!({"total": 20, "completed": 19, "failed": 1})
    );
    assert_eq!(seen["bad_endpoint"], "invalid_value");
    assert_eq!(seen["conflict"], 409);
    assert_eq!(seen["missing_file"], "invalid_request");
    let output = std::fs::read_to_string(dir.path().join("node-output.jsonl")).unwrap();
    assert_eq!(output.lines().count(), 19);
}

#[test]
fn kill_9_at_any_moment_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let n = 300;
    let mut serve = Serve::start(&data, &["--concurrency", "8"]);
    let file = serve.upload(&requests(n, |i| format!("slow:15 kill {i}")));
    let id = serve.create(&file);
    // Kill it three times at different points of the batch, restarting each time.
    for at in [20u64, 120, 240] {
        serve.wait(&id, |b| {
            b["request_counts"]["completed"].as_u64().unwrap() >= at || terminal(b)
        });
        let data = serve.data.clone();
        serve.kill9();
        serve = Serve::start(&data, &["--concurrency", "8"]);
    }
    let b = serve.wait(&id, terminal);
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": n, "completed": n, "failed": 0})
    );
    assert!(b["error_file_id"].is_null());
    let out = serve.content(b["output_file_id"].as_str().unwrap());
    let mut ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        n,
        "the output file has {} lines for {n} requests",
        ids.len()
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a request is in the output file twice");
}

#[test]
fn sigterm_stops_gracefully_and_the_batch_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = Serve::start(&data, &["--concurrency", "2"]);
    let file = serve.upload(&requests(40, |i| format!("slow:30 term {i}")));
    let id = serve.create(&file);
    serve.wait(&id, |b| {
        b["request_counts"]["completed"].as_u64().unwrap() >= 4
    });
    let mut serve = serve;
    let pid = serve.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = serve.child.wait().unwrap();
    assert!(status.success(), "serve exited with {status} on SIGTERM");
    drop(serve);
    let serve = Serve::start(&data, &["--concurrency", "4"]);
    let b = serve.wait(&id, terminal);
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 40);
}

#[test]
fn serving_without_keys_on_a_public_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::batchkit()
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--upstream",
            "http://127.0.0.1:9",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without API keys"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
}

#[test]
fn settings_come_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::batchkit()
        .arg("serve")
        .env("BATCHKIT_UPSTREAM", upstream())
        .env("BATCHKIT_LISTEN", "127.0.0.1:0")
        .env("BATCHKIT_DATA_DIR", dir.path())
        .env("BATCHKIT_API_KEYS", "k1,k2")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let client = reqwest::blocking::Client::new();
    let status = |key: &str| {
        client
            .get(format!("{base}/v1/batches"))
            .bearer_auth(key)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!((status("k1"), status("k2"), status("k3")), (200, 200, 401));
    assert!(dir.path().join("batchkit.sqlite3").exists());
    let _ = child.kill();
    let _ = child.wait();
}

/// Two servers once shared one data directory: after a crash both resumed
/// the same batch and the upstream got 2,818 of 3,000 requests twice. A
/// second server on a directory in use refuses to start (exit 2), naming
/// the first one's pid and address; once the first is gone (even by kill
/// -9) the directory is free again.
#[test]
fn a_second_server_on_one_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Serve::start(dir.path(), &[]);
    let out = common::batchkit()
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream", upstream()])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let addr = first.base.trim_start_matches("http://");
    assert!(
        stderr.contains(&format!("pid {}, listening on {addr}", first.child.id())),
        "{stderr}"
    );
    assert!(
        stderr.contains("is in use by another batchkit serve"),
        "{stderr}"
    );
    first.kill9();
    let second = Serve::start(dir.path(), &[]);
    let health = reqwest::blocking::get(second.url("/health")).unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

/// Connections that send a byte a second were once held for ever: 1,100
/// of them took the default 1,024 descriptors and `/health` stopped
/// answering for everyone. Now a request's headers must arrive within
/// `--header-timeout`, and an idle connection is closed after it too; with
/// descriptors short (a limit of 128, 200 slow connections) the server
/// answers again once the slow ones are cut, and stays up.
#[cfg(target_os = "linux")]
#[test]
fn slow_and_idle_connections_are_cut_and_others_are_served() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut prlimit = Command::new("prlimit");
    prlimit
        .arg("--nofile=128:128")
        .arg(env!("CARGO_BIN_EXE_batchkit"))
        .args(Serve::args(
            dir.path(),
            "127.0.0.1:0",
            &["--header-timeout", "2"],
        ));
    let mut server = Serve::spawn(prlimit, dir.path());
    let base = server.base.trim_start_matches("http://").to_owned();
    // 200 connections that start a request and then trickle.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&base).ok())
        .collect();
    for s in &mut slow {
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
    }
    let health = |timeout: Duration| -> Option<String> {
        let mut s = TcpStream::connect(&base).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    };
    // Keep trickling for a while: the header deadline holds however the
    // bytes come.
    while started.elapsed() < Duration::from_millis(1500) {
        for s in &mut slow {
            let _ = s.write_all(b"X");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let answer = health(Duration::from_secs(10)).unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "health: {answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered only after {:?}",
        started.elapsed()
    );
    // Every slow connection was closed by the server.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let closed = match s.read(&mut buf) {
            Ok(_) => true, // a 408 or an EOF
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "a slow connection is still open");
    }
    // An idle kept-alive connection is closed after the timeout as well.
    let mut idle = TcpStream::connect(&base).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let quiet = Instant::now();
    let rest = idle.read(&mut buf);
    assert!(matches!(rest, Ok(0)) || rest.is_err(), "{rest:?}");
    assert!(
        quiet.elapsed() < Duration::from_secs(6),
        "idle for {:?}",
        quiet.elapsed()
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server is still up"
    );
}

/// A disk that filled while `serve` recorded results once left the batch
/// `in_progress`, retrying for ever with no sign anywhere. The results are
/// still kept (retried until the disk has room, then the batch completes
/// with every request once), and meanwhile the log says so once,
/// `/health` answers 503 `degraded`, and a metric counts the failures.
/// The data directory is a small tmpfs mounted for the test (as root; the
/// test says so and stops where mounting is not allowed).
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_reported_and_nothing_is_lost() {
    use std::time::{Duration, Instant};
    let Some(disk) = common::SmallDisk::mount("4m") else {
        eprintln!("not run: this user cannot mount a tmpfs to fill");
        return;
    };
    let data = disk.path.clone();
    let server = Serve::start(&data, &["--concurrency", "8"]);
    let n = 48;
    let file = server.upload(&requests(n, |i| {
        format!("slow:1500 question {i} {}", "x".repeat(400))
    }));
    let id = server.create(&file);
    server.wait(&id, |b| b["status"] == "in_progress");
    // Fill the disk while the first answers are on their way.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let client = reqwest::blocking::Client::new();
    let started = Instant::now();
    let degraded = loop {
        let r = client.get(server.url("/health")).send().unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap();
        if status == 503 {
            break body;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "never degraded: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(degraded["status"], "degraded");
    let problem = degraded["problems"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(problem.contains("full"), "{degraded}");
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("batchkit_store_write_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "{metrics}");
    // Still failing a while later: logged once, not at every retry.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.batch(&id)["status"], "in_progress");
    let said = |what: &str| {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    };
    assert_eq!(
        said("cannot write the results of"),
        1,
        "{:?}",
        server.log.lock().unwrap()
    );
    // Room again: every request ends up recorded once.
    std::fs::remove_file(&filler).unwrap();
    let done = server.wait(&id, terminal);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["request_counts"]["completed"], n as u64, "{done}");
    let out = server.content(done["output_file_id"].as_str().unwrap());
    assert_eq!(out.lines().count(), n);
    let health = client.get(server.url("/health")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(said("are written again"), 1);
}

/// A taken port once said "Address already in use (os error 98): Address
/// already in use (os error 98)": the cause is said once.
#[test]
fn a_taken_port_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = common::batchkit()
        .args(["serve", "--listen", &addr, "--upstream", upstream()])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
}

/// Tenants from a file: keys stored as hashes (`serve hash-key`), a cap on
/// unfinished batches (429 past it), and SIGHUP reading the file again
/// while a batch runs: a key added works at once, a key removed gets 401,
/// and the running batch finishes.
#[test]
fn tenants_come_from_a_file_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let hash = |key: &str| {
        let o = common::batchkit()
            .args(["serve", "hash-key", key])
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let file = dir.path().join("tenants.toml");
    let write = |tenants: &[(&str, &str)]| {
        let mut text = String::new();
        for (name, key) in tenants {
            text.push_str(&format!(
                "[[tenant]]\nname = \"{name}\"\nkeys = [\"{}\"]\nmax_batches = 1\n\n",
                hash(key)
            ));
        }
        std::fs::write(&file, text).unwrap();
    };
    write(&[("acme", "sk-acme")]);
    assert!(!std::fs::read_to_string(&file).unwrap().contains("sk-acme"));
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--tenants", file.to_str().unwrap(), "--concurrency", "1"],
    );
    let client = reqwest::blocking::Client::new();
    let status = |key: &str| {
        client
            .get(serve.url("/v1/batches"))
            .bearer_auth(key)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!((status("sk-acme"), status("sk-globex")), (200, 401));

    // A slow batch of acme's; a second one is over its cap.
    let form = reqwest::blocking::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(requests(40, |i| format!("slow:50 t {i}")))
                .file_name("r.jsonl"),
        );
    let f: Value = client
        .post(serve.url("/v1/files"))
        .bearer_auth("sk-acme")
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let create = || {
        client
            .post(serve.url("/v1/batches"))
            .bearer_auth("sk-acme")
            .json(&json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
            .send()
            .unwrap()
    };
    let b: Value = create().json().unwrap();
    let id = b["id"].as_str().unwrap().to_owned();
    let over = create();
    assert_eq!(over.status().as_u16(), 429);
    let e: Value = over.json().unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_batches"),
        "{e}"
    );

    // globex in, acme out; the server is told with SIGHUP.
    write(&[("globex", "sk-globex")]);
    let pid = serve.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    while (status("sk-acme"), status("sk-globex")) != (401, 200) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the reload did not take"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // acme's batch ran on; with acme back, it is seen to the end.
    write(&[("globex", "sk-globex"), ("acme", "sk-acme")]);
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let b = loop {
        let r = client
            .get(serve.url(&format!("/v1/batches/{id}")))
            .bearer_auth("sk-acme")
            .send()
            .unwrap();
        if r.status() == 200 {
            let b: Value = r.json().unwrap();
            if terminal(&b) {
                break b;
            }
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 40, "{b}");

    // A broken file is reported, and the tenants before it stay.
    std::fs::write(&file, "[[tenant]]\nname = 1\n").unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(status("sk-globex"), 200);
}

/// The official-SDK webhook receiver (`tests/sdk/webhook_receiver.py`),
/// refusing its first `refuse` deliveries, on `port` (0: any); it and its
/// port.
fn webhook_receiver(secret: &str, events: &Path, refuse: u32, port: u16) -> (Child, u16) {
    let mut receiver = Command::new(common::sdk_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/webhook_receiver.py"))
        .args([
            secret,
            events.to_str().unwrap(),
            &refuse.to_string(),
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(receiver.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    (receiver, line.trim().parse().unwrap())
}

/// What the receiver recorded, once `done` says it is enough (within 30 s).
fn deliveries(events: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let got: Vec<Value> = std::fs::read_to_string(events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if done(&got) {
            for e in &got {
                assert_eq!(e["verified"], true, "the SDK refused it: {e}");
                assert_eq!(
                    (&e["object"], &e["webhook_id"]),
                    (&json!("event"), &e["id"])
                );
            }
            return got;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "not delivered: {got:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn webhook_secret() -> String {
    let made = common::batchkit()
        .args(["serve", "webhook-secret"])
        .output()
        .unwrap();
    assert!(made.status.success());
    let secret = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    secret
}

fn delivered(got: &[Value], batch: &str) -> bool {
    got.iter()
        .any(|e| e["batch"] == batch && e["answered"] == 200)
}

/// Webhooks as OpenAI sends them, checked by the official Python SDK's
/// `webhooks.unwrap` in the receiver: a completed batch's event and a
/// failed batch's. The receiver is down for the first delivery (it answers
/// 503), and the event comes again, with the same `webhook-id`, on the
/// schedule (5 s later).
#[test]
fn webhooks_are_verified_by_the_official_sdk_and_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let secret = webhook_secret();
    let events = dir.path().join("events.jsonl");
    let (mut receiver, port) = webhook_receiver(&secret, &events, 1, 0);
    let hook = format!("http://127.0.0.1:{port}/hooks/batch");
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--webhook-url", &hook, "--webhook-secret", &secret],
    );
    let good = serve.create(&serve.upload(&requests(3, |i| format!("hello {i}"))));
    assert_eq!(serve.wait(&good, terminal)["status"], "completed");
    let mut twice = requests(2, |i| format!("hello {i}"));
    twice.extend_from_slice(&requests(1, |i| format!("again {i}")));
    let bad = serve.create(&serve.upload(&twice));
    assert_eq!(serve.wait(&bad, terminal)["status"], "failed");
    let got = deliveries(&events, |got| delivered(got, &good) && delivered(got, &bad));
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert!(got.iter().all(|e| e["path"] == "/hooks/batch"));
    // Whichever event came first was refused, and came again.
    let refused: Vec<&Value> = got.iter().filter(|e| e["answered"] == 503).collect();
    assert_eq!((refused.len(), &refused[0]["n"]), (1, &json!(1)), "{got:?}");
    let again = got.iter().filter(|e| e["id"] == refused[0]["id"]).count();
    assert_eq!(again, 2, "the same event again: {got:?}");
    let of = |b: &str| -> Vec<&Value> {
        got.iter()
            .filter(|e| e["batch"] == b && e["answered"] == 200)
            .collect()
    };
    let (first, second) = (of(&good), of(&bad));
    assert_eq!((first.len(), second.len()), (1, 1), "{got:?}");
    assert_eq!(first[0]["type"], "batch.completed");
    assert_eq!(second[0]["type"], "batch.failed");
    let b = serve.batch(&good);
    assert_eq!(first[0]["created_at"], b["completed_at"]);
}

/// An event waits in the store's outbox: the receiver is not up when the
/// batch ends, the server is killed with SIGKILL, and once restarted it
/// delivers the event to the receiver that came up meanwhile.
#[test]
fn a_webhook_survives_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let secret = webhook_secret();
    let events = dir.path().join("events.jsonl");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook = format!("http://127.0.0.1:{port}/hook");
    let args = ["--webhook-url", &hook, "--webhook-secret", &secret];
    let data = dir.path().join("data");
    let serve = Serve::start(&data, &args);
    let id = serve.create(&serve.upload(&requests(2, |i| format!("hello {i}"))));
    assert_eq!(serve.wait(&id, terminal)["status"], "completed");
    // The first delivery finds nobody listening.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    serve.kill9();
    let (mut receiver, _) = webhook_receiver(&secret, &events, 0, port);
    let _serve = Serve::start(&data, &args);
    let got = deliveries(&events, |got| delivered(got, &id));
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "batch.completed");
}

/// `serve usage` reports, from the store of a running server, each
/// tenant's batches, requests and tokens by model: the sums of what the
/// batches themselves say; a period before them is empty; a data
/// directory without a store says so.
#[test]
fn usage_per_tenant_comes_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = Serve::start(&data, &["--api-key", "sk-a,sk-b"]);
    let client = reqwest::blocking::Client::new();
    let mut expected = std::collections::BTreeMap::new();
    for (key, n) in [("sk-a", 3), ("sk-b", 5), ("sk-a", 2)] {
        let form = reqwest::blocking::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::blocking::multipart::Part::bytes(requests(n, |i| {
                    format!("hello there {i}")
                }))
                .file_name("r.jsonl"),
            );
        let f: Value = client
            .post(serve.url("/v1/files"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let b: Value = client
            .post(serve.url("/v1/batches"))
            .bearer_auth(key)
            .json(&json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let b = loop {
            let b: Value = client
                .get(serve.url(&format!("/v1/batches/{}", b["id"].as_str().unwrap())))
                .bearer_auth(key)
                .send()
                .unwrap()
                .json()
                .unwrap();
            if terminal(&b) {
                break b;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(b["status"], "completed");
        let e = expected
            .entry(batchkit_server::tenants::tenant_of(key))
            .or_insert([0u64; 4]);
        e[0] += 1;
        e[1] += b["request_counts"]["completed"].as_u64().unwrap();
        e[2] += b["usage"]["input_tokens"].as_u64().unwrap();
        e[3] += b["usage"]["output_tokens"].as_u64().unwrap();
    }
    let usage = |extra: &[&str]| {
        common::batchkit()
            .args(["serve", "usage", "--data-dir", data.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = usage(&["--since", "1h", "--format", "json"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut got = std::collections::BTreeMap::new();
    for r in report["usage"].as_array().unwrap() {
        assert_eq!(r["model"], "test-model");
        assert_eq!(r["requests"]["failed"], 0);
        got.insert(
            r["tenant"].as_str().unwrap().to_owned(),
            [
                r["batches"].as_u64().unwrap(),
                r["requests"]["completed"].as_u64().unwrap(),
                r["tokens"]["input"].as_u64().unwrap(),
                r["tokens"]["output"].as_u64().unwrap(),
            ],
        );
    }
    assert_eq!(got, expected);
    assert!(
        expected.values().all(|e| e[2] > 0 && e[3] > 0),
        "{expected:?}"
    );
    // The table, for people; one tenant.
    let a = batchkit_server::tenants::tenant_of("sk-a");
    let o = usage(&["--since", "2000-01-01", "--tenant", &a]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success());
    assert!(
        table.lines().nth(1).unwrap().starts_with("tenant"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.contains(&a) && table.contains("test-model"),
        "{table}"
    );
    // Before any batch ended: nothing.
    let o = usage(&["--since", "2000-01-01", "--until", "2000-02-01"]);
    assert!(String::from_utf8(o.stdout).unwrap().ends_with("none\n"));
    // Not a server's data directory; not a time.
    let o = common::batchkit()
        .args(["serve", "usage", "--since", "1d", "--data-dir"])
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("no job store at"),
        "{}",
        common::stderr(&o)
    );
    let o = usage(&["--since", "yesterday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        common::stderr(&o).contains("is not a date"),
        "{}",
        common::stderr(&o)
    );
}
