//! The file store on the local disk: `<data dir>/files/<id>`, written
//! under a scratch name and renamed into place once complete and synced.

use std::fs::{self, File};
use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{FileStore, Reader, Stored};

/// Files under one directory.
pub struct DiskFiles {
    files: PathBuf,
    scratch: PathBuf,
}

impl DiskFiles {
    /// Open (creating) the store under `dir`; leftover scratch files of an
    /// earlier run are removed.
    pub fn open(dir: &Path) -> io::Result<DiskFiles> {
        let files = dir.join("files");
        let scratch = dir.join("scratch");
        fs::create_dir_all(&files)?;
        if scratch.exists() {
            fs::remove_dir_all(&scratch)?;
        }
        fs::create_dir_all(&scratch)?;
        Ok(DiskFiles { files, scratch })
    }

    /// Open (creating) the store under `dir`, a directory several nodes
    /// share (`--object-store file:///DIR`): each node writes in a scratch
    /// directory of its own, `scratch/<node>`, and removes only its own
    /// leftovers, and those of nodes gone for a day.
    pub fn open_shared(dir: &Path, node: &str) -> io::Result<DiskFiles> {
        let files = dir.join("files");
        let scratch_root = dir.join("scratch");
        fs::create_dir_all(&files)?;
        fs::create_dir_all(&scratch_root)?;
        let name: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let scratch = scratch_root.join(if name.is_empty() { "node".into() } else { name });
        if scratch.exists() {
            fs::remove_dir_all(&scratch)?;
        }
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
        fs::create_dir_all(&scratch)?;
        Ok(DiskFiles { files, scratch })
    }

    fn path(&self, id: &str) -> io::Result<PathBuf> {
        // Ids are made by the server, but a path is never built from
        // anything that could leave the directory.
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file '{id}'"),
            ));
        }
        Ok(self.files.join(id))
    }
}

#[async_trait::async_trait]
impl FileStore for DiskFiles {
    fn scratch_dir(&self) -> &Path {
        &self.scratch
    }

    fn put(&self, id: &str, src: &Path) -> io::Result<()> {
        File::open(src)?.sync_all()?;
        let dst = self.path(id)?;
        fs::rename(src, &dst)?;
        File::open(&self.files)?.sync_all()
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

    fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(id)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn stored(&self) -> io::Result<Vec<Stored>> {
        let mut stored = Vec::new();
        for entry in fs::read_dir(&self.files)? {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disk_passes_the_file_store_suite() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let files = DiskFiles::open(dir.path()).expect("a store");
        super::super::conformance::run_files(&files).await;
    }
}
