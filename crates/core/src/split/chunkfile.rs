//! Chunk files: written front to back under a temporary name, hashed as
//! they go, and (on Linux, where the file system allows) with direct I/O.
//!
//! Direct I/O sends the bytes from a staging buffer to the disk without
//! passing them through the page cache. A chunk is written once and read
//! once (by the upload), so caching it buys little, while putting gigabytes
//! into the page cache costs memory and, on virtual machines that hand freed
//! memory back to their host, far more time than the disk write itself
//! (see docs/commands.md, split). Direct writes need aligned offsets,
//! lengths and buffers: whole aligned blocks go out directly, the remainder
//! is carried to the next append, and the last partial block is written
//! through the page cache. Where direct I/O is refused (`EINVAL`: tmpfs,
//! some network file systems, unusual block sizes), the file falls back to
//! ordinary writes from the same position; nothing is lost or repeated.
//!
//! Copying and hashing fill one staging buffer while a background thread
//! writes the last one, so the disk and the CPU work at the same time.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use sha2::{Digest, Sha256};
use tempfile::TempPath;

/// Alignment of direct writes: a multiple of every common logical block
/// size (512 and 4096 bytes).
const ALIGN: usize = 4096;

/// Size of a staging buffer: large enough that the disk sees long writes.
const STAGE: usize = 4 << 20;

/// Staging buffers per [`Stager`]: one being filled, one being written.
const STAGES: usize = 2;

/// A page-aligned buffer that appends are staged in before they are
/// written: anonymous memory, in huge pages where the kernel offers them
/// (fewer pages to fault in and to pin for each direct write).
struct Stage {
    map: memmap2::MmapMut,
    len: usize,
}

impl Stage {
    /// An empty buffer of [`STAGE`] bytes.
    fn new() -> io::Result<Stage> {
        let map = memmap2::MmapMut::map_anon(STAGE)?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(Stage { map, len: 0 })
    }

    fn room(&self) -> usize {
        STAGE - self.len
    }

    /// Append `data` (at most [`Stage::room`] bytes); return the copy.
    fn push(&mut self, data: &[u8]) -> &[u8] {
        let at = self.len;
        self.map[at..at + data.len()].copy_from_slice(data);
        self.len += data.len();
        &self.map[at..at + data.len()]
    }

    fn data(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

/// A filled stage on its way to the disk.
struct Piece {
    file: Arc<File>,
    offset: u64,
    stage: Stage,
    /// The end of the file, which may not be aligned: written through the
    /// page cache.
    tail: bool,
}

/// Stages the appends of one thread's chunks and has them written by a
/// background thread, which hands each buffer back once it is on disk.
pub(crate) struct Stager {
    pieces: Option<mpsc::Sender<Piece>>,
    free: mpsc::Receiver<Stage>,
    made: usize,
    failed: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Stager {
    /// Start the writing thread.
    pub(crate) fn new() -> io::Result<Stager> {
        let (pieces, to_write) = mpsc::channel::<Piece>();
        let (give_back, free) = mpsc::channel::<Stage>();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failed);
        let thread = thread::Builder::new()
            .name("batchkit-write".to_owned())
            .spawn(move || {
                let mut failure = None;
                for piece in to_write {
                    if failure.is_none() {
                        if let Err(e) = write_piece(&piece) {
                            flag.store(true, Ordering::Relaxed);
                            failure = Some(e);
                        }
                    }
                    // The stager may be gone; then the buffer is freed here.
                    let _ = give_back.send(piece.stage);
                }
                failure.map_or(Ok(()), Err)
            })?;
        Ok(Stager {
            pieces: Some(pieces),
            free,
            made: 0,
            failed,
            thread: Some(thread),
        })
    }

    /// An empty stage: a new one, or the next one written.
    fn take(&mut self) -> io::Result<Stage> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(io::Error::other("an earlier chunk write failed"));
        }
        let stage = match self.free.try_recv() {
            Ok(stage) => stage,
            Err(_) if self.made < STAGES => {
                self.made += 1;
                Stage::new()?
            }
            Err(_) => self
                .free
                .recv()
                .map_err(|_| io::Error::other("the chunk writing thread stopped"))?,
        };
        Ok(Stage { len: 0, ..stage })
    }

    fn send(&self, piece: Piece) -> io::Result<()> {
        self.pieces
            .as_ref()
            .and_then(|p| p.send(piece).ok())
            .ok_or_else(|| io::Error::other("the chunk writing thread stopped"))
    }

    /// Wait until everything queued is written; the first write error, if
    /// any.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.pieces = None;
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the chunk writing thread failed")),
            None => Ok(()),
        }
    }
}

/// A chunk being written.
pub(crate) struct ChunkFile {
    file: Arc<File>,
    path: TempPath,
    hasher: Sha256,
    /// Bytes handed to the writing thread so far (a multiple of [`ALIGN`]
    /// until the tail).
    queued: u64,
    /// Bytes appended but not yet queued (fewer than [`ALIGN`]).
    carry: Vec<u8>,
}

impl ChunkFile {
    /// A new temporary file in `dir`, readable like any output (0644),
    /// with direct I/O if `direct` and the platform and file system allow,
    /// and `reserve` bytes allocated up front where supported (best effort).
    pub(crate) fn create(dir: &Path, direct: bool, reserve: u64) -> io::Result<ChunkFile> {
        let tmp = crate::atomic::temp_file(dir, ".batchkit-split.", 0o644)?;
        if direct {
            // Refused here means ordinary writes throughout.
            let _ = set_direct(tmp.as_file(), true);
        }
        #[cfg(target_os = "linux")]
        if reserve > 0 {
            let none = rustix::fs::FallocateFlags::empty();
            let _ = rustix::fs::fallocate(tmp.as_file(), none, 0, reserve);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = reserve;
        let (file, path) = tmp.into_parts();
        Ok(ChunkFile {
            file: Arc::new(file),
            path,
            hasher: Sha256::new(),
            queued: 0,
            carry: Vec::new(),
        })
    }

    /// Append `runs`, in order.
    pub(crate) fn append<'a>(
        &mut self,
        runs: impl IntoIterator<Item = &'a [u8]>,
        stager: &mut Stager,
    ) -> io::Result<()> {
        let mut stage = stager.take()?;
        stage.push(&self.carry);
        self.carry.clear();
        for run in runs {
            // Copy and hash a piece at a time, so the hash reads it from cache.
            for mut piece in run.chunks(256 << 10) {
                while !piece.is_empty() {
                    let n = piece.len().min(stage.room());
                    self.hasher.update(stage.push(&piece[..n]));
                    piece = &piece[n..];
                    if stage.room() == 0 {
                        self.queue(stage, stager, false)?;
                        stage = stager.take()?;
                    }
                }
            }
        }
        let whole = stage.len / ALIGN * ALIGN;
        self.carry.extend_from_slice(&stage.data()[whole..]);
        stage.len = whole;
        self.queue(stage, stager, false)
    }

    /// Queue the rest; return the file (still temporary, and complete once
    /// `stager` is finished) and the SHA-256 of its bytes, in lowercase hex.
    pub(crate) fn finish(mut self, stager: &mut Stager) -> io::Result<(TempPath, String)> {
        if !self.carry.is_empty() {
            let mut stage = stager.take()?;
            stage.push(&self.carry);
            self.queue(stage, stager, true)?;
        }
        let sum = self.hasher.finalize();
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        Ok((self.path, hex))
    }

    fn queue(&mut self, stage: Stage, stager: &Stager, tail: bool) -> io::Result<()> {
        let offset = self.queued;
        self.queued += stage.len as u64;
        stager.send(Piece {
            file: Arc::clone(&self.file),
            offset,
            stage,
            tail,
        })
    }
}

/// Write a piece where it belongs. A direct write the file system refuses
/// is retried, and the file finished, through the page cache.
fn write_piece(piece: &Piece) -> io::Result<()> {
    let file = &*piece.file;
    if piece.tail {
        set_direct(file, false)?;
    }
    let (mut data, mut offset) = (piece.stage.data(), piece.offset);
    while !data.is_empty() {
        match write_at(file, data, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Also what a short direct write leads to: the rest is unaligned.
            Err(e) if e.raw_os_error() == Some(EINVAL) && is_direct(file) => {
                set_direct(file, false)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    if flags.contains(OFlags::DIRECT) != on {
        flags.set(OFlags::DIRECT, on);
        fcntl_setfl(file, flags)?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn is_direct(file: &File) -> bool {
    rustix::fs::fcntl_getfl(file).is_ok_and(|f| f.contains(rustix::fs::OFlags::DIRECT))
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::ErrorKind::Unsupported.into())
    } else {
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
fn is_direct(_file: &File) -> bool {
    false
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

    /// Appends of every awkward size, direct and not, several files at
    /// once through one stager, give the bytes and hash back.
    #[test]
    fn appends_of_any_size_give_the_bytes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(3 * STAGE + 12_345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let plans = [
            vec![data.len()],
            vec![1, 4095, 4096, 4097, STAGE - 1, STAGE + 1],
            vec![ALIGN; 10],
            vec![7; 3],
            vec![],
        ];
        for direct in [true, false] {
            let mut stager = Stager::new().expect("stager");
            let mut files: Vec<(ChunkFile, usize)> = plans
                .iter()
                .map(|_| (ChunkFile::create(dir.path(), direct, 0).expect("create"), 0))
                .collect();
            // Interleave the files' appends, as a writer thread does.
            for step in 0..10 {
                for ((f, at), sizes) in files.iter_mut().zip(&plans) {
                    let Some(&n) = sizes.get(step) else { continue };
                    let end = (*at + n).min(data.len());
                    // Two runs per append, to cover joins between runs.
                    let mid = *at + (end - *at) / 3;
                    f.append([&data[*at..mid], &data[mid..end]], &mut stager)
                        .expect("append");
                    *at = end;
                }
            }
            let done: Vec<(TempPath, String, usize)> = files
                .into_iter()
                .map(|(f, at)| {
                    let (path, sum) = f.finish(&mut stager).expect("finish");
                    (path, sum, at)
                })
                .collect();
            stager.finish().expect("written");
            for ((path, sum, at), sizes) in done.iter().zip(&plans) {
                let back = std::fs::read(path).expect("read");
                assert_eq!(back.len(), *at, "{sizes:?} direct={direct}");
                assert!(back == data[..*at], "{sizes:?} direct={direct}");
                assert_eq!(*sum, sha(&data[..*at]));
            }
        }
    }

    #[test]
    fn the_file_is_removed_unless_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stager = Stager::new().expect("stager");
        let mut f = ChunkFile::create(dir.path(), true, 100).expect("create");
        f.append([&b"{}\n"[..]], &mut stager).expect("append");
        drop(f);
        stager.finish().expect("written");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn direct_or_not_the_bytes_come_back() {
        // /dev/shm is tmpfs: older kernels refuse O_DIRECT there, newer
        // ones accept it; /tmp is usually a disk. Either way the bytes
        // must come back whole.
        for place in ["/dev/shm", "/tmp"] {
            let Ok(dir) = tempfile::tempdir_in(place) else {
                continue;
            };
            let mut stager = Stager::new().expect("stager");
            let f = ChunkFile::create(dir.path(), true, 0).expect("create");
            let data = vec![b'x'; 3 * ALIGN + 5];
            let mut f = f;
            f.append([&data[..]], &mut stager).expect("append");
            let (path, _) = f.finish(&mut stager).expect("finish");
            stager.finish().expect("written");
            assert_eq!(std::fs::read(&path).expect("read"), data, "{place}");
        }
    }
}
