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
    /// Something that is not a regular file (`/dev/null`, a FIFO, a
    /// terminal), written in place: renaming a file over it would replace
    /// the device itself (as root, `-o /dev/null` once did).
    Special(BufWriter<File>),
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
        } else if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            let f = std::fs::OpenOptions::new().write(true).open(path)?;
            Ok(Output::Special(BufWriter::with_capacity(1 << 20, f)))
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
            Output::Special(mut w) => w.flush(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(f) => f.write(buf),
            Output::Stdout(w) => w.write(buf),
            Output::Special(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::File(f) => f.write_all(buf),
            Output::Stdout(w) => w.write_all(buf),
            Output::Special(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Stdout(w) => w.flush(),
            Output::Special(w) => w.flush(),
        }
    }
}

/// Whether `output` names the same file as one of `inputs` (compared by
/// device and inode, so `./x`, `dir/../x`, a symbolic link or a hard link
/// to `x` all count; `-` as an input is standard input, compared the same
/// way when it is a file). An output that does not exist yet names no
/// input. Returns the input it names.
pub fn names_an_input<'a>(output: &Path, inputs: &[&'a Path]) -> Option<&'a Path> {
    if output.as_os_str() == "-" {
        return None;
    }
    let out = file_identity(output)?;
    inputs
        .iter()
        .copied()
        .find(|input| file_identity(input) == Some(out))
}

/// Device and inode of `path` (`-`: of standard input).
#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    if path.as_os_str() == "-" {
        let st = rustix::fs::fstat(std::io::stdin()).ok()?;
        // Only a regular file on stdin can be replaced by an output.
        let file =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        return file.then_some((st.st_dev as u64, st.st_ino as u64));
    }
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    // Without inodes, compare the resolved paths.
    let p = std::fs::canonicalize(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&p, &mut h);
    Some((0, std::hash::Hasher::finish(&h)))
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
///
/// On Linux the data goes into an unnamed file (`O_TMPFILE`) in the
/// target's folder, which the kernel frees if the process dies at any
/// point: a killed run leaves nothing behind. Only when complete is it
/// given a name and renamed over the target. Where the file system has no
/// unnamed files, a named temporary file (`.NAME.XXXXXX.tmp`) is used, which
/// a kill -9 can leave behind.
///
/// Giving the finished file its name takes two steps (a link under a
/// private name, `.NAME.PID-N.tmp`, then a rename over the target), and a
/// kill -9 that lands between the two leaves that link: the whole new
/// output beside the old one. The next output written into the same folder
/// removes such links of processes that are gone (see [`sweep_stale`]).
pub struct AtomicFile {
    target: PathBuf,
    writer: BufWriter<Temp>,
    /// Sync the data (and the rename) to disk on commit.
    pub durable: bool,
}

/// The file being written.
enum Temp {
    /// Unnamed, in `dir`: linked into it on commit.
    #[cfg(target_os = "linux")]
    Unnamed { file: File, dir: PathBuf },
    /// Named, removed when dropped.
    Named(NamedTempFile),
}

impl Temp {
    fn file(&self) -> &File {
        match self {
            #[cfg(target_os = "linux")]
            Temp::Unnamed { file, .. } => file,
            Temp::Named(t) => t.as_file(),
        }
    }

    /// A new temporary file in `dir` for `target`, with mode `mode`.
    fn create(dir: &Path, name: &str, mode: u32) -> io::Result<Temp> {
        #[cfg(target_os = "linux")]
        if let Some(file) = unnamed_file(dir, mode)? {
            return Ok(Temp::Unnamed {
                file,
                dir: dir.to_owned(),
            });
        }
        temp_file(dir, &format!(".{name}."), mode).map(Temp::Named)
    }

    /// Give the file the name `target`, replacing what was there.
    fn persist(self, target: &Path) -> io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Temp::Unnamed { file, dir } => {
                // A name cannot be linked over an existing file: link it
                // under a fresh name, then rename that over the target.
                let name = target
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let named = link_unnamed(&file, &dir, &name)?;
                std::fs::rename(&named, target).inspect_err(|_| {
                    let _ = std::fs::remove_file(&named);
                })
            }
            Temp::Named(t) => t.persist(target).map(drop).map_err(|e| e.error),
        }
    }
}

impl Write for Temp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            #[cfg(target_os = "linux")]
            Temp::Unnamed { file, .. } => file.write(buf),
            Temp::Named(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Temp::Unnamed { file, .. } => file.flush(),
            Temp::Named(t) => t.flush(),
        }
    }
}

/// An unnamed file in `dir` (`O_TMPFILE`), or `None` where the file system
/// or kernel has none, or where it could not be given a name later (no
/// `/proc/self/fd`).
#[cfg(target_os = "linux")]
fn unnamed_file(dir: &Path, mode: u32) -> io::Result<Option<File>> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    if !Path::new("/proc/self/fd").is_dir() {
        return Ok(None);
    }
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    match rustix::fs::open(dir, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => {
            let file = File::from(fd);
            // Like any other output, whatever the umask (see `create`).
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
            Ok(Some(file))
        }
        // Not offered here: an old kernel, or a file system without it.
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Link the unnamed `file` into `dir` as `.NAME.N.tmp` (a name no one else
/// uses); return that path.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, dir: &Path, name: &str) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let source = format!("/proc/self/fd/{}", file.as_raw_fd());
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
        match rustix::fs::linkat(
            rustix::fs::CWD,
            source.as_str(),
            rustix::fs::CWD,
            &path,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        ) {
            Ok(()) => return Ok(path),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Remove the `.NAME.PID-N.tmp` links that a process killed between the
/// two steps of [`Temp::persist`] left in `dir`: those whose process is no
/// longer running here, or that were linked more than an hour ago (a
/// commit takes microseconds between the two steps). Each folder is looked
/// at once per process, so writing thousands of files into one folder
/// lists it once. Best effort: a folder that cannot be listed is skipped.
#[cfg(target_os = "linux")]
fn sweep_stale(dir: &Path) {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;
    static SWEPT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if !swept.get_or_insert_with(HashSet::new).insert(key) {
            return;
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(stale_link_pid) else {
            continue;
        };
        let gone = !Path::new(&format!("/proc/{pid}")).exists();
        let old = entry
            .metadata()
            .is_ok_and(|m| m.is_file() && now - m.ctime() > 3600);
        if (gone || old) && pid != std::process::id() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The process id in a name made by [`link_unnamed`] (`.NAME.PID-N.tmp`).
#[cfg(target_os = "linux")]
fn stale_link_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, tail) = rest.rsplit_once('.')?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

impl AtomicFile {
    /// Start writing `target`. Its folder must exist. A target that exists
    /// and is not a regular file (a device, a FIFO, a folder) is refused:
    /// the rename would replace it ([`Output::create`] writes into such
    /// targets in place).
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        let existing = std::fs::metadata(target).ok();
        if existing.as_ref().is_some_and(|m| !m.is_file()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", target.display()),
            ));
        }
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
            existing.map_or(0o644, |m| m.permissions().mode() & 0o7777)
        };
        #[cfg(not(unix))]
        let mode = 0o644;
        #[cfg(target_os = "linux")]
        sweep_stale(dir);
        let tmp = Temp::create(dir, &name, mode)?;
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
            tmp.file().sync_all()?;
        }
        tmp.persist(&self.target)?;
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

    /// A killed run cannot leave a temporary file behind where the file
    /// system has unnamed files: nothing has a name until the commit.
    #[cfg(target_os = "linux")]
    #[test]
    fn nothing_is_named_until_the_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out.jsonl");
        let mut f = AtomicFile::create(&target).expect("create");
        if !matches!(f.writer.get_ref(), Temp::Unnamed { .. }) {
            return; // this file system has no O_TMPFILE
        }
        f.write_all(&[b'x'; 1 << 21]).expect("write");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        f.commit().expect("commit");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["out.jsonl"]);
    }

    /// A kill -9 between the link and the rename of a commit leaves
    /// `.NAME.PID-N.tmp`; the next output written into the folder removes
    /// it when that process is gone, and leaves anything else alone.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_link_left_by_a_killed_commit_is_removed_by_the_next_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Above any pid_max: no such process.
        let left = dir.path().join(".out.jsonl.4294967-0.tmp");
        let mine = dir
            .path()
            .join(format!(".out.jsonl.{}-0.tmp", std::process::id()));
        let others = [
            ".out.jsonl.tmp",
            ".x.4294967.tmp",
            "a.4294967-0.tmp",
            "keep.jsonl",
        ];
        for p in [&left, &mine] {
            std::fs::write(p, "whole\n").expect("write");
        }
        for n in others {
            std::fs::write(dir.path().join(n), "x").expect("write");
        }
        let mut f = AtomicFile::create(&dir.path().join("new.jsonl")).expect("create");
        f.write_all(b"new\n").expect("write");
        f.commit().expect("commit");
        assert!(!left.exists(), "a dead process's link stays");
        assert!(mine.exists(), "a live process's link was removed");
        for n in others {
            assert!(dir.path().join(n).exists(), "{n} was removed");
        }
        assert_eq!(stale_link_pid(".a.b.jsonl.12-3.tmp"), Some(12));
        assert_eq!(stale_link_pid("a.jsonl.12-3.tmp"), None);
    }

    /// A device or FIFO as the output is written in place, never renamed
    /// over: as root, `merge -o /dev/null` once replaced /dev/null with a
    /// regular file, and every later `2>/dev/null` wrote into it. (A FIFO
    /// here, so that a regression cannot break the machine's /dev/null.)
    #[cfg(unix)]
    #[test]
    fn a_fifo_output_is_written_in_place_not_replaced() {
        use std::io::Read;
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("out");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()));
        let reader_path = fifo.clone();
        let reader = std::thread::spawn(move || {
            let mut got = String::new();
            File::open(&reader_path)
                .expect("open the fifo")
                .read_to_string(&mut got)
                .expect("read");
            got
        });
        let mut out = Output::create(&fifo, false).expect("create");
        assert!(matches!(out, Output::Special(_)));
        out.write_all(b"line\n").expect("write");
        out.commit().expect("commit");
        assert_eq!(reader.join().expect("reader"), "line\n");
        let kind = std::fs::symlink_metadata(&fifo).expect("stat").file_type();
        use std::os::unix::fs::FileTypeExt;
        assert!(kind.is_fifo(), "the fifo is still a fifo");
        assert!(AtomicFile::create(&fifo).is_err(), "never renamed over");
    }

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
