//! Joining result files back to their requests by `custom_id`, in input
//! order, with every request accounted for.
//!
//! Nothing is held as a JSON value. Inputs and results are mapped; each
//! input line becomes a 24-byte (fingerprint, position) entry and each result
//! line a 24-byte (fingerprint, file, offset, status) entry. Both lists are
//! sorted and walked together once, leaving 8 bytes per input line: the
//! chosen result's location. The merged file is then written by streaming the
//! inputs in order and re-reading only the chosen result lines.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::input::{Input, InputError, Mapped};
use crate::lines::{Lines, chunk_ranges, count_lines, is_blank};
use crate::results::{self, BadResult, Outcome, Status};

const CHUNK: usize = 1 << 20;
/// Chunks handled in parallel at a time: bounds the memory held for chunk
/// results (index entries, rendered output) to a few MB.
const WINDOW: usize = 16;
const NONE: u64 = u64::MAX;
/// The error code of a request whose chosen result line could not be read.
pub const INVALID_RESULT_LINE: &str = "invalid_result_line";
/// Status bits of a result whose line is broken but whose id was salvaged.
const BROKEN: u64 = 5;
const OFFSET_BITS: u32 = 45;
const MAX_FILES: usize = 1 << 16;

/// How to merge.
#[derive(Clone, Debug)]
pub struct MergeConfig {
    /// On two different successful results for one id, keep the last
    /// (in the order the result files were given) instead of the first.
    pub prefer_last: bool,
    /// How many problems to keep for the report (all are counted).
    pub keep: usize,
}

impl Default for MergeConfig {
    fn default() -> Self {
        MergeConfig {
            prefer_last: false,
            keep: 1000,
        }
    }
}

/// What kind of problem a merge met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// An input line without a readable `custom_id`.
    BadInputLine,
    /// A `custom_id` used twice in the inputs.
    DuplicateInput,
    /// A result line that could not be read.
    BadResultLine,
    /// Two different successful results for one request.
    Conflict,
    /// A result whose `custom_id` is in no input.
    Unknown,
}

impl ProblemKind {
    /// The kind as reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::BadInputLine => "bad_input_line",
            ProblemKind::DuplicateInput => "duplicate_custom_id",
            ProblemKind::BadResultLine => "bad_result_line",
            ProblemKind::Conflict => "conflict",
            ProblemKind::Unknown => "unknown_custom_id",
        }
    }
}

/// One problem, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The file it is in.
    pub file: PathBuf,
    /// Its 1-based line.
    pub line: u64,
    /// The request's id, where known.
    pub custom_id: Option<String>,
    /// What is wrong, and for conflicts where the other result is.
    pub message: String,
}

/// Why a merge could not be done.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// An input or result file could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The inputs are not a batch that could have been submitted.
    #[error("the request files cannot be merged: {count} problems (first: {})", .problems.first().map_or(String::new(), |p| format!("{}:{}: {}", p.file.display(), p.line, p.message)))]
    InvalidInput {
        /// The problems kept.
        problems: Vec<Problem>,
        /// How many there are in all.
        count: u64,
    },
    /// More files than a merge can index.
    #[error("too many files: at most {MAX_FILES} result files")]
    TooManyFiles,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    hi: u64,
    lo: u64,
    /// Inputs: file << 48 | line index. Results: file << 48 | offset << 3 | status.
    at: u64,
}

impl Key {
    fn new(custom_id: &str, at: u64) -> Key {
        let h = xxhash_rust::xxh3::xxh3_128(custom_id.as_bytes());
        Key {
            hi: (h >> 64) as u64,
            lo: h as u64,
            at,
        }
    }

    fn same_id(&self, other: &Key) -> bool {
        (self.hi, self.lo) == (other.hi, other.lo)
    }
}

fn result_ref(file: usize, offset: usize, status: u64) -> u64 {
    ((file as u64) << 48) | ((offset as u64) << 3) | status
}

fn ref_file(r: u64) -> usize {
    (r >> 48) as usize
}

fn ref_offset(r: u64) -> usize {
    ((r >> 3) & ((1 << OFFSET_BITS) - 1)) as usize
}

fn ref_status(r: u64) -> Status {
    match r & 7 {
        BROKEN => Status::Failed,
        b => Status::from_bits(b),
    }
}

struct Side {
    name: PathBuf,
    bytes: Mapped,
    /// Newline-aligned chunks and the 0-based line index each starts at.
    chunks: Vec<(Range<usize>, u64)>,
    lines: u64,
}

impl Side {
    fn open(path: &Path) -> Result<Side, InputError> {
        let input = Input::open(path)?;
        let name = input.name.clone();
        let bytes = input.into_mapped()?;
        let ranges = chunk_ranges(bytes.bytes(), CHUNK);
        let counts: Vec<u64> = ranges
            .par_iter()
            .map(|r| count_lines(&bytes.bytes()[r.clone()]))
            .collect();
        let mut base = 0;
        let mut chunks = Vec::with_capacity(ranges.len());
        for (r, n) in ranges.into_iter().zip(counts) {
            chunks.push((r, base));
            base += n;
        }
        Ok(Side {
            name,
            bytes,
            chunks,
            lines: base,
        })
    }

    fn line_at(&self, offset: usize) -> &[u8] {
        let rest = &self.bytes.bytes()[offset.min(self.bytes.bytes().len())..];
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        line.strip_suffix(b"\r").unwrap_or(line)
    }

    /// 1-based line numbers of byte offsets (one pass over the file).
    fn lines_of(&self, offsets: &[usize]) -> Vec<u64> {
        let mut order: Vec<usize> = (0..offsets.len()).collect();
        order.sort_by_key(|&i| offsets[i]);
        let mut out = vec![0; offsets.len()];
        let (mut line, mut pos) = (1u64, 0usize);
        let bytes = self.bytes.bytes();
        for i in order {
            let target = offsets[i].min(bytes.len());
            line += memchr::memchr_iter(b'\n', &bytes[pos..target]).count() as u64;
            pos = target;
            out[i] = line;
        }
        out
    }
}

/// One input request line, as the merged file needs it.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    custom_id: Cow<'a, str>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

/// Only the id: other fields are skipped, which is faster than capturing them.
#[derive(Deserialize)]
struct RequestId<'a> {
    #[serde(borrow)]
    custom_id: Cow<'a, str>,
}

fn utf8(line: &[u8]) -> Result<&str, String> {
    simdutf8::basic::from_utf8(line).map_err(|_| {
        let e = std::str::from_utf8(line).err();
        format!(
            "not UTF-8: {}",
            e.map_or_else(String::new, |e| e.to_string())
        )
    })
}

fn parse_request(line: &[u8]) -> Result<Request<'_>, String> {
    serde_json::from_str(utf8(line)?).map_err(|e| e.to_string())
}

fn parse_request_id(line: &[u8]) -> Result<Cow<'_, str>, String> {
    let r: RequestId<'_> = serde_json::from_str(utf8(line)?).map_err(|e| e.to_string())?;
    Ok(r.custom_id)
}

/// The id of a line already checked while indexing: read straight from the
/// bytes when the line starts with a plain `{"custom_id":"…"`, as generated
/// files do; parsed otherwise.
fn known_request_id(line: &[u8]) -> Result<Cow<'_, str>, String> {
    const PREFIX: &[u8] = b"{\"custom_id\":\"";
    if let Some(rest) = line.strip_prefix(PREFIX) {
        if let Some(end) = memchr::memchr2(b'"', b'\\', rest) {
            if rest[end] == b'"' {
                if let Ok(id) = simdutf8::basic::from_utf8(&rest[..end]) {
                    return Ok(Cow::Borrowed(id));
                }
            }
        }
    }
    parse_request_id(line)
}

fn classify_bytes(line: &[u8]) -> Result<Outcome<'_>, BadResult> {
    utf8(line)
        .map_err(|reason| BadResult {
            reason,
            custom_id: None,
        })
        .and_then(results::classify)
}

/// Results joined to their requests, ready to be written.
pub struct Merge {
    inputs: Vec<Side>,
    results: Vec<Side>,
    /// Per input file, per line: the chosen result, or `NONE`.
    chosen: Vec<Vec<u64>>,
    unknown: Vec<u64>,
    problems: Vec<Problem>,
    problem_counts: BTreeMap<ProblemKind, u64>,
    result_lines: u64,
}

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

/// The first `keep` items pushed, and a count of the rest.
struct Capped<T> {
    keep: usize,
    kept: Vec<T>,
    extra: u64,
}

impl<T> Capped<T> {
    fn new(keep: usize) -> Self {
        Capped {
            keep,
            kept: Vec::new(),
            extra: 0,
        }
    }

    fn push(&mut self, item: T) {
        if self.kept.len() < self.keep {
            self.kept.push(item);
        } else {
            self.extra += 1;
        }
    }
}

/// Index every non-blank line of `side`, in parallel windows of chunks:
/// `per_line(line, line index, byte offset)` gives the line's key, or a
/// problem (and perhaps a key anyway). Keys are appended in input order;
/// problems are handed to `on_bad` in order with their 1-based line.
fn index_side<B: Send>(
    side: &Side,
    keys: &mut Vec<Key>,
    per_line: impl Fn(&[u8], u64, usize) -> Result<Key, (Option<Key>, B)> + Sync,
    mut on_bad: impl FnMut(u64, B),
) {
    struct Part<B> {
        keys: Vec<Key>,
        bad: Vec<(u64, B)>,
    }
    for window in side.chunks.chunks(WINDOW) {
        let parts: Vec<Part<B>> = window
            .par_iter()
            .map(|(range, base)| {
                let mut part = Part {
                    keys: Vec::new(),
                    bad: Vec::new(),
                };
                for (i, line) in Lines::new(&side.bytes.bytes()[range.clone()]).enumerate() {
                    if is_blank(line.bytes) {
                        continue;
                    }
                    let index = base + i as u64;
                    match per_line(line.bytes, index, range.start + line.offset) {
                        Ok(k) => part.keys.push(k),
                        Err((k, b)) => {
                            part.keys.extend(k);
                            part.bad.push((index + 1, b));
                        }
                    }
                }
                part
            })
            .collect();
        for part in parts {
            keys.extend_from_slice(&part.keys);
            for (line, b) in part.bad {
                on_bad(line, b);
            }
        }
    }
}

impl Merge {
    /// Index `inputs` and `results` and join them.
    pub fn new(
        inputs: &[PathBuf],
        results: &[PathBuf],
        cfg: &MergeConfig,
    ) -> Result<Merge, MergeError> {
        if inputs.len() >= MAX_FILES || results.len() >= MAX_FILES {
            return Err(MergeError::TooManyFiles);
        }
        let inputs: Vec<Side> = inputs
            .iter()
            .map(|p| Side::open(p))
            .collect::<Result<_, _>>()?;
        let results: Vec<Side> = results
            .iter()
            .map(|p| Side::open(p))
            .collect::<Result<_, _>>()?;
        let mut m = Merge {
            chosen: inputs
                .iter()
                .map(|s| vec![NONE; s.lines as usize])
                .collect(),
            result_lines: results.iter().map(|s| s.lines).sum(),
            inputs,
            results,
            unknown: Vec::new(),
            problems: Vec::new(),
            problem_counts: BTreeMap::new(),
        };
        let input_keys = m.index_inputs(cfg)?;
        let result_keys = m.index_results(cfg);
        m.join(input_keys, result_keys, cfg);
        Ok(m)
    }

    fn problem(&mut self, keep: usize, p: impl FnOnce() -> Problem, kind: ProblemKind) {
        *self.problem_counts.entry(kind).or_default() += 1;
        if self.problems.len() < keep {
            self.problems.push(p());
        }
    }

    /// Report the kept bad lines as problems of `kind` (made by `make`),
    /// and count the ones left out too.
    fn bad_line_problems<T>(
        &mut self,
        keep: usize,
        kind: ProblemKind,
        bad: Capped<T>,
        make: impl Fn(&Self, T) -> Problem,
    ) {
        for item in bad.kept {
            let p = make(self, item);
            self.problem(keep, || p, kind);
        }
        if bad.extra > 0 {
            *self.problem_counts.entry(kind).or_default() += bad.extra;
        }
    }

    fn index_inputs(&mut self, cfg: &MergeConfig) -> Result<Vec<Key>, MergeError> {
        // One entry per line at most: reserving it all keeps the vector from
        // doubling (untouched capacity costs no memory).
        let mut keys = Vec::with_capacity(self.inputs.iter().map(|s| s.lines as usize).sum());
        let mut bad_lines = Capped::new(cfg.keep);
        for (f, side) in self.inputs.iter().enumerate() {
            index_side(
                side,
                &mut keys,
                |line, index, _| {
                    parse_request_id(line)
                        .map(|id| Key::new(&id, ((f as u64) << 48) | index))
                        .map_err(|e| (None, e))
                },
                |line, e| bad_lines.push((f, line, e)),
            );
        }
        self.bad_line_problems(cfg.keep, ProblemKind::BadInputLine, bad_lines, |m, (f, line, e)| Problem {
            kind: ProblemKind::BadInputLine,
            file: m.inputs[f].name.clone(),
            line,
            custom_id: None,
            message: format!(
                "the request line has no readable custom_id ({e}); run `batchkit validate` on it"
            ),
        });
        keys.par_sort_unstable();
        for w in keys.windows(2) {
            if w[0].same_id(&w[1]) {
                let first = &self.inputs[(w[0].at >> 48) as usize];
                let again = &self.inputs[(w[1].at >> 48) as usize];
                let (first_line, line) = (
                    (w[0].at & ((1 << 48) - 1)) + 1,
                    (w[1].at & ((1 << 48) - 1)) + 1,
                );
                let p = Problem {
                    kind: ProblemKind::DuplicateInput,
                    file: again.name.clone(),
                    line,
                    custom_id: None,
                    message: format!(
                        "The custom_id for this request is a duplicate of another request ({}:{first_line}). The custom_id parameter must be unique for each request in a batch.",
                        first.name.display()
                    ),
                };
                self.problem(cfg.keep, || p, ProblemKind::DuplicateInput);
            }
        }
        if !self.problems.is_empty() {
            return Err(MergeError::InvalidInput {
                problems: std::mem::take(&mut self.problems),
                count: self.problem_counts.values().sum(),
            });
        }
        Ok(keys)
    }

    fn index_results(&mut self, cfg: &MergeConfig) -> Vec<Key> {
        let mut keys = Vec::with_capacity(self.result_lines as usize);
        let mut bad_lines = Capped::new(cfg.keep);
        for (f, side) in self.results.iter().enumerate() {
            index_side(
                side,
                &mut keys,
                |line, _, offset| match classify_bytes(line) {
                    Ok(o) => Ok(Key::new(
                        &o.custom_id,
                        result_ref(f, offset, o.status as u64),
                    )),
                    Err(b) => {
                        let salvaged = b
                            .custom_id
                            .as_ref()
                            .map(|id| Key::new(id, result_ref(f, offset, BROKEN)));
                        Err((salvaged, b))
                    }
                },
                |line, b| bad_lines.push((f, line, b)),
            );
        }
        self.bad_line_problems(
            cfg.keep,
            ProblemKind::BadResultLine,
            bad_lines,
            |m, (f, line, b)| {
                let note = if b.custom_id.is_some() {
                    "; its request is marked failed"
                } else {
                    "; no custom_id could be read from it"
                };
                Problem {
                    kind: ProblemKind::BadResultLine,
                    file: m.results[f].name.clone(),
                    line,
                    custom_id: b.custom_id,
                    message: format!("{}{note}", b.reason),
                }
            },
        );
        keys.par_sort_unstable();
        keys
    }

    fn join(&mut self, inputs: Vec<Key>, results: Vec<Key>, cfg: &MergeConfig) {
        let mut conflicts: Vec<(u64, u64)> = Vec::new();
        let mut conflict_count = 0u64;
        let mut r = 0;
        for input in &inputs {
            // Results of ids that sort before this input's are unknown.
            while r < results.len() && (results[r].hi, results[r].lo) < (input.hi, input.lo) {
                self.unknown.push(results[r].at);
                r += 1;
            }
            let mut best: Option<u64> = None;
            while r < results.len() && results[r].same_id(input) {
                let cand = results[r].at;
                r += 1;
                best = Some(match best {
                    None => cand,
                    Some(b) => match (ref_status(b), ref_status(cand)) {
                        (Status::Succeeded, Status::Succeeded) => {
                            if self.response_of(b) != self.response_of(cand) {
                                conflict_count += 1;
                                if conflicts.len() < cfg.keep {
                                    conflicts.push((b, cand));
                                }
                                if cfg.prefer_last { cand } else { b }
                            } else {
                                b
                            }
                        }
                        (Status::Succeeded, _) => b,
                        (_, Status::Succeeded) => cand,
                        // A readable result beats a broken line; otherwise
                        // the latest attempt counts.
                        _ if cand & 7 == BROKEN && b & 7 != BROKEN => b,
                        _ => cand,
                    },
                });
            }
            if let Some(b) = best {
                let file = (input.at >> 48) as usize;
                let line = (input.at & ((1 << 48) - 1)) as usize;
                self.chosen[file][line] = b;
            }
        }
        self.unknown.extend(results[r..].iter().map(|k| k.at));
        drop(results);
        drop(inputs);
        self.unknown.sort_unstable();
        self.report_conflicts(conflicts, conflict_count, cfg);
        self.report_unknown(cfg);
    }

    fn response_of(&self, r: u64) -> Option<String> {
        let line = self.results[ref_file(r)].line_at(ref_offset(r));
        let o = classify_bytes(line).ok()?;
        o.response.map(|b| b.get().to_owned())
    }

    fn locate(&self, refs: &[u64]) -> Vec<(PathBuf, u64)> {
        let mut out = vec![(PathBuf::new(), 0); refs.len()];
        for (f, side) in self.results.iter().enumerate() {
            let mine: Vec<usize> = (0..refs.len())
                .filter(|&i| ref_file(refs[i]) == f)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let offsets: Vec<usize> = mine.iter().map(|&i| ref_offset(refs[i])).collect();
            for (&i, line) in mine.iter().zip(side.lines_of(&offsets)) {
                out[i] = (side.name.clone(), line);
            }
        }
        out
    }

    fn id_of(&self, r: u64) -> Option<String> {
        let line = self.results[ref_file(r)].line_at(ref_offset(r));
        match classify_bytes(line) {
            Ok(o) => Some(o.custom_id.into_owned()),
            Err(b) => b.custom_id,
        }
    }

    fn report_conflicts(&mut self, conflicts: Vec<(u64, u64)>, count: u64, cfg: &MergeConfig) {
        if count > 0 {
            *self
                .problem_counts
                .entry(ProblemKind::Conflict)
                .or_default() += count;
        }
        let refs: Vec<u64> = conflicts.iter().flat_map(|&(a, b)| [a, b]).collect();
        let places = self.locate(&refs);
        for (i, &(a, _)) in conflicts.iter().enumerate() {
            let (first, second) = (&places[2 * i], &places[2 * i + 1]);
            let kept = if cfg.prefer_last {
                "the last (--prefer last)"
            } else {
                "the first (--prefer last keeps the last)"
            };
            let p = Problem {
                kind: ProblemKind::Conflict,
                file: second.0.clone(),
                line: second.1,
                custom_id: self.id_of(a),
                message: format!(
                    "two different successful results for this request: {}:{} and here; kept {kept}",
                    first.0.display(),
                    first.1
                ),
            };
            if self.problems.len() < cfg.keep {
                self.problems.push(p);
            }
        }
    }

    fn report_unknown(&mut self, cfg: &MergeConfig) {
        if self.unknown.is_empty() {
            return;
        }
        *self.problem_counts.entry(ProblemKind::Unknown).or_default() += self.unknown.len() as u64;
        let room = cfg.keep.saturating_sub(self.problems.len());
        let shown: Vec<u64> = self.unknown.iter().take(room).copied().collect();
        let places = self.locate(&shown);
        for (r, (file, line)) in shown.into_iter().zip(places) {
            let p = Problem {
                kind: ProblemKind::Unknown,
                file,
                line,
                custom_id: self.id_of(r),
                message: "this result's custom_id is in none of the request files".to_owned(),
            };
            self.problems.push(p);
        }
    }

    /// Problems met (bad result lines, conflicts, unknown ids), in order of
    /// kind, file and line; at most `keep` of them.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = self.problems.clone();
        p.sort_by(|a, b| (a.kind, &a.file, a.line).cmp(&(b.kind, &b.file, b.line)));
        p
    }

    /// How many problems of each kind (all of them, however many are kept).
    pub fn problem_counts(&self) -> &BTreeMap<ProblemKind, u64> {
        &self.problem_counts
    }

    /// Result lines read, blank ones included.
    pub fn result_lines(&self) -> u64 {
        self.result_lines
    }

    /// Write the result lines whose `custom_id` is in no input, verbatim,
    /// in the order the files were given.
    pub fn write_unknown(&self, out: &mut dyn Write) -> io::Result<u64> {
        for &r in &self.unknown {
            out.write_all(self.results[ref_file(r)].line_at(ref_offset(r)))?;
            out.write_all(b"\n")?;
        }
        Ok(self.unknown.len() as u64)
    }

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
        for (f, side) in self.inputs.iter().enumerate() {
            for window in side.chunks.chunks(WINDOW) {
                let parts: Vec<(Vec<u8>, Tally)> = window
                    .par_iter()
                    .map(|(range, base)| {
                        let part = self.render_chunk(f, range.clone(), *base, request_body, render);
                        progress(range.len() as u64);
                        part
                    })
                    .collect();
                for (bytes, t) in parts {
                    out.write_all(&bytes)?;
                    tally.merge(t);
                }
            }
        }
        Ok(tally)
    }

    fn render_chunk(
        &self,
        f: usize,
        range: Range<usize>,
        base: u64,
        request_body: bool,
        render: &(dyn Fn(&Record<'_>, &mut Vec<u8>) -> bool + Sync),
    ) -> (Vec<u8>, Tally) {
        let side = &self.inputs[f];
        let mut buf = Vec::with_capacity(range.len() * 2);
        let mut tally = Tally::default();
        for (i, line) in Lines::new(&side.bytes.bytes()[range]).enumerate() {
            if is_blank(line.bytes) {
                continue;
            }
            // Indexing parsed every line already; a failure here cannot happen.
            let (custom_id, body) = if request_body {
                match parse_request(line.bytes) {
                    Ok(r) => (r.custom_id, r.body),
                    Err(_) => continue,
                }
            } else {
                match known_request_id(line.bytes) {
                    Ok(id) => (id, None),
                    Err(_) => continue,
                }
            };
            let index = base + i as u64;
            let chosen = self.chosen[f][index as usize];
            let (status, outcome, broken) = self.read_result(chosen);
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

    fn read_result(&self, chosen: u64) -> (Status, Option<Outcome<'_>>, Option<BadResult>) {
        if chosen == NONE {
            return (Status::Missing, None, None);
        }
        let line = self.results[ref_file(chosen)].line_at(ref_offset(chosen));
        match classify_bytes(line) {
            Ok(o) => (o.status, Some(o), None),
            Err(b) => (Status::Failed, None, Some(b)),
        }
    }

    /// Total bytes of the inputs (for progress bars).
    pub fn input_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .map(|s| s.bytes.bytes().len() as u64)
            .sum()
    }
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
        let json = |buf: &mut Vec<u8>, s: &str| {
            // Serializing a str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, s);
        };
        buf.extend_from_slice(b"{\"custom_id\":");
        json(buf, r.custom_id);
        buf.extend_from_slice(
            format!(
                ",\"line\":{},\"status\":\"{}\",\"status_code\":",
                r.line,
                r.status.as_str()
            )
            .as_bytes(),
        );
        match r.outcome.as_ref().and_then(|o| o.status_code) {
            Some(c) => buf.extend_from_slice(itoa::Buffer::new().format(c).as_bytes()),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"response\":");
        let response = r.outcome.as_ref().and_then(|o| o.response);
        buf.extend_from_slice(response.map_or("null", RawValue::get).as_bytes());
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
