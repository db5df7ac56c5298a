//! The output folder of a split, replaced whole.
//!
//! A split is written into a new folder beside the output folder
//! (`.NAME.batchkit-split.PID-N`), and only when every chunk, the reject
//! files and `manifest.json` are complete is it swapped with the output
//! folder in one step (`renameat2(RENAME_EXCHANGE)` on Linux); the old split
//! is then removed. A kill at any instant leaves the output folder holding
//! the old split or the new one, whole, and nothing else: before the swap
//! the new files are all in the staging folder, after it the old ones are.
//!
//! The staging folder is locked (`flock`) while its split runs; the lock
//! dies with the process. A later split into the same output folder removes
//! the staging folders whose lock nobody holds: those of killed runs.
//!
//! Files in the output folder that no split wrote (kept there with
//! `--force`) are hard-linked into the staging folder before the swap, so
//! they are in the output folder before and after it; folders among them
//! are moved across after the swap (a kill in that instant leaves them in
//! the old split's folder, which the clean-up then leaves alone).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The marker in a staging folder's name, after the output folder's name.
const MARK: &str = ".batchkit-split.";

/// A staging folder for a split into `out`, locked while it exists.
pub struct Staging {
    /// The output folder (absolute).
    out: PathBuf,
    /// The staging folder (absolute), beside `out`.
    dir: PathBuf,
    /// Held for the staging folder's life: other runs see it is in use.
    _lock: File,
    /// Entries of `out` that no split wrote, carried into the new split.
    foreign: Vec<OsString>,
    /// The swap was made: what `dir` holds now is the old split.
    swapped: bool,
}

impl Staging {
    /// Make a staging folder for a split into `out`; `foreign` names the
    /// entries of `out` to keep (files no split wrote; see the module
    /// docs). Removes the staging folders that killed runs left beside
    /// `out`.
    pub fn new(out: &Path, foreign: Vec<OsString>) -> io::Result<Staging> {
        let out = absolute(out)?;
        let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} cannot be replaced as a whole; split into a folder of its own",
                    out.display()
                ),
            ));
        };
        if std::env::current_dir().is_ok_and(|cwd| cwd.starts_with(&out)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is the current folder (or holds it), which a split replaces as a whole; split into a folder of its own, such as --out-dir chunks",
                    out.display()
                ),
            ));
        }
        match std::fs::metadata(&out) {
            Ok(m) if !m.is_dir() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a folder", out.display()),
                ));
            }
            _ => {}
        }
        std::fs::create_dir_all(parent)?;
        remove_stale(parent, name);
        let dir = fresh(parent, name)?;
        let lock = File::open(&dir)?;
        if let Err(e) = lock_now(&lock) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let staging = Staging {
            out,
            dir,
            _lock: lock,
            foreign,
            swapped: false,
        };
        staging.link_foreign_files()?;
        Ok(staging)
    }

    /// Where the new split is written.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The files kept from the output folder, as hard links in the new one.
    fn link_foreign_files(&self) -> io::Result<()> {
        for name in &self.foreign {
            let from = self.out.join(name);
            if std::fs::symlink_metadata(&from)?.is_dir() {
                continue;
            }
            std::fs::hard_link(&from, self.dir.join(name)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot keep {} beside the new chunks (a hard link into {} failed: {e})",
                        from.display(),
                        self.dir.display()
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// Put the new split in place of the output folder, in one step, and
    /// remove the old split.
    pub fn commit(mut self) -> io::Result<()> {
        // Locked too, so that no clean-up takes the old split for a killed
        // run's while its kept folders are moved out of it.
        let old_lock = File::open(&self.out).ok();
        if let Some(l) = &old_lock {
            let _ = lock_wait(l);
        }
        let existed = exchange(&self.dir, &self.out)?;
        self.swapped = true;
        if !existed {
            // There was no output folder: the staging folder became it.
            return Ok(());
        }
        // `self.dir` now holds the old split.
        for name in &self.foreign {
            let from = self.dir.join(name);
            if std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir()) {
                std::fs::rename(&from, self.out.join(name))?;
            }
        }
        std::fs::remove_dir_all(&self.dir)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Not committed (an error, or the split found nothing to write):
        // the staging folder goes. After the swap it is the old split,
        // which the commit removes once the kept folders are out of it; if
        // that failed, it stays (the clean-up leaves it too), as it may
        // hold them.
        if !self.swapped {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Swap `new` and `out`; `Ok(false)` when `out` did not exist and `new`
/// was simply renamed to it.
fn exchange(new: &Path, out: &Path) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        use rustix::io::Errno;
        match renameat_with(CWD, new, CWD, out, RenameFlags::EXCHANGE) {
            Ok(()) => return Ok(true),
            Err(Errno::NOENT) if !out.exists() => {
                return std::fs::rename(new, out).map(|()| false);
            }
            // The file system cannot exchange: the two-step way below.
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !out.exists() {
        return std::fs::rename(new, out).map(|()| false);
    }
    // Without an exchange the output folder is missing for an instant
    // between the two renames (a kill then leaves the old split beside it,
    // under the staging name).
    let parent = out.parent().unwrap_or(Path::new("."));
    let name = out.file_name().unwrap_or(OsStr::new("chunks"));
    let aside = fresh_name(parent, name);
    std::fs::rename(out, &aside)?;
    std::fs::rename(new, out)?;
    std::fs::rename(&aside, new)?;
    Ok(true)
}

/// `path` made absolute (without resolving links in its last part).
fn absolute(path: &Path) -> io::Result<PathBuf> {
    let path = std::path::absolute(path)?;
    // `a/b/..` must name the folder it points at before its parent is taken.
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if name != ".." => {
            let parent = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_owned());
            Ok(parent.join(name))
        }
        _ => std::fs::canonicalize(&path),
    }
}

/// A staging name that no entry of `parent` has yet.
fn fresh_name(parent: &Path, name: &OsStr) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut n = OsString::from(".");
        n.push(name);
        n.push(format!(
            "{MARK}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let path = parent.join(n);
        if !path.exists() {
            return path;
        }
    }
}

/// A new, empty staging folder beside `parent/name`.
fn fresh(parent: &Path, name: &OsStr) -> io::Result<PathBuf> {
    loop {
        let path = fresh_name(parent, name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Remove the staging folders beside `parent/name` that no running split
/// holds (killed runs'). A folder that holds folders other than a split's
/// own `rejects/` is left alone: it may be an old split from which kept
/// folders were being moved.
fn remove_stale(parent: &Path, name: &OsStr) {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(MARK);
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(dir) = File::open(&path) else { continue };
        if !matches!(lock_try(&dir), Ok(true)) {
            continue;
        }
        let holds_folders = std::fs::read_dir(&path).map_or(true, |mut e| {
            e.any(|e| {
                e.is_ok_and(|e| {
                    e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != super::REJECTS_DIR
                })
            })
        });
        if !holds_folders {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Lock `dir` for this process, or fail at once if another holds it.
fn lock_now(dir: &File) -> io::Result<()> {
    match lock_try(dir)? {
        true => Ok(()),
        false => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "the staging folder is in use",
        )),
    }
}

#[cfg(unix)]
fn lock_try(dir: &File) -> io::Result<bool> {
    use rustix::fs::{FlockOperation, flock};
    match flock(dir, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(unix)]
fn lock_wait(dir: &File) -> io::Result<()> {
    rustix::fs::flock(dir, rustix::fs::FlockOperation::LockExclusive).map_err(Into::into)
}

#[cfg(not(unix))]
fn lock_try(_: &File) -> io::Result<bool> {
    Ok(true)
}

#[cfg(not(unix))]
fn lock_wait(_: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_new_folder_appears_whole() {
        let top = tempfile::tempdir().expect("tempdir");
        let out = top.path().join("chunks");
        let s = Staging::new(&out, Vec::new()).expect("stage");
        std::fs::write(s.path().join("a.jsonl"), "a\n").expect("write");
        assert!(!out.exists());
        s.commit().expect("commit");
        assert_eq!(names(&out), ["a.jsonl"]);
        assert_eq!(names(top.path()), ["chunks"]);
    }

    #[test]
    fn the_old_split_goes_and_kept_files_stay() {
        let top = tempfile::tempdir().expect("tempdir");
        let out = top.path().join("chunks");
        std::fs::create_dir_all(out.join("notes")).expect("mkdir");
        std::fs::write(out.join("old.001.jsonl"), "old\n").expect("write");
        std::fs::write(out.join("README"), "mine\n").expect("write");
        std::fs::write(out.join("notes/n.txt"), "n\n").expect("write");
        let s = Staging::new(&out, vec!["README".into(), "notes".into()]).expect("stage");
        std::fs::write(s.path().join("new.001.jsonl"), "new\n").expect("write");
        // Until the commit the old split is whole.
        assert_eq!(names(&out), ["README", "notes", "old.001.jsonl"]);
        s.commit().expect("commit");
        assert_eq!(names(&out), ["README", "new.001.jsonl", "notes"]);
        assert_eq!(
            std::fs::read_to_string(out.join("notes/n.txt")).expect("read"),
            "n\n"
        );
        assert_eq!(names(top.path()), ["chunks"]);
    }

    #[test]
    fn dropped_without_commit_leaves_the_old_split() {
        let top = tempfile::tempdir().expect("tempdir");
        let out = top.path().join("chunks");
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(out.join("old.jsonl"), "old\n").expect("write");
        let s = Staging::new(&out, Vec::new()).expect("stage");
        std::fs::write(s.path().join("new.jsonl"), "new\n").expect("write");
        drop(s);
        assert_eq!(names(&out), ["old.jsonl"]);
        assert_eq!(names(top.path()), ["chunks"]);
    }

    #[test]
    fn unlocked_staging_folders_are_removed_and_locked_ones_kept() {
        let top = tempfile::tempdir().expect("tempdir");
        let out = top.path().join("chunks");
        // A killed run's folder (nobody holds its lock) and a running one's.
        let killed = top.path().join(".chunks.batchkit-split.1-0");
        std::fs::create_dir_all(killed.join(super::super::REJECTS_DIR)).expect("mkdir");
        std::fs::write(killed.join(".batchkit-split.x.tmp"), "partial").expect("write");
        let running = Staging::new(&out, Vec::new()).expect("stage");
        assert!(!killed.exists());
        let other = Staging::new(&out, Vec::new()).expect("stage");
        assert!(running.path().exists(), "a running split's folder stays");
        drop(other);
        drop(running);
        assert!(names(top.path()).is_empty());
    }
}
