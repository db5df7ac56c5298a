//! Joining result files back to their requests by `custom_id`, in input
//! order, with every request accounted for.
//!
//! Nothing is held as a JSON value. Inputs and results are mapped; each
//! input line becomes a 24-byte (fingerprint, position) entry and each result
//! line a 32-byte (fingerprint, file, offset, status, where a plain
//! success's body is) entry. Both lists are sorted and walked together once,
//! turning each input entry in place into a 24-byte (position, chosen
//! result) entry, sorted back into input order. The merged file is then
//! written by streaming the inputs in order and re-reading only the chosen
//! result lines (or, for a plain success, only its body).
//!
//! The parts, one concern a file: `side` opens a file and reads ids from its
//! lines, `key` packs fingerprints and result locations, `index` turns the
//! files into sorted keys, `join` walks them together and reports what does
//! not fit, and `render` writes the merged lines in input order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::input::InputError;

mod index;
mod join;
mod key;
mod render;
mod side;

pub use render::{MergedLine, Record, Tally};

use key::Chosen;
use side::Side;

/// Chunks handled in parallel at a time: bounds the memory held for chunk
/// results (index entries, rendered output) to a few MB.
const WINDOW: usize = 16;
/// The error code of a request whose chosen result line could not be read.
pub const INVALID_RESULT_LINE: &str = "invalid_result_line";
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
    /// A file of one kind given where the other is expected.
    #[error(
        "{} looks like {} but was given as {}; give request files with --input (several after one --input are fine) and result files after them",
        .file.display(),
        .looks_like.describe(),
        .given_as.describe_as()
    )]
    Misplaced {
        /// The file.
        file: PathBuf,
        /// What its first line looks like.
        looks_like: FileKind,
        /// Where it was given.
        given_as: FileKind,
    },
}

/// What a file holds, judged by its first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Request lines (`body`, and no `response`, `error` or `result`).
    Requests,
    /// Result lines (`response`, `error` or `result`).
    Results,
}

impl FileKind {
    fn describe(self) -> &'static str {
        match self {
            FileKind::Requests => "a request file (its lines have a `body` and no `response`)",
            FileKind::Results => "a result file (its lines have a `response` or `error`)",
        }
    }

    fn describe_as(self) -> &'static str {
        match self {
            FileKind::Requests => "a request file (--input)",
            FileKind::Results => "a result file",
        }
    }
}

/// Results joined to their requests, ready to be written.
pub struct Merge {
    inputs: Vec<Side>,
    results: Vec<Side>,
    /// Every request with its chosen result, in input order.
    chosen: Vec<Chosen>,
    unknown: Vec<u64>,
    problems: Vec<Problem>,
    problem_counts: BTreeMap<ProblemKind, u64>,
    result_lines: u64,
}

impl Merge {
    /// Index `inputs` and `results` and join them. Files at the end of
    /// `inputs` from the first one that holds results on are taken as the
    /// first results (so `--input a.jsonl b.jsonl results...` reads as
    /// meant); a request file among the results, or a result file before a
    /// request file, is [`MergeError::Misplaced`].
    pub fn new(
        inputs: &[PathBuf],
        results: &[PathBuf],
        cfg: &MergeConfig,
    ) -> Result<Merge, MergeError> {
        if inputs.len() >= MAX_FILES || results.len() >= MAX_FILES {
            return Err(MergeError::TooManyFiles);
        }
        let mut inputs: Vec<Side> = inputs
            .iter()
            .map(|p| Side::open(p))
            .collect::<Result<_, _>>()?;
        let mut results: Vec<Side> = results
            .iter()
            .map(|p| Side::open(p))
            .collect::<Result<_, _>>()?;
        // `--input a.jsonl b.jsonl out.jsonl err.jsonl`: the result files
        // at the end of the inputs are the first results.
        let first_result = inputs
            .iter()
            .position(|s| s.kind() == Some(FileKind::Results))
            .unwrap_or(inputs.len());
        // Unless that would leave no request file at all: then the first
        // one only looks like results (a request line with an `error`
        // key), and merging nothing would report no request, silently.
        if first_result == 0 {
            if let Some(first) = inputs.first() {
                return Err(MergeError::Misplaced {
                    file: first.name.clone(),
                    looks_like: FileKind::Results,
                    given_as: FileKind::Requests,
                });
            }
        }
        let moved: Vec<Side> = inputs.drain(first_result..).collect();
        results.splice(0..0, moved);
        for (sides, given_as) in [(&inputs, FileKind::Requests), (&results, FileKind::Results)] {
            for side in sides {
                match side.kind() {
                    Some(kind) if kind != given_as => {
                        return Err(MergeError::Misplaced {
                            file: side.name.clone(),
                            looks_like: kind,
                            given_as,
                        });
                    }
                    _ => {}
                }
            }
        }
        let mut m = Merge {
            chosen: Vec::new(),
            result_lines: 0,
            inputs,
            results,
            unknown: Vec::new(),
            problems: Vec::new(),
            problem_counts: BTreeMap::new(),
        };
        let input_keys = m.index_inputs(cfg)?;
        let result_keys = m.index_results(cfg);
        m.result_lines = m.results.iter().map(|s| s.lines).sum();
        m.join(input_keys, result_keys, cfg);
        Ok(m)
    }

    fn problem(&mut self, keep: usize, p: impl FnOnce() -> Problem, kind: ProblemKind) {
        *self.problem_counts.entry(kind).or_default() += 1;
        if self.problems.len() < keep {
            self.problems.push(p());
        }
    }

    /// Problems met (bad result lines, conflicts, unknown ids), in order of
    /// file and line, as a reader goes through them; at most `keep` of them.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = self.problems.clone();
        p.sort_by(|a, b| (&a.file, a.line, a.kind).cmp(&(&b.file, b.line, b.kind)));
        p
    }

    /// How many problems of each kind (all of them, however many are kept).
    pub fn problem_counts(&self) -> &BTreeMap<ProblemKind, u64> {
        &self.problem_counts
    }

    /// How many request files were merged (after any result files given
    /// among the inputs were moved to the results).
    pub fn input_files(&self) -> usize {
        self.inputs.len()
    }

    /// How many result files were read (those given among the inputs
    /// included).
    pub fn result_files(&self) -> usize {
        self.results.len()
    }

    /// Result lines read, blank ones included.
    pub fn result_lines(&self) -> u64 {
        self.result_lines
    }

    /// Total bytes of the inputs (for progress bars).
    pub fn input_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .map(|s| s.bytes.bytes().len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Status;

    #[test]
    fn what_is_worth_retrying() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/merge");
        let m = Merge::new(
            &[dir.join("requests.jsonl")],
            &[
                dir.join("round1.output.jsonl"),
                dir.join("round1.errors.jsonl"),
            ],
            &MergeConfig::default(),
        )
        .expect("the merge fixtures merge");
        let picked = std::sync::Mutex::new(Vec::new());
        m.write(
            &mut std::io::sink(),
            false,
            &|r, _| {
                let retry = r.worth_retrying();
                if r.status == Status::Succeeded {
                    assert!(!retry);
                }
                if retry {
                    picked
                        .lock()
                        .expect("not poisoned")
                        .push((r.custom_id.to_owned(), r.error_code().map(str::to_owned)));
                }
                retry
            },
            &|_| {},
        )
        .expect("written");
        let mut picked = picked.into_inner().expect("not poisoned");
        picked.sort();
        let picked: Vec<(&str, &str)> = picked
            .iter()
            .map(|(id, c)| (id.as_str(), c.as_deref().unwrap_or("")))
            .collect();
        // The model's 400 (context_length_exceeded, req-4) is left out;
        // status 0, expiry, cancellation and a missing result are retried.
        assert_eq!(
            picked,
            [
                ("req-2", "missing"),
                ("req-5", "http_0"),
                ("req-6", "batch_expired"),
                ("req-7", "batch_cancelled")
            ]
        );
    }
}
