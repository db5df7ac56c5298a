//! The line walker: it finds each line of a chunk, reads it (the byte
//! scanner first, `serde_json` for what the scanner declines), has
//! [`rules`] judge it, and hands what it learnt to the caller's
//! [`LineSink`]. What a run of chunks adds up to is in
//! [`crate::validate`], which absorbs them in input order.

use std::collections::HashMap;

use crate::dedup::IdEntry;
use crate::diag::{Code, CodeCounts, Diagnostic, excerpt_with_caret, locate};
use crate::envelope::{self, Body, Text};
use crate::lines::is_blank;
use crate::provider::Profile;

mod rules;
mod sink;

pub use sink::{LineSink, SeenLine, Sink};

pub(crate) const EXCERPT_WIDTH: usize = 72;
pub(crate) const NOT_JSON: &str = "This line is not parseable as valid JSON";
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// Distinct model names tallied per chunk and per run; the rest are lumped.
pub(crate) const MAX_MODELS: usize = 64;

/// What every line is judged against.
#[derive(Clone, Copy)]
pub(crate) struct LineCtx<'a> {
    pub profile: &'a Profile,
    /// The batch endpoint: `--endpoint`, else the first line's `url`.
    pub endpoint: Option<&'a str>,
    /// The batch model (first `body.model`), when one model is required.
    pub model: Option<(&'a str, u64)>,
    /// Where, in the chunk, the lines start that the endpoint and the model
    /// apply to: the lines before the first line with a `url` (or a model)
    /// are judged without it, so that no diagnostic depends on whether that
    /// line is in the same block (`0`: every line, `u64::MAX`: none).
    pub endpoint_from: u64,
    pub model_from: u64,
    pub single_model: bool,
    pub single_endpoint: bool,
    /// Whether to note where each id's line starts (to name repeats).
    pub id_lines: bool,
}

impl<'a> LineCtx<'a> {
    /// The context of a line at `offset` in the chunk that comes before
    /// the line the endpoint or the model was read from; `None` when the
    /// line is at or after both (the usual case, one comparison).
    fn before_references(&self, offset: u64) -> Option<LineCtx<'a>> {
        if offset >= self.endpoint_from && offset >= self.model_from {
            return None;
        }
        let mut earlier = *self;
        if offset < self.endpoint_from {
            earlier.endpoint = None;
        }
        if offset < self.model_from {
            earlier.model = None;
        }
        Some(earlier)
    }

    /// The context for a chunk that starts `start` bytes after the point
    /// `endpoint_from` and `model_from` are counted from.
    pub(crate) fn for_chunk(&self, start: u64) -> LineCtx<'a> {
        LineCtx {
            endpoint_from: self.endpoint_from.saturating_sub(start),
            model_from: self.model_from.saturating_sub(start),
            ..*self
        }
    }
}

/// Model names and how many lines use each.
#[derive(Default, Debug, Clone)]
pub(crate) struct ModelTally {
    pub names: HashMap<Box<str>, u64>,
    /// Lines whose model did not fit in the table.
    pub others: u64,
}

impl ModelTally {
    pub fn add(&mut self, name: &str, n: u64) {
        if let Some(c) = self.names.get_mut(name) {
            *c += n;
        } else if self.names.len() < MAX_MODELS {
            self.names.insert(name.into(), n);
        } else {
            self.others += n;
        }
    }

    pub fn merge(&mut self, other: ModelTally) {
        for (name, n) in other.names {
            self.add(&name, n);
        }
        self.others += other.others;
    }
}

/// What one chunk of lines produced. Line numbers and offsets are relative
/// to the chunk until the run absorbs it.
#[derive(Default)]
pub(crate) struct ChunkOut {
    pub lines: u64,
    pub requests: u64,
    pub blank: u64,
    pub embedding_inputs: u64,
    pub longest_line: u64,
    pub ids: Vec<IdEntry>,
    /// The offset in the chunk of the line of each entry of `ids`.
    pub id_lines: Vec<u64>,
    pub diags: Vec<Diagnostic>,
    pub counts: CodeCounts,
    pub models: ModelTally,
    /// How many diagnostics to keep (all are counted).
    pub keep: usize,
    /// Errors counted so far (to tell which lines have one).
    pub errors: u64,
}

impl ChunkOut {
    pub fn new(keep: usize) -> Self {
        ChunkOut {
            keep,
            ..ChunkOut::default()
        }
    }

    /// Count a problem; build and keep its diagnostic only while under the
    /// cap, so a file of a million bad lines costs no million messages.
    pub(crate) fn report(&mut self, code: Code, at: Pos<'_>, build: impl FnOnce() -> Diagnostic) {
        self.counts.add(code);
        if code.severity() == crate::diag::Severity::Error {
            self.errors += 1;
        }
        if self.diags.len() < self.keep {
            let mut d = build();
            d.code = code;
            d.line = Some(at.line);
            // Point at the field the problem is about, where it is known.
            let column = match (&d.param, at.column) {
                (Some(param), 0) => locate(at.text, param),
                _ => at.column,
            };
            d.offset = Some(at.offset + column as u64);
            let (text, caret) = excerpt_with_caret(at.text, column, EXCERPT_WIDTH);
            d.excerpt = Some(text);
            d.caret = (column > 0).then_some(caret);
            self.diags.push(d);
        }
    }
}

/// The line without a leading byte order mark.
pub(crate) fn without_bom(line: &[u8]) -> &[u8] {
    line.strip_prefix(UTF8_BOM).unwrap_or(line)
}

/// A line's `custom_id` (the line starts at `line` and may run on to the end
/// of the block), with an excerpt centred on it: the id, its column, the
/// excerpt and the caret's place in it.
pub(crate) fn custom_id_of(line: &[u8]) -> Option<(String, usize, String, usize)> {
    let line = crate::lines::Lines::new(line).next()?.bytes;
    let id = crate::custom_id::read(without_bom(line)).ok()?.into_owned();
    let column = locate(line, "custom_id");
    let (excerpt, caret) = excerpt_with_caret(line, column, EXCERPT_WIDTH);
    Some((id, column, excerpt, caret))
}

/// Where a problem is: the line (relative), its offset and text, and the
/// column within it.
#[derive(Clone, Copy)]
pub(crate) struct Pos<'a> {
    pub(crate) line: u64,
    pub(crate) offset: u64,
    pub(crate) text: &'a [u8],
    pub(crate) column: usize,
}

impl<'a> Pos<'a> {
    pub(crate) fn at(self, column: usize) -> Pos<'a> {
        Pos { column, ..self }
    }
}

/// Check every line of `chunk`, handing each to `sink`. `starts_file` says
/// whether the chunk's first line is the file's first (where a byte order
/// mark would be).
pub(crate) fn check_chunk<L: LineSink>(
    ctx: &LineCtx<'_>,
    chunk: &[u8],
    starts_file: bool,
    out: &mut ChunkOut,
    sink: &mut L,
) {
    walk(ctx, chunk, starts_file, out, sink, |_| false);
}

/// Check lines of `chunk` until `stop` holds after one; return that line's
/// 0-based index in the chunk. Used to find the line where a running total
/// crosses a limit.
pub(crate) fn first_line_where(
    ctx: &LineCtx<'_>,
    chunk: &[u8],
    starts_file: bool,
    stop: impl Fn(&ChunkOut) -> bool,
) -> Option<u64> {
    let mut out = ChunkOut::new(0);
    walk(ctx, chunk, starts_file, &mut out, &mut (), stop)
}

fn walk<L: LineSink>(
    ctx: &LineCtx<'_>,
    chunk: &[u8],
    starts_file: bool,
    out: &mut ChunkOut,
    sink: &mut L,
    stop: impl Fn(&ChunkOut) -> bool,
) -> Option<u64> {
    let mut at = 0;
    let mut i = 0;
    while at < chunk.len() {
        // The scanner finds the line's end as it reads it; a line it
        // declines is found by a search for its end and read slowly.
        let (end, scanned) = match crate::scan::scan_to_newline(&chunk[at..]) {
            Some((view, escapes, len)) => (at + len, Some((view, escapes))),
            None => (
                memchr::memchr(b'\n', &chunk[at..]).map_or(chunk.len(), |p| at + p),
                None,
            ),
        };
        let start = at;
        let bytes = chunk[start..end]
            .strip_suffix(b"\r")
            .unwrap_or(&chunk[start..end]);
        // The next line starts after the `\n` (or past the chunk's end).
        at = end + 1;
        let pos = Pos {
            line: out.lines,
            offset: start as u64,
            text: bytes,
            column: 0,
        };
        let (errors_before, blank_before) = (out.errors, out.blank);
        let first = starts_file && i == 0;
        let line_ctx = ctx.before_references(start as u64);
        let line_ctx = line_ctx.as_ref().unwrap_or(ctx);
        let view = check_line(line_ctx, bytes, scanned, first, pos, out);
        // The line with its ending (a line of 4 GiB or more is counted as
        // 4 GiB; no limit of any service comes near).
        let len = (at.min(chunk.len()) - start).min(u32::MAX as usize) as u32;
        sink.line(&SeenLine::new(
            line_ctx,
            view.as_ref(),
            (start as u64, len),
            out.blank > blank_before,
            out.errors > errors_before,
        ));
        if stop(out) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Check one line; `scanned` is the scanner's reading of it, if it gave
/// one. Returns the line's reading, or `None` for a blank line or one that
/// cannot be read as a request object.
fn check_line<'a>(
    ctx: &LineCtx<'_>,
    raw: &'a [u8],
    scanned: Option<(envelope::LineView<'a>, bool)>,
    first_of_file: bool,
    pos: Pos<'_>,
    out: &mut ChunkOut,
) -> Option<envelope::LineView<'a>> {
    out.lines += 1;
    out.longest_line = out.longest_line.max(raw.len() as u64);
    let first_diag = out.diags.len();
    let (view, escapes, skip) = match scanned {
        Some((view, escapes)) => {
            out.requests += 1;
            (view, escapes, 0)
        }
        None => read_slowly(raw, first_of_file, pos, out)?,
    };
    if escapes {
        if let Some(at) = envelope::find_lone_surrogate(&raw[skip..]) {
            let at = skip + at;
            out.report(Code::InvalidJsonLine, pos.at(at), || {
                Diagnostic::new(
                    Code::InvalidJsonLine,
                    format!("{NOT_JSON}: the escape at column {} is half of a UTF-16 surrogate pair, which is not valid Unicode.", at + 1),
                )
                .hint("escape characters outside the BMP as a \\uD8xx\\uDCxx pair, or write them as UTF-8")
            });
        }
    }
    rules::check_view(ctx, &view, pos, out);

    // Stamp the line's custom_id on its diagnostics.
    if let Some(Text::Str(id)) = &view.custom_id {
        for d in &mut out.diags[first_diag..] {
            d.custom_id = Some(id.to_string());
        }
    }
    Some(view)
}

/// Count and read a line the scanner declined: a blank line, a line with a
/// byte order mark, or one whose UTF-8, shape and syntax are checked here,
/// reporting the first problem, and which `serde_json` reads when it is fine
/// after all. Returns the view, whether the line holds an escape, and the
/// length of the mark skipped.
fn read_slowly<'a>(
    raw: &'a [u8],
    first_of_file: bool,
    pos: Pos<'_>,
    out: &mut ChunkOut,
) -> Option<(envelope::LineView<'a>, bool, usize)> {
    if is_blank(raw) {
        out.blank += 1;
        out.report(Code::BlankLine, pos, || {
            Diagnostic::new(Code::BlankLine, "This line is blank.")
                .hint("the services skip blank lines, but some tools choke on them; delete it")
        });
        return None;
    }
    out.requests += 1;
    let mut skip = 0;
    if first_of_file && raw.starts_with(UTF8_BOM) {
        skip = UTF8_BOM.len();
        out.report(Code::InvalidJsonLine, pos, || {
            Diagnostic::new(Code::InvalidJsonLine, format!("{NOT_JSON}: it starts with a UTF-8 byte order mark (BOM)."))
                .hint("save the file as UTF-8 without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`); Azure reports a BOM as a misleading model error")
        });
    }
    let body_bytes = &raw[skip..];
    let text = match simdutf8::compat::from_utf8(body_bytes) {
        Ok(s) => s,
        Err(e) => {
            let at = skip + e.valid_up_to();
            out.report(Code::InvalidJsonLine, pos.at(at), || {
                Diagnostic::new(
                    Code::InvalidJsonLine,
                    format!("{NOT_JSON}: invalid UTF-8 at column {}.", at + 1),
                )
                .hint("batch files must be UTF-8; re-encode the file (e.g. `iconv -f latin1 -t utf-8`)")
            });
            return None;
        }
    };
    let first_char = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if first_char != Some(b'{') {
        match envelope::parse_any(text) {
            Ok(kind) => out.report(Code::InvalidRequest, pos, || {
                Diagnostic::new(
                    Code::InvalidRequest,
                    format!("Each line must be a JSON object, but this line is {}.", kind.described()),
                )
                .hint("write one request object per line: {\"custom_id\": ..., \"method\": \"POST\", \"url\": ..., \"body\": {...}}")
            }),
            Err(e) => report_syntax(out, pos, skip, &e),
        }
        return None;
    }
    match envelope::parse_line_serde(text) {
        Ok(view) => Some((view, memchr::memchr(b'\\', body_bytes).is_some(), skip)),
        Err(e) => {
            report_syntax(out, pos, skip, &e);
            None
        }
    }
}

fn report_syntax(out: &mut ChunkOut, pos: Pos<'_>, skip: usize, e: &serde_json::Error) {
    // serde_json counts columns in bytes, 1-based; the line is its line 1.
    let at = skip + e.column().saturating_sub(1);
    let what = e.to_string();
    let what = what.split(" at line ").next().unwrap_or(&what).to_owned();
    out.report(Code::InvalidJsonLine, pos.at(at), || {
        Diagnostic::new(
            Code::InvalidJsonLine,
            format!("{NOT_JSON}: {what} at column {}.", at + 1),
        )
        .hint("each line must be one complete JSON object; a request must not span lines")
    });
}

/// The first string `url` and `body.model` of a buffer's lines, with the
/// 0-based index of the line each came from.
#[derive(Default, Debug)]
pub(crate) struct FirstSeen {
    /// The value, its line's index and its line's byte offset in the buffer.
    pub url: Option<(String, u64, u64)>,
    pub model: Option<(String, u64, u64)>,
}

/// Scan lines from the start of `buf` until both a string `url` (if
/// `want_url`) and a string `body.model` (if `want_model`) are found.
/// `starts_file`: `buf` begins the file, where a byte order mark may stand
/// (anywhere else it makes the line invalid, whatever block it begins).
pub(crate) fn first_seen(
    buf: &[u8],
    want_url: bool,
    want_model: bool,
    starts_file: bool,
) -> FirstSeen {
    let mut seen = FirstSeen::default();
    for (i, line) in crate::lines::Lines::new(buf).enumerate() {
        if (!want_url || seen.url.is_some()) && (!want_model || seen.model.is_some()) {
            break;
        }
        let raw = match line.bytes.strip_prefix(UTF8_BOM) {
            Some(rest) if i == 0 && starts_file => rest,
            _ => line.bytes,
        };
        let Ok(text) = std::str::from_utf8(raw) else {
            continue;
        };
        if is_blank(raw) {
            continue;
        }
        let Ok(view) = envelope::parse_line(text) else {
            continue;
        };
        let (i, at) = (i as u64, line.offset as u64);
        if want_url && seen.url.is_none() {
            if let Some(Text::Str(u)) = &view.url {
                seen.url = Some((u.to_string(), i, at));
            }
        }
        if want_model && seen.model.is_none() {
            if let Some(Body::Object(b)) = &view.body {
                if let Some(Text::Str(m)) = &b.model {
                    seen.model = Some((m.to_string(), i, at));
                }
            }
        }
    }
    seen
}
