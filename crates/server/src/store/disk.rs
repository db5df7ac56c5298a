//! The file store on the local disk: `<data dir>/files/<id>`, written
//! under a scratch name and renamed into place once complete and synced.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{FileStore, Stored};

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

    fn open(&self, id: &str) -> io::Result<File> {
        File::open(self.path(id)?)
    }

    fn local_path(&self, id: &str) -> Option<PathBuf> {
        self.path(id).ok()
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
