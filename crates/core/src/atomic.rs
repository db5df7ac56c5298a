//! Writing outputs atomically: into a temporary file beside the target,
//! renamed over it only once complete. A crash or Ctrl-C leaves either the
//! old target or none, never a half-written one that looks whole.
//!
//! Surviving a power cut as well needs the data on disk before the rename:
//! ask for it with `durable` (an `fsync` of the file and its folder). It is
//! off by default, as in `cp` or `sort -o`, because on a large output it can
//! cost more than all the other work together.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Where an output goes: an atomically replaced file, or standard output.
pub enum Output {
    /// A file, written atomically.
    File(AtomicFile),
    /// Standard output (not atomic; used for `-`).
    Stdout(BufWriter<StdoutFd>),
}

/// Standard output written straight to its file descriptor: `io::Stdout`
/// is line-buffered and searches every large write for its last newline.
pub struct StdoutFd(StdoutInner);

#[cfg(unix)]
type StdoutInner = File;
#[cfg(not(unix))]
type StdoutInner = io::Stdout;

impl StdoutFd {
    fn open() -> io::Result<StdoutFd> {
        let out = io::stdout();
        // What was printed before goes first.
        out.lock().flush()?;
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            Ok(StdoutFd(File::from(out.as_fd().try_clone_to_owned()?)))
        }
        #[cfg(not(unix))]
        Ok(StdoutFd(out))
    }
}

impl Write for StdoutFd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Output {
    /// Open `path` for writing, or stdout if it is `-`; `durable` syncs
    /// a file to disk before it is renamed into place.
    pub fn create(path: &Path, durable: bool) -> io::Result<Output> {
        if path.as_os_str() == "-" {
            Ok(Output::Stdout(BufWriter::with_capacity(
                1 << 20,
                StdoutFd::open()?,
            )))
        } else {
            let mut f = AtomicFile::create(path)?;
            f.durable = durable;
            Ok(Output::File(f))
        }
    }

    /// Finish: flush, and for a file, sync and rename into place.
    pub fn commit(self) -> io::Result<()> {
        match self {
            Output::File(f) => f.commit(),
            Output::Stdout(mut w) => w.flush(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(f) => f.write(buf),
            Output::Stdout(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::File(f) => f.write_all(buf),
            Output::Stdout(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Stdout(w) => w.flush(),
        }
    }
}

/// A new temporary file in `dir`, named `<prefix>…tmp`, with permission
/// bits `mode` on Unix (temporary files start private, 0600, and an output
/// should look like any other file).
pub(crate) fn temp_file(dir: &Path, prefix: &str, mode: u32) -> io::Result<NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(tmp)
}

/// A file that appears under its name only when [`AtomicFile::commit`]
/// succeeds. Dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    target: PathBuf,
    writer: BufWriter<NamedTempFile>,
    /// Sync the data (and the rename) to disk on commit.
    pub durable: bool,
}

impl AtomicFile {
    /// Start writing `target`. Its folder must exist.
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The result should look like any other output: the old target's
        // mode, or rw-r--r--.
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(target).map_or(0o644, |m| m.permissions().mode())
        };
        #[cfg(not(unix))]
        let mode = 0o644;
        let tmp = temp_file(dir, &format!(".{name}."), mode)?;
        Ok(AtomicFile {
            target: target.to_owned(),
            writer: BufWriter::with_capacity(1 << 20, tmp),
            durable: false,
        })
    }

    /// Flush (and if durable, sync) and rename over the target.
    pub fn commit(self) -> io::Result<()> {
        let tmp = self.writer.into_inner().map_err(|e| e.into_error())?;
        if self.durable {
            tmp.as_file().sync_all()?;
        }
        tmp.persist(&self.target).map_err(|e| e.error)?;
        if self.durable {
            // Make the rename itself durable where the platform allows it.
            let dir = self.target.parent().filter(|p| !p.as_os_str().is_empty());
            if let Ok(d) = File::open(dir.unwrap_or(Path::new("."))) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appears_only_on_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out.jsonl");
        let mut f = AtomicFile::create(&target).expect("create");
        f.write_all(b"partial").expect("write");
        assert!(!target.exists());
        drop(f);
        assert!(!target.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("list").count(),
            0,
            "temp file removed"
        );
        let mut f = AtomicFile::create(&target).expect("create");
        f.durable = true;
        f.write_all(b"whole\n").expect("write");
        f.commit().expect("commit");
        assert_eq!(std::fs::read(&target).expect("read"), b"whole\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target)
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }
}
