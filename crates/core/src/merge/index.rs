//! Indexing: every line of the inputs and results becomes a key, in
//! parallel windows of chunks; repeated and unreadable request ids stop the
//! merge before anything is written.

use rayon::prelude::*;

use super::key::{BROKEN, Key, ResultKey, pack_success, result_ref};
use super::side::{Side, classify_bytes};
use super::{Merge, MergeConfig, MergeError, Problem, ProblemKind, WINDOW};
use crate::custom_id;
use crate::lines::{first_line, is_blank};
use crate::results::{BadResult, Status};

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

/// What one line gave: its key, or a problem (and perhaps a key anyway).
type Read<K, B> = Result<K, (Option<K>, B)>;

/// Index every non-blank line of `side`, in parallel windows of chunks,
/// and count its lines (setting each chunk's first line and the file's
/// count). `read(rest, line index, byte offset)` reads the line at the
/// start of `rest` (which runs to the chunk's end) and says what it gave
/// (`None` for a blank line) and where it ends: the index of its `\n` in
/// `rest`, or `rest.len()`. The line index it is given counts from the
/// chunk's start; with `line_keys`, the keys hold it in their low bits and
/// it is made the file's. Keys are appended in input order; problems are
/// handed to `on_bad` in order with their 1-based line.
fn index_side<P: Copy + Send, B: Send>(
    side: &mut Side,
    keys: &mut Vec<Key<P>>,
    line_keys: bool,
    read: impl Fn(&[u8], u64, usize) -> (Option<Read<Key<P>, B>>, usize) + Sync,
    mut on_bad: impl FnMut(u64, B),
) {
    struct Part<K, B> {
        keys: Vec<K>,
        bad: Vec<(u64, B)>,
        lines: u64,
    }
    let bytes = side.bytes.bytes();
    let mut base = 0;
    for window in side.chunks.chunks_mut(WINDOW) {
        let parts: Vec<Part<Key<P>, B>> = window
            .par_iter()
            .map(|(range, _)| {
                let mut part = Part {
                    keys: Vec::new(),
                    bad: Vec::new(),
                    lines: 0,
                };
                let chunk = &bytes[range.clone()];
                let mut at = 0;
                while at < chunk.len() {
                    let (got, end) = read(&chunk[at..], part.lines, range.start + at);
                    match got {
                        None => {}
                        Some(Ok(k)) => part.keys.push(k),
                        Some(Err((k, b))) => {
                            part.keys.extend(k);
                            part.bad.push((part.lines + 1, b));
                        }
                    }
                    // The next line starts after the `\n`.
                    at += end + 1;
                    part.lines += 1;
                }
                part
            })
            .collect();
        for ((_, first_line), part) in window.iter_mut().zip(parts) {
            *first_line = base;
            let shift = if line_keys { base } else { 0 };
            keys.extend(part.keys.iter().map(|k| Key {
                at: k.at + shift,
                ..*k
            }));
            for (line, b) in part.bad {
                on_bad(base + line, b);
            }
            base += part.lines;
        }
    }
    side.lines = base;
}

/// What `read` gives for a line the scanner declined: nothing for a blank
/// line, else what `slow` reads of it.
fn read_slowly<K, B>(
    rest: &[u8],
    slow: impl FnOnce(&[u8]) -> Read<K, B>,
) -> (Option<Read<K, B>>, usize) {
    let (line, end) = first_line(rest);
    ((!is_blank(line)).then(|| slow(line)), end)
}

impl Merge {
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

    pub(super) fn index_inputs(&mut self, cfg: &MergeConfig) -> Result<Vec<Key>, MergeError> {
        let mut keys = Vec::new();
        let mut bad_lines = Capped::new(cfg.keep);
        for (f, side) in self.inputs.iter_mut().enumerate() {
            index_side(
                side,
                &mut keys,
                true,
                |rest, index, _| {
                    let at = ((f as u64) << 48) | index;
                    // Most lines are read by the scanner, several times
                    // faster; serde_json reads (and words the errors of) the rest.
                    match crate::scan::scan_request_id(rest) {
                        Some((id, end)) => (Some(Ok(Key::new(id, at))), end),
                        None => read_slowly(rest, |line| {
                            custom_id::read_serde(line)
                                .map(|id| Key::new(&id, at))
                                .map_err(|e| (None, e))
                        }),
                    }
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

    pub(super) fn index_results(&mut self, cfg: &MergeConfig) -> Vec<ResultKey> {
        let mut keys = Vec::new();
        let mut bad_lines = Capped::new(cfg.keep);
        for (f, side) in self.results.iter_mut().enumerate() {
            index_side(
                side,
                &mut keys,
                false,
                |rest, _, offset| match crate::scan::scan_success(rest) {
                    // Most lines are plain successes, which the scanner
                    // reads several times faster; classify reads the rest.
                    Some((s, end)) => {
                        let at = result_ref(f, offset, Status::Succeeded as u64);
                        let success = pack_success(s.status_code, s.body);
                        (Some(Ok(Key::with(s.custom_id, at, success))), end)
                    }
                    None => read_slowly(rest, |line| classify_line(line, f, offset)),
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
                    "; its request counts as failed unless another result file has a readable result for it"
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
}

/// The key of a result line `classify` reads (or, for a broken line, the
/// key its salvaged id gives, if any).
fn classify_line(line: &[u8], f: usize, offset: usize) -> Read<ResultKey, BadResult> {
    match classify_bytes(line) {
        Ok(o) => Ok(Key::with(
            &o.custom_id,
            result_ref(f, offset, o.status as u64),
            0,
        )),
        Err(b) => {
            let salvaged = b
                .custom_id
                .as_ref()
                .map(|id| Key::with(id, result_ref(f, offset, BROKEN), 0));
            Err((salvaged, b))
        }
    }
}
