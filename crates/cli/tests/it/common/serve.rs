//! A `batchkit serve` process in front of the test upstream, for the tests
//! of `serve` itself and of the commands that talk to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The test upstream, started once for this test binary.
pub fn upstream() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (addr, _) = batchkit_testkit::TestUpstream::start_in_thread(Default::default());
        format!("http://{addr}/v1")
    })
}

/// A second test upstream, started once, whose `GET /v1/models` lists
/// `test-model` (as engines list what they loaded).
pub fn upstream_with_models() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let opts = batchkit_testkit::Options {
            models: Some(vec!["test-model".to_owned()]),
            ..Default::default()
        };
        let (addr, _) = batchkit_testkit::TestUpstream::start_in_thread(opts);
        format!("http://{addr}/v1")
    })
}

/// A running `batchkit serve`.
pub struct Serve {
    pub child: Child,
    pub base: String,
    pub data: PathBuf,
    /// What the server logged after its first line.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Serve {
    pub fn start(data: &Path, extra: &[&str]) -> Serve {
        Serve::start_on(data, "127.0.0.1:0", extra)
    }

    /// Start with these environment variables set too.
    pub fn start_env(data: &Path, extra: &[&str], env: &[(&str, String)]) -> Serve {
        let mut cmd = super::batchkit();
        cmd.args(Serve::args(data, "127.0.0.1:0", extra));
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        Serve::spawn(cmd, data)
    }

    /// Start on a given address (to restart a server where clients expect it).
    pub fn start_on(data: &Path, listen: &str, extra: &[&str]) -> Serve {
        let mut cmd = super::batchkit();
        cmd.args(Serve::args(data, listen, extra));
        Serve::spawn(cmd, data)
    }

    /// Start in front of another upstream.
    pub fn start_to(upstream: &str, data: &Path, extra: &[&str]) -> Serve {
        let mut cmd = super::batchkit();
        cmd.args(Serve::args_to(upstream, data, "127.0.0.1:0", extra));
        Serve::spawn(cmd, data)
    }

    /// The arguments of `batchkit serve` in front of the test upstream.
    pub fn args(data: &Path, listen: &str, extra: &[&str]) -> Vec<std::ffi::OsString> {
        Serve::args_to(upstream(), data, listen, extra)
    }

    /// The arguments of `batchkit serve` in front of `upstream`.
    pub fn args_to(
        upstream: &str,
        data: &Path,
        listen: &str,
        extra: &[&str],
    ) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = ["serve", "--listen", listen]
            .iter()
            .chain(&["--retry-base-delay-ms", "10", "--upstream", upstream])
            .map(Into::into)
            .collect();
        args.extend(["--data-dir".into(), data.as_os_str().to_owned()]);
        args.extend(extra.iter().map(Into::into));
        args
    }

    /// Run `cmd` (a `batchkit serve`, maybe under a wrapper such as
    /// `prlimit`) and wait until it listens.
    pub fn spawn(mut cmd: std::process::Command, data: &Path) -> Serve {
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let base = loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "serve exited before listening"
            );
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on it; the
        // lines are kept for the tests that read the log.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                kept.lock().unwrap().push(std::mem::take(&mut line));
            }
        });
        Serve {
            child,
            base,
            data: data.to_owned(),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    pub fn upload(&self, content: &[u8]) -> String {
        let form = reqwest::blocking::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::blocking::multipart::Part::bytes(content.to_vec()).file_name("r.jsonl"),
            );
        let v: Value = reqwest::blocking::Client::new()
            .post(self.url("/v1/files"))
            .multipart(form)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    pub fn create(&self, file: &str) -> String {
        self.create_for(file, "/v1/chat/completions")
    }

    pub fn create_for(&self, file: &str, endpoint: &str) -> String {
        let v: Value = reqwest::blocking::Client::new()
            .post(self.url("/v1/batches"))
            .json(&json!({"input_file_id": file, "endpoint": endpoint, "completion_window": "24h"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    pub fn batch(&self, id: &str) -> Value {
        reqwest::blocking::get(self.url(&format!("/v1/batches/{id}")))
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn content(&self, id: &str) -> String {
        reqwest::blocking::get(self.url(&format!("/v1/files/{id}/content")))
            .unwrap()
            .text()
            .unwrap()
    }

    pub fn wait(&self, id: &str, until: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let b = self.batch(id);
            if until(&b) {
                return b;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{b}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn terminal(b: &Value) -> bool {
    let status = b["status"].as_str().unwrap();
    batchkit_client::BatchStatus::parse(status)
        .is_some_and(batchkit_client::BatchStatus::is_terminal)
}

pub fn requests(n: usize, text: impl Fn(usize) -> String) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        let line = json!({"custom_id": format!("req-{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "test-model", "messages": [{"role": "user", "content": text(i)}]}});
        s.push_str(&line.to_string());
        s.push('\n');
    }
    s.into_bytes()
}

impl Serve {
    /// Every object of a list endpoint (`/v1/files`, `/v1/batches`).
    pub fn all(&self, path: &str) -> Vec<Value> {
        let v: Value = reqwest::blocking::get(self.url(path))
            .unwrap()
            .json()
            .unwrap();
        v["data"].as_array().unwrap().clone()
    }
}
