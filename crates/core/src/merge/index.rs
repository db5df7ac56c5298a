//! Indexing: every line of the inputs and results becomes a key, in
//! parallel windows of chunks; repeated and unreadable request ids stop the
//! merge before anything is written.

use rayon::prelude::*;

use super::key::{BROKEN, Key, result_ref};
use super::side::{Side, classify_bytes, parse_request_id};
use super::{Merge, MergeConfig, MergeError, Problem, ProblemKind, WINDOW};
use crate::lines::{Lines, is_blank};
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

    pub(super) fn index_results(&mut self, cfg: &MergeConfig) -> Vec<Key> {
        let mut keys = Vec::with_capacity(self.result_lines as usize);
        let mut bad_lines = Capped::new(cfg.keep);
        for (f, side) in self.results.iter().enumerate() {
            index_side(
                side,
                &mut keys,
                |line, _, offset| match crate::envelope::scan_success_id(line) {
                    // Most lines are plain successes, which the scanner
                    // reads several times faster; classify reads the rest.
                    Some(id) => Ok(Key::new(
                        id,
                        result_ref(f, offset, Status::Succeeded as u64),
                    )),
                    None => classify_line(line, f, offset),
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
fn classify_line(line: &[u8], f: usize, offset: usize) -> Result<Key, (Option<Key>, BadResult)> {
    match classify_bytes(line) {
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
    }
}
