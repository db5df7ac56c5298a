//! Rendering: every request walked in input order with its chosen result,
//! rendered in parallel and written in order.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;

use rayon::prelude::*;
use serde_json::value::RawValue;

use super::key::{Chosen, NONE, ref_file, ref_offset, unpack_success};
use super::side::{classify_bytes, parse_request};
use super::{INVALID_RESULT_LINE, Merge, WINDOW};
use crate::lines::{Lines, is_blank};
use crate::results::{self, BadResult, Outcome, Status};

/// How many requests ahead the render asks for a result line.
const PREFETCH_AHEAD: usize = 8;
/// How many cache lines of it.
const PREFETCH_LINES: usize = 4;

/// One request and its outcome, handed to a renderer.
pub struct Record<'a> {
    /// The input file.
    pub input: &'a Path,
    /// 1-based line in the input file.
    pub line: u64,
    /// The request's id.
    pub custom_id: &'a str,
    /// The request line, without its ending.
    pub request_line: &'a [u8],
    /// The request body, verbatim.
    pub request_body: Option<&'a RawValue>,
    /// What became of it.
    pub status: Status,
    /// The chosen result, read (`None` if missing or unreadable).
    pub outcome: Option<Outcome<'a>>,
    /// Why the chosen result line could not be read, if it could not.
    pub broken: Option<BadResult>,
}

impl Record<'_> {
    /// The error code of a request that did not succeed.
    pub fn error_code(&self) -> Option<&str> {
        if self.broken.is_some() {
            return Some(INVALID_RESULT_LINE);
        }
        if self.status == Status::Missing {
            return Some("missing");
        }
        self.outcome
            .as_ref()
            .and_then(|o| o.error.as_ref())
            .and_then(|e| e.code.as_deref())
    }

    /// Whether sending the request again can succeed: it expired, was
    /// cancelled or has no result; or it failed with 408, 409, 429, a 5xx,
    /// status 0, no response at all, or a result line that could not be
    /// read. Other 4xx are the request's own fault and fail again.
    pub fn worth_retrying(&self) -> bool {
        match self.status {
            Status::Succeeded => false,
            Status::Expired | Status::Cancelled | Status::Missing => true,
            Status::Failed => match self.outcome.as_ref().and_then(|o| o.status_code) {
                None => true,
                Some(code) => matches!(code, 0 | 408 | 409 | 429 | 500..=599),
            },
        }
    }
}

/// Counts of what was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests by status, in [`Status::ALL`] order.
    pub by_status: [u64; 5],
    /// Requests that did not succeed, by error code (`none` when it has none).
    pub by_code: BTreeMap<String, u64>,
    /// Requests written by the renderer (for `retry`: the selected ones).
    pub written: u64,
    /// The first request line (1-based) whose id could not be read again
    /// when rendering; indexing read it, so this means the input changed
    /// under the merge. [`Merge::write`] fails rather than leave it out.
    unread: Option<(usize, u64)>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (a, b) in self.by_status.iter_mut().zip(other.by_status) {
            *a += b;
        }
        for (code, n) in other.by_code {
            *self.by_code.entry(code).or_default() += n;
        }
        self.written += other.written;
        self.unread = self.unread.or(other.unread);
    }

    /// Requests in all.
    pub fn total(&self) -> u64 {
        self.by_status.iter().sum()
    }

    /// Requests of one status.
    pub fn count(&self, status: Status) -> u64 {
        self.by_status[status as usize]
    }
}

impl Merge {
    /// Walk every request in input order and let `render` append what it
    /// wants written for it (and return whether it wrote the request).
    /// Rendering runs in parallel; output is written in order.
    /// `request_body` says whether records need [`Record::request_body`]
    /// (it costs a full parse of each request line).
    pub fn write(
        &self,
        out: &mut dyn Write,
        request_body: bool,
        render: &(dyn Fn(&Record<'_>, &mut Vec<u8>) -> bool + Sync),
        progress: &(dyn Fn(u64) + Sync),
    ) -> io::Result<Tally> {
        let mut tally = Tally::default();
        let windows = self
            .inputs
            .iter()
            .enumerate()
            .flat_map(|(f, side)| side.chunks.chunks(WINDOW).map(move |window| (f, window)));
        // Each window is rendered in the pool while the one before it is
        // written from this thread, so writing costs no rendering time.
        // Written buffers are rendered into again: fresh ones would cost a
        // page fault per page.
        let mut ready: Vec<(Vec<u8>, Tally)> = Vec::new();
        let mut free: Vec<Vec<u8>> = Vec::new();
        for (f, window) in windows {
            let bufs: Vec<Vec<u8>> = (0..window.len())
                .map(|_| free.pop().unwrap_or_default())
                .collect();
            let mut next = Vec::new();
            let mut written = Ok(());
            rayon::in_place_scope(|s| {
                s.spawn(|_| {
                    next = window
                        .par_iter()
                        .zip(bufs)
                        .map(|((range, base), buf)| {
                            let part = self.render_chunk(
                                f,
                                range.clone(),
                                *base,
                                request_body,
                                render,
                                buf,
                            );
                            progress(range.len() as u64);
                            part
                        })
                        .collect();
                });
                written = write_parts(out, std::mem::take(&mut ready), &mut tally, &mut free);
            });
            written?;
            ready = next;
        }
        write_parts(out, ready, &mut tally, &mut free)?;
        match tally.unread {
            None => Ok(tally),
            Some((f, line)) => Err(io::Error::other(format!(
                "{}:{line}: the request line could not be read again while writing (was the input changed during the merge?); nothing was written in its place",
                self.inputs[f].name.display()
            ))),
        }
    }

    fn render_chunk(
        &self,
        f: usize,
        range: Range<usize>,
        base: u64,
        request_body: bool,
        render: &(dyn Fn(&Record<'_>, &mut Vec<u8>) -> bool + Sync),
        mut buf: Vec<u8>,
    ) -> (Vec<u8>, Tally) {
        let side = &self.inputs[f];
        buf.clear();
        buf.reserve(range.len() * 2);
        let mut tally = Tally::default();
        // The requests of this chunk and on, in input order.
        let first = ((f as u64) << 48) | base;
        let chosen = &self.chosen[self.chosen.partition_point(|c| c.request < first)..];
        let mut next = 0;
        for (i, line) in Lines::new(&side.bytes.bytes()[range]).enumerate() {
            let index = base + i as u64;
            if is_blank(line.bytes) {
                continue;
            }
            // The results are read in the inputs' order, which is not
            // theirs: ask for the lines a few requests ahead early.
            if let Some(&ahead) = chosen.get(next + PREFETCH_AHEAD) {
                self.prefetch(ahead);
            }
            let here = ((f as u64) << 48) | index;
            while chosen.get(next).is_some_and(|c| c.request < here) {
                next += 1;
            }
            let this = match chosen.get(next) {
                Some(&c) if c.request == here => c,
                _ => Chosen::NONE,
            };
            // Indexing read every line's id already, so the id is there;
            // a body that cannot be read (JSON that reads as an id but not
            // as a request) leaves the record without it, never the line out.
            let parsed = match request_body {
                true => parse_request(line.bytes).map(|r| (r.custom_id, r.body)),
                false => Err(String::new()),
            };
            let (custom_id, body) = match parsed {
                Ok(read) => read,
                Err(_) => match crate::custom_id::read_known(line.bytes) {
                    Ok(id) => (id, None),
                    Err(_) => {
                        tally.unread.get_or_insert((f, index + 1));
                        continue;
                    }
                },
            };
            let (status, outcome, broken) = self.read_result(this, &custom_id);
            let record = Record {
                input: &side.name,
                line: index + 1,
                custom_id: &custom_id,
                request_line: line.bytes,
                request_body: body,
                status,
                outcome,
                broken,
            };
            tally.by_status[status as usize] += 1;
            if status != Status::Succeeded {
                let code = record.error_code().unwrap_or("none").to_owned();
                *tally.by_code.entry(code).or_default() += 1;
            }
            if render(&record, &mut buf) {
                tally.written += 1;
            }
        }
        (buf, tally)
    }

    /// Ask for the start of a chosen result's line (or body) to be brought
    /// into the cache.
    fn prefetch(&self, chosen: Chosen) {
        if chosen.at == NONE {
            return;
        }
        let bytes = self.results[ref_file(chosen.at)].bytes.bytes();
        let start = ref_offset(chosen.at)
            + unpack_success(chosen.success).map_or(0, |(_, body)| body.start);
        if let Some(rest) = bytes.get(start..) {
            for line in rest.chunks(64).take(PREFETCH_LINES) {
                crate::prefetch::read(line);
            }
        }
    }

    /// The chosen result of the request `custom_id`: a plain success from
    /// what indexing kept of it, any other from its line, read again.
    fn read_result<'a>(
        &'a self,
        chosen: Chosen,
        custom_id: &Cow<'a, str>,
    ) -> (Status, Option<Outcome<'a>>, Option<BadResult>) {
        if chosen.at == NONE {
            return (Status::Missing, None, None);
        }
        let bytes = self.results[ref_file(chosen.at)].bytes.bytes();
        let offset = ref_offset(chosen.at);
        if let Some((status_code, body)) = unpack_success(chosen.success) {
            // Checked (syntax and UTF-8) when the line was indexed.
            if let Some(body) = bytes.get(offset + body.start..offset + body.end) {
                let outcome = Outcome {
                    custom_id: custom_id.clone(),
                    status: Status::Succeeded,
                    status_code,
                    response: Some(body),
                    error: None,
                };
                return (Status::Succeeded, Some(outcome), None);
            }
        }
        let line = self.results[ref_file(chosen.at)].line_at(offset);
        match classify_bytes(line) {
            Ok(o) => (o.status, Some(o), None),
            Err(b) => (Status::Failed, None, Some(b)),
        }
    }
}

/// Write rendered chunks in order, add up their counts and keep their
/// buffers in `free` to be rendered into again.
fn write_parts(
    out: &mut dyn Write,
    parts: Vec<(Vec<u8>, Tally)>,
    tally: &mut Tally,
    free: &mut Vec<Vec<u8>>,
) -> io::Result<()> {
    for (bytes, t) in parts {
        out.write_all(&bytes)?;
        tally.merge(t);
        free.push(bytes);
    }
    Ok(())
}

/// What a merged line holds beyond the six standard fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct MergedLine {
    /// Add `"request"`: the request body.
    pub with_request: bool,
    /// Add `"text"`: the answer text, where the endpoint has one.
    pub text: bool,
    /// Add `"input"`: the input file's name (when there are several).
    pub input_name: bool,
}

impl MergedLine {
    /// Append the merged line of `r` to `buf`:
    /// `{"custom_id","line","status","status_code","response","error"}` and
    /// the extras asked for. Raw JSON from the files is copied verbatim.
    pub fn render(&self, r: &Record<'_>, buf: &mut Vec<u8>) {
        self.render_as(r, r.line, None, buf);
    }

    /// As [`MergedLine::render`], with `line` in place of the record's own
    /// (the line in the file that was split, for a chunk) and, if given, a
    /// `"chunk"` field naming the chunk the request was in.
    pub fn render_as(&self, r: &Record<'_>, line: u64, chunk: Option<&str>, buf: &mut Vec<u8>) {
        let json = |buf: &mut Vec<u8>, s: &str| {
            // Serializing a str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, s);
        };
        buf.extend_from_slice(b"{\"custom_id\":");
        json(buf, r.custom_id);
        buf.extend_from_slice(b",\"line\":");
        buf.extend_from_slice(itoa::Buffer::new().format(line).as_bytes());
        buf.extend_from_slice(b",\"status\":\"");
        buf.extend_from_slice(r.status.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"status_code\":");
        match r.outcome.as_ref().and_then(|o| o.status_code) {
            Some(c) => buf.extend_from_slice(itoa::Buffer::new().format(c).as_bytes()),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"response\":");
        let response = r.outcome.as_ref().and_then(|o| o.response);
        buf.extend_from_slice(response.unwrap_or(b"null"));
        buf.extend_from_slice(b",\"error\":");
        let error = match (&r.broken, r.outcome.as_ref().and_then(|o| o.error.as_ref())) {
            (Some(b), _) => Some((Some(INVALID_RESULT_LINE), Some(b.reason.as_str()))),
            (None, Some(e)) if r.status != Status::Succeeded => {
                Some((e.code.as_deref(), e.message.as_deref()))
            }
            _ if r.status == Status::Missing => Some((
                Some("missing"),
                Some("No result for this request in any result file."),
            )),
            _ => None,
        };
        match error {
            None => buf.extend_from_slice(b"null"),
            Some((code, message)) => {
                buf.extend_from_slice(b"{\"code\":");
                match code {
                    Some(c) => json(buf, c),
                    None => buf.extend_from_slice(b"null"),
                }
                buf.extend_from_slice(b",\"message\":");
                match message {
                    Some(m) => json(buf, m),
                    None => buf.extend_from_slice(b"null"),
                }
                buf.push(b'}');
            }
        }
        if let Some(c) = chunk {
            buf.extend_from_slice(b",\"chunk\":");
            json(buf, c);
        }
        if self.input_name {
            buf.extend_from_slice(b",\"input\":");
            json(buf, &r.input.display().to_string());
        }
        if self.with_request {
            buf.extend_from_slice(b",\"request\":");
            buf.extend_from_slice(r.request_body.map_or("null", RawValue::get).as_bytes());
        }
        if self.text {
            buf.extend_from_slice(b",\"text\":");
            match response.and_then(results::answer_text) {
                Some(t) => json(buf, &t),
                None => buf.extend_from_slice(b"null"),
            }
        }
        buf.extend_from_slice(b"}\n");
    }
}
