//! Finding lines: newline-aligned chunks for parallel work, and a line
//! iterator that strips `\n` and `\r\n` endings.

use std::ops::Range;

/// Cut `buf` into consecutive ranges of roughly `target` bytes, each ending
/// just after a `\n` (the last one may end without). Together they cover
/// `buf` exactly, so every line lies inside exactly one range.
pub fn chunk_ranges(buf: &[u8], target: usize) -> Vec<Range<usize>> {
    let target = target.max(1);
    let mut ranges = Vec::with_capacity(buf.len() / target + 1);
    let mut start = 0;
    while start < buf.len() {
        let guess = start.saturating_add(target).min(buf.len());
        let end = if guess >= buf.len() {
            buf.len()
        } else {
            // Search from the byte before `guess` so a chunk that already ends
            // on a newline is not stretched to the next one.
            match memchr::memchr(b'\n', &buf[guess - 1..]) {
                Some(p) => guess + p,
                None => buf.len(),
            }
        };
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// One line of input, without its line ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// Byte offset of the line's first byte within the scanned buffer.
    pub offset: usize,
    /// The line's bytes, without `\n` or `\r\n`.
    pub bytes: &'a [u8],
}

/// Iterator over the lines of a buffer. A final line without `\n` is a line;
/// a buffer ending in `\n` has no empty line after it.
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    /// Iterate over the lines of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Lines { buf, pos: 0 }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.buf[start..];
        let (mut end, next) = match memchr::memchr(b'\n', rest) {
            Some(p) => (start + p, start + p + 1),
            None => (self.buf.len(), self.buf.len()),
        };
        if end > start && self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        self.pos = next;
        Some(Line {
            offset: start,
            bytes: &self.buf[start..end],
        })
    }
}

/// Whether a line (without its ending) is empty or only spaces, tabs and
/// carriage returns: the services skip such lines.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// The line at the start of `buf`, without its `\n` or `\r\n`, and where
/// it ends: the index of its `\n`, or `buf.len()`.
pub(crate) fn first_line(buf: &[u8]) -> (&[u8], usize) {
    let end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = &buf[..end];
    (line.strip_suffix(b"\r").unwrap_or(line), end)
}

/// Number of lines in `buf`, counted as [`Lines`] counts them.
pub fn count_lines(buf: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', buf).count() as u64;
    let unterminated = u64::from(!buf.is_empty() && buf.last() != Some(&b'\n'));
    newlines + unterminated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buf: &[u8]) -> Vec<&[u8]> {
        Lines::new(buf).map(|l| l.bytes).collect()
    }

    #[test]
    fn endings() {
        assert_eq!(lines(b""), Vec::<&[u8]>::new());
        assert_eq!(lines(b"a\nb"), vec![&b"a"[..], b"b"]);
        assert_eq!(lines(b"a\r\nb\r\n"), vec![&b"a"[..], b"b"]);
        assert_eq!(lines(b"\n\n"), vec![&b""[..], b""]);
        assert_eq!(lines(b"a\r"), vec![&b"a"[..]]);
        assert_eq!(count_lines(b"a\nb"), 2);
        assert_eq!(count_lines(b"a\n"), 1);
        assert_eq!(count_lines(b""), 0);
    }

    #[test]
    fn chunks_cover_the_buffer_on_line_boundaries() {
        let buf = b"aaa\nbb\n\ncccc\nd";
        for target in 1..20 {
            let ranges = chunk_ranges(buf, target);
            let mut expect = 0;
            for r in &ranges {
                assert_eq!(r.start, expect);
                assert!(r.end == buf.len() || buf[r.end - 1] == b'\n');
                expect = r.end;
            }
            assert_eq!(expect, buf.len());
            let total: u64 = ranges.iter().map(|r| count_lines(&buf[r.clone()])).sum();
            assert_eq!(total, count_lines(buf));
        }
    }
}
