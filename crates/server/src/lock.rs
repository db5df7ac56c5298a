//! One server per data directory: a lock (`flock` on `serve.lock`) held
//! while the server runs, with its pid and address written in the file for
//! whoever finds the directory in use. The kernel releases the lock when
//! the process dies, however it dies, so a crash never leaves it stuck.
//!
//! Two processes on one SQLite database would both resume the same batches
//! and send every request twice; several nodes share work through the
//! PostgreSQL store instead.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::Path;

use crate::ServeError;

/// The lock on a data directory, held until dropped.
pub struct DataDirLock {
    file: File,
}

impl DataDirLock {
    /// Take the lock on `dir`, or fail naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, ServeError> {
        let path = dir.join("serve.lock");
        let data_err = |e: std::io::Error| ServeError::DataDir {
            path: dir.to_owned(),
            source: e.into(),
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(data_err)?;
        #[cfg(unix)]
        {
            use rustix::fs::{FlockOperation, flock};
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(ServeError::InUse {
                        path: dir.to_owned(),
                        holder: describe(&text),
                    });
                }
                Err(e) => return Err(data_err(e.into())),
            }
        }
        Ok(DataDirLock { file })
    }

    /// Write who holds the lock: this process and the address it serves.
    pub fn record(&mut self, listen: SocketAddr) {
        let text = serde_json::json!({"pid": std::process::id(), "listen": listen.to_string()});
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.rewind())
            .and_then(|()| writeln!(self.file, "{text}"));
        if let Err(e) = written {
            tracing::warn!("cannot record this server in serve.lock: {e}");
        }
    }
}

/// "pid 123, listening on 127.0.0.1:8090" from the lock file's text.
fn describe(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
    match (v["pid"].as_u64(), v["listen"].as_str()) {
        (Some(pid), Some(listen)) => format!("pid {pid}, listening on {listen}"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "a process still starting".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_second_lock_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = DataDirLock::acquire(dir.path()).expect("first");
        first.record("127.0.0.1:8090".parse().expect("addr"));
        match DataDirLock::acquire(dir.path()) {
            Err(ServeError::InUse { holder, .. }) => assert_eq!(
                holder,
                format!("pid {}, listening on 127.0.0.1:8090", std::process::id())
            ),
            other => panic!("expected InUse, got {:?}", other.map(|_| ())),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again");
    }
}
