//! A real S3 implementation for tests: `s3s-fs` (the S3 protocol of the
//! `s3s` crate over a directory), started on a free loopback port with a
//! fresh bucket per test. One server serves a whole test process
//! ([`S3::shared`]) and stops with it (the parent-death signal).
//!
//! The binary is built once and kept outside the clone, in
//! `~/.cache/batchkit/s3s-fs` (or `$BATCHKIT_S3S_FS`, the path of a
//! binary): when it is missing, the first test builds it with `cargo
//! install` (about two minutes), under a lock so that parallel test
//! binaries build it once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::{free_port, remove_stale_dirs, spawn_for_the_process};

/// The s3s-fs release built: the newest whose minimum Rust this machine's
/// toolchain meets.
const S3S_FS_VERSION: &str = "0.14.1";

/// The credentials the server accepts.
pub const ACCESS_KEY: &str = "batchkit-test";
/// The secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "batchkit-test-secret";

/// A running s3s-fs server.
pub struct S3 {
    root: PathBuf,
    port: u16,
    next_bucket: AtomicU32,
}

impl S3 {
    /// The server of this test process, started on first use.
    ///
    /// # Panics
    /// When the binary cannot be built or the server does not start, with
    /// a message saying why.
    pub fn shared() -> &'static S3 {
        static SERVER: OnceLock<S3> = OnceLock::new();
        SERVER.get_or_init(|| S3::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// The endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new empty bucket: its name.
    ///
    /// # Panics
    /// When its directory cannot be made.
    pub fn bucket(&self) -> String {
        let name = format!(
            "b{}-{}",
            std::process::id(),
            self.next_bucket.fetch_add(1, Ordering::Relaxed)
        );
        std::fs::create_dir_all(self.root.join(&name))
            .unwrap_or_else(|e| panic!("cannot make bucket {name}: {e}"));
        name
    }

    /// The settings that reach it, as `object_store` keys.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_access_key_id", ACCESS_KEY.to_owned()),
            ("aws_secret_access_key", SECRET_KEY.to_owned()),
            ("aws_region", "us-east-1".to_owned()),
            ("aws_allow_http", "true".to_owned()),
        ]
    }

    /// The same as the environment of a process (the AWS tools' names).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    fn start() -> Result<S3, String> {
        let bin = binary()?;
        remove_stale_dirs("batchkit-s3-");
        let root = std::env::temp_dir().join(format!("batchkit-s3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot make {}: {e}", root.display()))?;
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(&root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            spawn_for_the_process(cmd, "s3s-fs")?;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(S3 {
                        root,
                        port,
                        next_bucket: AtomicU32::new(0),
                    });
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        Err("s3s-fs did not start".into())
    }
}

/// The s3s-fs binary: `$BATCHKIT_S3S_FS`, or the one cached in
/// `~/.cache/batchkit/s3s-fs`, built there if missing.
fn binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("BATCHKIT_S3S_FS") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("BATCHKIT_S3S_FS={} is not a file", p.display()))
        };
    }
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let root = Path::new(&home).join(".cache/batchkit/s3s-fs");
    let bin = root.join("bin/s3s-fs");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot make {}: {e}", root.display()))?;
    // One build, whichever test binary gets here first.
    let lock = std::fs::File::create(root.join(".lock")).map_err(|e| e.to_string())?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("cannot lock the s3s-fs cache: {e}"))?;
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "building s3s-fs {S3S_FS_VERSION} into {} for the S3 tests (once; about two minutes)",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["install", "s3s-fs", "--version", S3S_FS_VERSION])
        .args(["--features", "binary", "--locked", "--root"])
        .arg(&root)
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO_TARGET_DIR", root.join("target"))
        .output()
        .map_err(|e| format!("cannot run cargo install s3s-fs: {e}"))?;
    if !out.status.success() || !bin.is_file() {
        return Err(format!(
            "cargo install s3s-fs {S3S_FS_VERSION} failed (the S3 tests run against it; \
             build it by hand with `cargo install s3s-fs --version {S3S_FS_VERSION} --features binary --root {}`, \
             or set BATCHKIT_S3S_FS to an s3s-fs binary):\n{}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let _ = std::fs::remove_dir_all(root.join("target"));
    Ok(bin)
}
