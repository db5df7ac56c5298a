//! A real inference engine for the tests and benchmarks: llama.cpp's
//! `llama-server` with a tiny random-weight model, built once per machine
//! by `engines/llama-server.sh` into `~/.cache/batchkit/` (or the
//! directory `BATCHKIT_LLAMA_SERVER_DIR` names), and started, killed,
//! stopped and restarted by the tests as a user's engine would be.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::free_port;

/// The model's name in requests (`--alias`).
pub const MODEL: &str = "tiny";

/// The directory with `bin/llama-server` and `tiny.gguf`, built (once, and
/// under a lock: about 10-15 minutes on two cores) if it is missing.
pub fn cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("BATCHKIT_LLAMA_SERVER_DIR") {
            return PathBuf::from(dir);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("engines/llama-server.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: llama-server could not be built",
            script.display()
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
    })
}

/// A running `llama-server`.
pub struct Llama {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl Llama {
    /// Start one on a free port with two slots, a 512-token context (256
    /// per slot) and answers of at most 8 tokens, plus `extra` arguments;
    /// returns once `GET /health` answers 200.
    pub fn start(extra: &[&str]) -> Llama {
        let port = free_port().unwrap_or_else(|e| panic!("no free port: {e}"));
        let dir = cache();
        let mut args: Vec<String> = [
            "-m",
            &dir.join("tiny.gguf").to_string_lossy(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--alias",
            MODEL,
            "-c",
            "512",
            "--parallel",
            "2",
            "-n",
            "8",
            "-t",
            "2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let log =
            std::env::temp_dir().join(format!("batchkit-llama-{}-{port}.log", std::process::id()));
        let mut l = Llama {
            child: None,
            port,
            args,
            log,
        };
        l.restart();
        l
    }

    /// Its base URL, as users pass it (without `/v1`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start it again on the same port (after a kill or a stop), and wait
    /// until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(&self.log)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.log.display()));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.log.display()));
        let mut cmd = Command::new(cache().join("bin/llama-server"));
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        crate::process::attach_to_this_thread(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start llama-server: {e}"));
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(60));
    }

    fn wait_ready(&mut self, within: Duration) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "llama-server exited ({status}) before it was ready:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if health(self.port) == Some(200) {
                return;
            }
            assert!(
                started.elapsed() < within,
                "llama-server not ready after {within:?}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Ask it to stop (SIGTERM), as a deploy would, and return at once.
    pub fn terminate(&self) {
        if let Some(child) = &self.child
            && let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// Whether it has exited, waiting at most `within`.
    pub fn exited_within(&mut self, within: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < within {
            match self.child.as_mut().map(Child::try_wait) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => return true,
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }
}

impl Drop for Llama {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The status of `GET /health`, if it answers.
fn health(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
