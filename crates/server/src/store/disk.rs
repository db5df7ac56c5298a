//! The file store on a local (or shared) disk: `<dir>/files/<id>`, written
//! under a scratch name and renamed into place once complete and synced.

use std::fs::{self, File};
use std::io::{self, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{FileStore, FileWriter, Reader, Stored};

/// Files under one directory.
pub struct DiskFiles {
    files: PathBuf,
    scratch: PathBuf,
}

impl DiskFiles {
    /// Open (creating) the store under `dir`; leftover scratch files of an
    /// earlier run are removed.
    pub fn open(dir: &Path) -> io::Result<DiskFiles> {
        DiskFiles::with_scratch(dir, dir.join("scratch"))
    }

    /// Open (creating) the store under `dir`, a directory several nodes
    /// share (`--object-store file:///DIR`): each node writes in a scratch
    /// directory of its own, `scratch/<node>`, and removes only its own
    /// leftovers, and those of nodes gone for a day.
    pub fn open_shared(dir: &Path, node: &str) -> io::Result<DiskFiles> {
        let scratch_root = dir.join("scratch");
        fs::create_dir_all(&scratch_root)?;
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        for entry in fs::read_dir(&scratch_root)?.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < day_ago);
            if old {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let name: String = node
            .chars()
            .map(|c| match c {
                // No dots: a node called `..` must not name the store.
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        let name = if name.is_empty() { "node".into() } else { name };
        DiskFiles::with_scratch(dir, scratch_root.join(name))
    }

    /// The store under `dir`, writing in `scratch`, emptied first.
    fn with_scratch(dir: &Path, scratch: PathBuf) -> io::Result<DiskFiles> {
        let files = dir.join("files");
        fs::create_dir_all(&files)?;
        if scratch.exists() {
            fs::remove_dir_all(&scratch)?;
        }
        fs::create_dir_all(&scratch)?;
        Ok(DiskFiles { files, scratch })
    }

    fn path(&self, id: &str) -> io::Result<PathBuf> {
        Ok(self.files.join(super::checked_id(id)?))
    }
}

/// A file being written to a scratch file by one blocking thread (about
/// twice the speed of tokio's file, which hands every write to the
/// blocking pool and copies it first), renamed into place on commit.
struct DiskWriter {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    writer: Option<tokio::task::JoinHandle<io::Result<File>>>,
    /// Removed when dropped, unless committed.
    scratch: Option<tempfile::TempPath>,
    dst: PathBuf,
    dir: PathBuf,
}

impl DiskWriter {
    /// The writer thread's error, once it stopped early.
    async fn failure(&mut self) -> io::Error {
        self.tx = None;
        match self.writer.take() {
            Some(w) => match w.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => io::Error::other("the file writer stopped"),
                Err(e) => io::Error::other(e),
            },
            None => io::Error::other("the file writer stopped"),
        }
    }
}

#[async_trait::async_trait]
impl FileWriter for DiskWriter {
    async fn write(&mut self, bytes: Bytes) -> io::Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(bytes).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.failure().await)
        }
    }

    async fn commit(mut self: Box<Self>) -> io::Result<()> {
        self.tx = None;
        let file = match self.writer.take() {
            Some(w) => w.await.map_err(io::Error::other)??,
            None => return Err(io::Error::other("the file writer stopped")),
        };
        let scratch = self
            .scratch
            .take()
            .ok_or_else(|| io::Error::other("committed twice"))?;
        let (dst, dir) = (self.dst.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            scratch.persist(&dst).map_err(|e| e.error)?;
            File::open(&dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[async_trait::async_trait]
impl FileStore for DiskFiles {
    async fn create(&self, id: &str) -> io::Result<Box<dyn FileWriter>> {
        let dst = self.path(id)?;
        let (file, scratch) = tempfile::Builder::new()
            .prefix("file-")
            .tempfile_in(&self.scratch)?
            .into_parts();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<File> {
            let mut file = file;
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
            }
            Ok(file)
        });
        Ok(Box::new(DiskWriter {
            tx: Some(tx),
            writer: Some(writer),
            scratch: Some(scratch),
            dst,
            dir: self.files.clone(),
        }))
    }

    async fn read(&self, id: &str, range: Option<Range<u64>>) -> io::Result<Reader> {
        let mut file = tokio::fs::File::open(self.path(id)?).await?;
        match range {
            None => Ok(Box::pin(file)),
            Some(r) => {
                file.seek(SeekFrom::Start(r.start)).await?;
                Ok(Box::pin(file.take(r.end.saturating_sub(r.start))))
            }
        }
    }

    async fn remove(&self, id: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(id)?).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    async fn stored(&self) -> io::Result<Vec<Stored>> {
        let dir = self.files.clone();
        tokio::task::spawn_blocking(move || {
            let mut stored = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                // A file removed meanwhile is simply not listed.
                if let Ok(written) = entry.metadata().and_then(|m| m.modified()) {
                    stored.push(Stored { id, written });
                }
            }
            Ok(stored)
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's scratch directory is its own, whatever its id: an id of
    /// dots names no directory above it.
    #[test]
    fn a_shared_store_gives_each_node_a_scratch_directory_of_its_own() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir_all(dir.path().join("files")).expect("files");
        std::fs::write(dir.path().join("files/file-kept"), b"x").expect("a file");
        for node in ["..", ".", "", "host.example-1", "../x"] {
            let files = DiskFiles::open_shared(dir.path(), node).expect("open");
            assert_eq!(
                files.scratch.parent(),
                Some(dir.path().join("scratch").as_path()),
                "{node:?}"
            );
        }
        assert!(
            dir.path().join("files/file-kept").exists(),
            "nothing else removed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disk_passes_the_file_store_suite() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let files = DiskFiles::open(dir.path()).expect("a store");
        super::super::conformance::run_files(&files).await;
    }
}
