//! A real PostgreSQL server for tests, started from the machine's own
//! binaries: `initdb` into a temporary directory, `postgres` on a free
//! loopback port with `fsync=off`, and a fresh database per test. One
//! server serves a whole test process ([`Postgres::shared`]); it is
//! stopped when the process ends, however it ends (the parent-death
//! signal), and its directory is removed by the next run.
//!
//! Nothing needs to run beforehand. When the binaries cannot be found the
//! test fails with a message naming the package to install: it never
//! skips silently.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::{free_port, remove_stale_dirs, spawn_for_the_process};

/// The role the tests connect as (a superuser, trusted on loopback).
const USER: &str = "batchkit";

/// A running PostgreSQL server.
pub struct Postgres {
    bin: PathBuf,
    port: u16,
    next_db: AtomicU32,
}

impl Postgres {
    /// The server of this test process, started on first use.
    ///
    /// # Panics
    /// When PostgreSQL's binaries are missing or the server cannot start,
    /// with a message saying why and what to install.
    pub fn shared() -> &'static Postgres {
        static SERVER: OnceLock<Postgres> = OnceLock::new();
        SERVER.get_or_init(|| Postgres::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// A new empty database on the server: its `postgres://` URL.
    ///
    /// # Panics
    /// When `createdb` fails.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .arg(&name)
            .output()
            .unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn start() -> Result<Postgres, String> {
        let bin = find_binaries()?;
        remove_stale_dirs("batchkit-pg-");
        let dir = std::env::temp_dir().join(format!("batchkit-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        // initdb and postgres refuse to run as root: they run as the
        // `postgres` user then, in a directory it owns.
        let as_user = run_as();
        if let Some((uid, gid)) = as_user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to postgres: {e}", dir.display()))?;
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "-N", "-E", "UTF8", "--locale=C"])
            .stdout(Stdio::null());
        let out = with_user(&mut initdb, as_user)
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for _ in 0..5 {
            let port = free_port()?;
            if let Ok(pg) = Postgres::run(&bin, &dir, &data, port, as_user) {
                return Ok(pg);
            }
        }
        Err(format!(
            "PostgreSQL did not start; see {}",
            dir.join("log").display()
        ))
    }

    /// Start `postgres` on `port` from a thread that lives as long as the
    /// process: the server gets SIGQUIT (immediate shutdown) when the
    /// process ends.
    fn run(
        bin: &Path,
        dir: &Path,
        data: &Path,
        port: u16,
        as_user: Option<(u32, u32)>,
    ) -> Result<Postgres, String> {
        let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = as_user {
            let _ = std::os::unix::fs::chown(dir.join("log"), Some(uid), Some(gid));
        }
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(data)
            .arg("-k")
            .arg(dir)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        with_user(&mut cmd, as_user);
        spawn_for_the_process(cmd, "postgres")?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(Postgres {
                    bin: bin.to_owned(),
                    port,
                    next_db: AtomicU32::new(0),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("postgres did not answer within 30 s".into())
    }
}

/// The directory with `initdb`, `postgres` and `createdb`: `$BATCHKIT_PG_BIN`,
/// else Debian's `/usr/lib/postgresql/<newest>/bin`, else `PATH`.
fn find_binaries() -> Result<PathBuf, String> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = std::env::var_os("BATCHKIT_PG_BIN") {
        let d = PathBuf::from(d);
        return if has(&d) {
            Ok(d)
        } else {
            Err(format!(
                "BATCHKIT_PG_BIN={} has no initdb and postgres",
                d.display()
            ))
        };
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    debian.sort();
    if let Some((_, d)) = debian.pop() {
        return Ok(d);
    }
    if let Some(d) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has(d))
    {
        return Ok(d);
    }
    Err(
        "PostgreSQL's server binaries (initdb, postgres) were not found in \
         /usr/lib/postgresql/*/bin or on PATH. The tests of `serve` on PostgreSQL \
         start their own server from them: install Debian's `postgresql` package \
         (apt-get install postgresql), or set BATCHKIT_PG_BIN to the directory \
         that holds them."
            .into(),
    )
}

/// The `postgres` user's ids when running as root.
fn run_as() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

fn with_user(cmd: &mut Command, as_user: Option<(u32, u32)>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = as_user {
        cmd.gid(gid).uid(uid);
    }
    cmd
}
