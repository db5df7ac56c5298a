//! One chunk file: written front to back under a temporary name, hashed as
//! it goes, and (on Linux, where the file system allows) with direct I/O.
//!
//! Direct I/O sends the bytes from a staging buffer to the disk without
//! passing them through the page cache. A chunk is written once and read
//! once (by the upload), so caching it buys little, while putting gigabytes
//! into the page cache costs memory and, on virtual machines that hand freed
//! memory back to their host, far more time than the disk write itself
//! (see the README's split section). Direct writes need aligned offsets,
//! lengths and buffers: whole aligned blocks go out directly, the remainder
//! is carried to the next append, and the last partial block is written
//! through the page cache. Where direct I/O is refused (`EINVAL`: tmpfs,
//! some network file systems, unusual block sizes), the file falls back to
//! ordinary writes from the same position; nothing is lost or repeated.

use std::fs::File;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempPath};

/// Alignment of direct writes: a multiple of every common logical block
/// size (512 and 4096 bytes).
const ALIGN: usize = 4096;

/// Size of a staging buffer: large enough that the disk sees long writes.
pub(crate) const STAGE: usize = 8 << 20;

/// An aligned buffer that appends are staged in before they are written.
/// One per writing thread; it is reused for every chunk that thread writes,
/// so its pages are touched once.
pub(crate) struct Stage {
    raw: Vec<u8>,
    start: usize,
}

impl Stage {
    /// A zeroed buffer of [`STAGE`] bytes at an [`ALIGN`]ed address.
    pub(crate) fn new() -> Stage {
        let raw = vec![0u8; STAGE + ALIGN];
        let start = (ALIGN - raw.as_ptr() as usize % ALIGN) % ALIGN;
        Stage { raw, start }
    }

    fn buf(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + STAGE]
    }
}

/// A chunk being written.
pub(crate) struct ChunkFile {
    tmp: NamedTempFile,
    hasher: Sha256,
    /// Bytes in the file so far (a multiple of [`ALIGN`] while direct).
    written: u64,
    /// Bytes appended but not yet written (fewer than [`ALIGN`]).
    carry: Vec<u8>,
    direct: bool,
}

impl ChunkFile {
    /// A new temporary file in `dir`, readable like any output (0644),
    /// with direct I/O if `direct` and the platform and file system allow.
    pub(crate) fn create(dir: &Path, direct: bool) -> io::Result<ChunkFile> {
        let tmp = tempfile::Builder::new()
            .prefix(".batchkit-split.")
            .suffix(".tmp")
            .tempfile_in(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        let direct = direct && set_direct(tmp.as_file(), true).is_ok();
        Ok(ChunkFile {
            tmp,
            hasher: Sha256::new(),
            written: 0,
            carry: Vec::new(),
            direct,
        })
    }

    /// Reserve `size` bytes on disk, so that the file system can allocate
    /// them in one go. Best effort: where it is not supported, writing
    /// works all the same.
    pub(crate) fn reserve(&self, size: u64) {
        #[cfg(target_os = "linux")]
        if size > 0 {
            let _ = rustix::fs::fallocate(
                self.tmp.as_file(),
                rustix::fs::FallocateFlags::empty(),
                0,
                size,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = size;
    }

    /// Append `runs` (in order), staging them in `stage`.
    pub(crate) fn append<'a>(
        &mut self,
        runs: impl IntoIterator<Item = &'a [u8]>,
        stage: &mut Stage,
    ) -> io::Result<()> {
        let buf = stage.buf();
        let mut fill = self.carry.len();
        buf[..fill].copy_from_slice(&self.carry);
        self.carry.clear();
        for run in runs {
            // Copy and hash a piece at a time, so the hash reads it from cache.
            for piece in run.chunks(256 << 10) {
                let mut piece = piece;
                while !piece.is_empty() {
                    let n = piece.len().min(buf.len() - fill);
                    buf[fill..fill + n].copy_from_slice(&piece[..n]);
                    self.hasher.update(&buf[fill..fill + n]);
                    fill += n;
                    piece = &piece[n..];
                    if fill == buf.len() {
                        self.write_out(&buf[..fill])?;
                        fill = 0;
                    }
                }
            }
        }
        let whole = if self.direct {
            fill / ALIGN * ALIGN
        } else {
            fill
        };
        self.write_out(&buf[..whole])?;
        self.carry.extend_from_slice(&buf[whole..fill]);
        Ok(())
    }

    /// Write the rest, close the file; return it (still temporary) and the
    /// SHA-256 of its bytes, in lowercase hex.
    pub(crate) fn finish(mut self) -> io::Result<(TempPath, String)> {
        if !self.carry.is_empty() {
            // The last partial block cannot be written directly.
            self.buffered()?;
            let carry = std::mem::take(&mut self.carry);
            self.write_out(&carry)?;
        }
        let sum = self.hasher.finalize();
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        Ok((self.tmp.into_temp_path(), hex))
    }

    /// Write `data` at the end of the file. A direct write the file system
    /// refuses is retried, and the rest written, through the page cache.
    fn write_out(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match write_at(self.tmp.as_file(), data, self.written) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    data = &data[n..];
                    self.written += n as u64;
                    // A short direct write leaves the rest unaligned.
                    if self.direct && n % ALIGN != 0 {
                        self.buffered()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && e.raw_os_error() == Some(EINVAL) => self.buffered()?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Go on without direct I/O.
    fn buffered(&mut self) -> io::Result<()> {
        if self.direct {
            set_direct(self.tmp.as_file(), false)?;
            self.direct = false;
        }
        Ok(())
    }

    /// Whether writes still bypass the page cache.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }
}

#[cfg(unix)]
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, data, offset)
}

#[cfg(windows)]
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(file, data, offset)
}

#[cfg(target_os = "linux")]
const EINVAL: i32 = rustix::io::Errno::INVAL.raw_os_error();
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = 22;

#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let mut flags = fcntl_getfl(file)?;
    flags.set(OFlags::DIRECT, on);
    fcntl_setfl(file, flags)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::ErrorKind::Unsupported.into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Appends of every awkward size, direct and not, give the same file
    /// and hash as writing the bytes in one go.
    #[test]
    fn appends_of_any_size_give_the_bytes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(3 * STAGE + 12_345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut stage = Stage::new();
        for direct in [true, false] {
            for sizes in [
                vec![data.len()],
                vec![1, 4095, 4096, 4097, STAGE - 1, STAGE + 1],
                vec![ALIGN; 10],
                vec![7; 3],
                vec![],
            ] {
                let mut f = ChunkFile::create(dir.path(), direct).expect("create");
                let mut at = 0;
                for (i, &n) in sizes.iter().enumerate() {
                    let end = (at + n).min(data.len());
                    // Split one append into two runs to cover run joins.
                    let mid = at + (end - at) / 3;
                    let runs = [&data[at..mid], &data[mid..end]];
                    if i % 2 == 0 {
                        f.append(runs, &mut stage).expect("append");
                    } else {
                        f.append([&data[at..end]], &mut stage).expect("append");
                    }
                    at = end;
                }
                let (path, sum) = f.finish().expect("finish");
                let back = std::fs::read(&path).expect("read");
                assert_eq!(back.len(), at, "{sizes:?} direct={direct}");
                assert!(back == data[..at], "{sizes:?} direct={direct}");
                assert_eq!(sum, sha(&data[..at]));
            }
        }
    }

    #[test]
    fn the_file_is_removed_unless_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stage = Stage::new();
        let mut f = ChunkFile::create(dir.path(), true).expect("create");
        f.append([&b"{}\n"[..]], &mut stage).expect("append");
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn direct_where_the_file_system_allows_it() {
        // /dev/shm is tmpfs; older kernels refuse O_DIRECT there, newer
        // ones accept it. Either way the bytes must come back whole.
        let dir = match tempfile::tempdir_in("/dev/shm") {
            Ok(d) => d,
            Err(_) => return,
        };
        let mut stage = Stage::new();
        let mut f = ChunkFile::create(dir.path(), true).expect("create");
        let data = vec![b'x'; 3 * ALIGN + 5];
        f.append([&data[..]], &mut stage).expect("append");
        let _ = f.is_direct();
        let (path, _) = f.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), data);
    }
}
