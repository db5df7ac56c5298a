//! Opening inputs: files are memory-mapped; standard input and gzip streams
//! are read in blocks of whole lines by a reader thread, so memory stays
//! bounded by the block size (plus the longest line) whatever the input size.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use memmap2::Mmap;

/// Default size of one streamed block.
pub const DEFAULT_BLOCK_SIZE: usize = 8 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An input that could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Opening or reading the input failed.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The input's name (`-` for standard input).
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
}

impl InputError {
    fn io(path: &Path, source: io::Error) -> Self {
        InputError::Io {
            path: path.to_owned(),
            error: source,
        }
    }
}

/// Where the bytes come from.
pub enum Source {
    /// A whole file, memory-mapped (or empty).
    Mapped(Mapped),
    /// A stream read block by block (stdin, or a decompressed gzip file).
    Stream(Box<dyn Read + Send>),
}

/// A memory-mapped file; empty files are not mapped at all.
pub struct Mapped(Option<Mmap>);

impl Mapped {
    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// An opened input with its display name.
pub struct Input {
    /// The name used in diagnostics: the path as given, or `-`.
    pub name: PathBuf,
    /// The bytes.
    pub source: Source,
    /// Size on disk, when known (compressed size for gzip files).
    pub size_hint: Option<u64>,
}

impl Input {
    /// Open `path`, or standard input if it is `-`. Gzip data (by its magic
    /// bytes, whatever the name) is decompressed as a stream; other files
    /// are memory-mapped.
    pub fn open(path: &Path) -> Result<Input, InputError> {
        if path.as_os_str() == "-" {
            let stdin = io::stdin();
            widen_pipe(&stdin);
            return Ok(Input {
                name: path.to_owned(),
                source: Source::Stream(sniff_gzip(Box::new(stdin), path)?),
                size_hint: None,
            });
        }
        // Opened once: a named pipe or `<(...)` cannot be opened again (the
        // second open would read nothing, or wait for a writer for ever).
        let mut file = File::open(path).map_err(|e| InputError::io(path, e))?;
        let meta = file.metadata().map_err(|e| InputError::io(path, e))?;
        if meta.is_dir() {
            return Err(InputError::io(
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "is a directory"),
            ));
        }
        if !meta.is_file() {
            // A pipe or device given by name: stream it.
            widen_pipe(&file);
            return Ok(Input {
                name: path.to_owned(),
                source: Source::Stream(sniff_gzip(Box::new(file), path)?),
                size_hint: None,
            });
        }
        let mut magic = [0u8; 2];
        let n = read_full(&mut file, &mut magic).map_err(|e| InputError::io(path, e))?;
        if n == 2 && magic == GZIP_MAGIC {
            use std::io::Seek;
            file.rewind().map_err(|e| InputError::io(path, e))?;
            return Ok(Input {
                name: path.to_owned(),
                source: Source::Stream(gzip(Box::new(file))),
                size_hint: Some(meta.len()),
            });
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the map is read-only. Like every tool that maps its
            // input (ripgrep, memchr users), we accept that another process
            // truncating the file while we read it is undefined behaviour;
            // a file being appended to is fine, as the mapped length is fixed.
            #[allow(unsafe_code)]
            let map = unsafe { Mmap::map(&file) }.map_err(|e| InputError::io(path, e))?;
            Some(map)
        };
        Ok(Input {
            name: path.to_owned(),
            source: Source::Mapped(Mapped(map)),
            size_hint: Some(meta.len()),
        })
    }

    /// The whole input as one mapped byte slice. Files are mapped as they
    /// are; streams (stdin, gzip) are first copied to an unnamed temporary
    /// file, which disappears when the mapping is dropped. For commands that
    /// must read their input twice or out of order.
    pub fn into_mapped(self) -> Result<Mapped, InputError> {
        match self.source {
            Source::Mapped(m) => Ok(m),
            Source::Stream(mut reader) => {
                let name = &self.name;
                let mut spool = tempfile::tempfile().map_err(|e| InputError::io(name, e))?;
                let len = io::copy(&mut reader, &mut spool).map_err(|e| InputError::io(name, e))?;
                if len == 0 {
                    return Ok(Mapped(None));
                }
                // SAFETY: the file is unnamed and private to this process.
                #[allow(unsafe_code)]
                let map = unsafe { Mmap::map(&spool) }.map_err(|e| InputError::io(name, e))?;
                Ok(Mapped(Some(map)))
            }
        }
    }

    /// An in-memory input, mostly for tests and benchmarks.
    pub fn from_reader(name: &str, reader: Box<dyn Read + Send>) -> Result<Input, InputError> {
        let path = Path::new(name);
        Ok(Input {
            name: path.to_owned(),
            source: Source::Stream(sniff_gzip(reader, path)?),
            size_hint: None,
        })
    }
}

/// Read as many bytes as fit in `buf`, stopping early only at end of input.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn sniff_gzip(
    mut reader: Box<dyn Read + Send>,
    path: &Path,
) -> Result<Box<dyn Read + Send>, InputError> {
    let mut magic = [0u8; 2];
    let n = read_full(&mut reader, &mut magic).map_err(|e| InputError::io(path, e))?;
    let whole = io::Cursor::new(magic[..n].to_vec()).chain(reader);
    if n == 2 && magic == GZIP_MAGIC {
        Ok(gzip(Box::new(whole)))
    } else {
        Ok(Box::new(whole))
    }
}

/// The decompressed bytes of gzip data (one member or several, as `gzip -d`
/// reads them).
fn gzip(compressed: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    Box::new(GzipMembers::new(BufReader::with_capacity(
        1 << 20,
        compressed,
    )))
}

/// Gzip members one after another; bytes after the last member that do not
/// start another are an error that says so (a plain multi-member decoder
/// takes them for a member and reports "invalid gzip header" or "unexpected
/// end of file", which sends the user looking in the wrong place).
struct GzipMembers<R: io::BufRead> {
    /// The member being read; `None` between members.
    member: Option<flate2::bufread::GzDecoder<Counted<R>>>,
    /// Between members (or at the start): the compressed input.
    rest: Option<Counted<R>>,
}

/// A buffered reader that counts the bytes consumed (for error positions).
struct Counted<R> {
    inner: R,
    consumed: u64,
}

impl<R: io::BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.consumed += n as u64;
        self.inner.consume(n);
    }
}

impl<R: io::BufRead> GzipMembers<R> {
    fn new(inner: R) -> Self {
        GzipMembers {
            member: None,
            rest: Some(Counted { inner, consumed: 0 }),
        }
    }
}

impl<R: io::BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(member) = &mut self.member {
                let at = member.get_ref().consumed;
                match member.read(buf) {
                    Ok(0) => {
                        self.rest = self.member.take().map(|m| m.into_inner());
                        continue;
                    }
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "the gzip data is damaged near compressed byte {at} ({e}); the file may be truncated or corrupt (check it with `gzip -t`)"
                            ),
                        ));
                    }
                }
            }
            let Some(mut rest) = self.rest.take() else {
                return Ok(0);
            };
            let head = io::BufRead::fill_buf(&mut rest)?;
            if head.is_empty() {
                return Ok(0);
            }
            let starts_member = head.first() == Some(&GZIP_MAGIC[0])
                && (head.len() < 2 || head[1] == GZIP_MAGIC[1]);
            if !starts_member {
                let at = rest.consumed;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the bytes after the gzip data (from compressed byte {at}) are not gzip data: the file was appended to or is damaged (`gzip -t` checks it)"
                    ),
                ));
            }
            self.member = Some(flate2::bufread::GzDecoder::new(rest));
        }
    }
}

/// Ask for a 1 MiB buffer on a pipe at standard input (Linux gives 64 KiB,
/// and at that size the writer and the reader wake each other sixteen times
/// as often: `cat f | batchkit validate -` spent about half its time in the
/// pipe). Anything that is not a pipe, or a refusal, leaves it as it was.
#[cfg(target_os = "linux")]
fn widen_pipe(fd: impl std::os::fd::AsFd) {
    let is_pipe = rustix::fs::fstat(&fd).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo
    });
    if is_pipe {
        let _ = rustix::pipe::fcntl_setpipe_size(&fd, PIPE_BUFFER);
    }
}

#[cfg(not(target_os = "linux"))]
fn widen_pipe<T>(_: T) {}

/// The pipe buffer asked for: Linux's default limit for unprivileged users.
#[cfg(target_os = "linux")]
const PIPE_BUFFER: usize = 1 << 20;

/// Read `reader` in blocks of about `block_size` bytes, each holding only
/// whole lines (the last block may end without a newline), and hand them to
/// `f` in order. A reader thread fills the next block while `f` works.
///
/// A line longer than `block_size` makes its block grow to hold it: memory is
/// bounded by two blocks plus the longest line.
pub fn for_each_block(
    reader: Box<dyn Read + Send>,
    name: &Path,
    block_size: usize,
    mut f: impl FnMut(&[u8]),
) -> Result<(), InputError> {
    let block_size = block_size.max(1);
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        scope.spawn(move || read_blocks(reader, block_size, &full_tx, &free_rx));
        for block in full_rx {
            let block = block.map_err(|e| InputError::io(name, e))?;
            f(&block);
            // The reader may have finished; then the buffer is simply dropped.
            let _ = free_tx.send(block);
        }
        Ok(())
    })
}

fn read_blocks(
    mut reader: Box<dyn Read + Send>,
    block_size: usize,
    full: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    free: &mpsc::Receiver<Vec<u8>>,
) {
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = free.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&carry);
        carry.clear();
        let mut scanned = 0;
        let cut = loop {
            let target = buf.len() + block_size;
            let eof = match fill(&mut reader, &mut buf, target) {
                Ok(eof) => eof,
                Err(e) => {
                    let _ = full.send(Err(e));
                    return;
                }
            };
            if eof {
                break None;
            }
            match memchr::memrchr(b'\n', &buf[scanned..]) {
                Some(p) => break Some(scanned + p + 1),
                // No line ends in this block yet: a long line; read on.
                None => scanned = buf.len(),
            }
        };
        match cut {
            Some(cut) => {
                carry.extend_from_slice(&buf[cut..]);
                buf.truncate(cut);
                if full.send(Ok(buf)).is_err() {
                    return;
                }
            }
            None => {
                if !buf.is_empty() {
                    let _ = full.send(Ok(buf));
                }
                return;
            }
        }
    }
}

/// Read into `buf` until it holds `target` bytes or the input ends.
/// Returns whether the input ended. The room is not zeroed first: files,
/// pipes and stdin read into it as it is (`Read::read_buf`), which saves a
/// pass over every block.
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>, target: usize) -> io::Result<bool> {
    let want = target.saturating_sub(buf.len());
    buf.reserve_exact(want);
    let got = reader.take(want as u64).read_to_end(buf)?;
    Ok(got < want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pipe_is_widened_and_a_file_left_alone() {
        let (reader, _writer) = rustix::pipe::pipe().expect("pipe");
        let before = rustix::pipe::fcntl_getpipe_size(&reader).expect("pipe size");
        widen_pipe(&reader);
        let after = rustix::pipe::fcntl_getpipe_size(&reader).expect("pipe size");
        // A system with a lower pipe-max-size refuses; then nothing changes.
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if max >= PIPE_BUFFER {
            assert_eq!(after, PIPE_BUFFER);
        } else {
            assert_eq!(after, before);
        }
        let file = tempfile::tempfile().expect("file");
        widen_pipe(&file);
    }

    fn blocks(data: &[u8], size: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let reader = Box::new(io::Cursor::new(data.to_vec()));
        for_each_block(reader, Path::new("-"), size, |b| out.push(b.to_vec()))
            .expect("in-memory reads cannot fail");
        out
    }

    #[test]
    fn blocks_hold_whole_lines_and_cover_the_input() {
        let data = b"one\ntwo\nthree-long-line\n\nfive";
        for size in 1..40 {
            let got = blocks(data, size);
            assert_eq!(got.concat(), data, "block size {size}");
            for b in &got[..got.len() - 1] {
                assert_eq!(b.last(), Some(&b'\n'), "block size {size}");
            }
        }
        assert!(blocks(b"", 4).is_empty());
    }

    #[test]
    fn gzip_is_detected_by_magic() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"a\":1}\n").expect("write to memory");
        let gz = enc.finish().expect("finish gzip");
        let input = Input::from_reader("x.gz", Box::new(io::Cursor::new(gz))).expect("open");
        let Source::Stream(mut r) = input.source else {
            panic!("gzip input is a stream")
        };
        let mut s = String::new();
        r.read_to_string(&mut s).expect("decompress");
        assert_eq!(s, "{\"a\":1}\n");
    }
}
