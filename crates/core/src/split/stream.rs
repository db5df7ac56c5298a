//! Validating, cutting and writing in one pass.
//!
//! The input is validated a segment at a time (each segment in parallel,
//! as `validate` does). As soon as a segment is checked, its lines are
//! placed by the greedy cut, which needs only the lines before them, and
//! handed to writer threads that append them to their chunks' temporary
//! files while the next segment is checked. The writers copy and hash;
//! their disk writes (direct I/O, on threads of their own) cost little CPU
//! and run meanwhile, so writing overlaps validation instead of following
//! it, and split costs validation plus hashing rather than validation plus
//! writing.
//!
//! The chunks are only renamed into place by [`Staged::commit`], when the
//! whole input turned out valid: repeated `custom_id`s are only known at
//! the end. Anything else (errors, a line too large for any chunk, more
//! groups than files worth keeping open) stops the writing; the temporary
//! files are removed, and the caller plans from the report as before.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use tempfile::TempPath;

use super::writers::Writers;
use super::{Cutter, Manifest, Plan, Regroup, SplitConfig, push_run};
use crate::facts::{FactSink, LineFacts};
use crate::lines::chunk_ranges;
use crate::validate::{Config, Report, Validator};

/// With more groups than this, chunks are written after the validation
/// instead, a few at a time: one open file per group is too many.
const MAX_OPEN_GROUPS: usize = 256;

/// Chunks written under temporary names, waiting to be renamed.
pub struct Staged {
    plan: Plan,
    files: Vec<(TempPath, String)>,
}

impl Staged {
    /// Rename every chunk into place and write `manifest.json`.
    pub fn commit(
        self,
        dir: &Path,
        input: &str,
        stem: &str,
        cfg: &SplitConfig,
    ) -> io::Result<Manifest> {
        self.plan.commit(self.files, None, dir, input, stem, cfg)
    }
}

/// What [`validate_and_write`] did.
pub struct OnePass {
    /// The validation.
    pub report: Report,
    /// What it collected for planning; empty when the chunks were staged
    /// (the facts moved into their plan).
    pub facts: LineFacts,
    /// How many of the report's facts have their tokens counted already.
    pub counted: usize,
    /// The chunks, when the input was valid and every line fitted.
    pub staged: Option<Staged>,
}

/// Validate `bytes` under `vcfg` (collecting facts), a block of
/// [`Config::block_size`] at a time, and write the chunks `cfg` cuts into
/// temporary files in `dir` at the same time, with
/// direct I/O if `direct`. `checked` and `written` are called with bytes
/// validated and bytes written. An error is returned only for a failure
/// to write; an invalid input comes back as a report without chunks.
pub fn validate_and_write(
    bytes: &[u8],
    cfg: &SplitConfig,
    vcfg: &Config,
    dir: &Path,
    direct: bool,
    checked: &(dyn Fn(u64) + Sync),
    written: &(dyn Fn(u64) + Sync),
) -> io::Result<OnePass> {
    std::fs::create_dir_all(dir)?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writers = Writers::spawn(scope, bytes, dir, direct, &stop, written);
        let mut v = Validator::with_sink(vcfg, FactSink::default()).over_whole();
        let mut regroup = Regroup::default();
        let mut cutter = Cutter::new(cfg);
        let (mut counted, mut placed) = (0, 0);
        let mut numbers = crate::facts::LineNumbers::default();
        let mut live = true;
        // Lines are handed to the writers after each block is checked.
        for segment in chunk_ranges(bytes, vcfg.block_size.max(1)) {
            v.feed(&bytes[segment], checked);
            live = live && v.errors() == 0 && !writers.stopped();
            if !live {
                continue;
            }
            let (facts, groups) = v.sink_mut().facts_mut();
            if cfg.count_tokens {
                super::count_tokens(bytes, cfg, &mut facts[counted..], &|_| {});
                counted = facts.len();
            }
            let mut appends: BTreeMap<usize, Vec<Range<usize>>> = BTreeMap::new();
            let mut closed = Vec::new();
            for (i, &f) in facts.iter().enumerate().skip(placed) {
                let f = regroup.fact(groups, f, cfg);
                let Some(at) = cutter.push(i, numbers.of(&f), &f) else {
                    continue;
                };
                let start = f.offset as usize;
                push_run(
                    appends.entry(at.chunk).or_default(),
                    start..start + f.len as usize,
                );
                closed.extend(at.closed);
            }
            placed = facts.len();
            if !cutter.oversize.is_empty() || regroup.groups.len() > MAX_OPEN_GROUPS {
                live = false;
                continue;
            }
            for (chunk, runs) in appends {
                writers.append(chunk, runs, 0);
            }
            for chunk in closed {
                writers.close(chunk);
            }
        }
        let (report, sink) = v.finish_into(Some(bytes));
        let line_facts = sink.into_facts();
        let input_ok = report.is_valid() && cutter.oversize.is_empty();
        let complete = live && input_ok;
        if complete {
            for chunk in cutter.open_chunks() {
                writers.close(chunk);
            }
        }
        // Without the chunks, the writers drop (and so delete) their files.
        let mut files = match writers.finish(!complete) {
            // A valid input that could not be written: say so.
            Err(e) if input_ok => return Err(e),
            Ok(files) if complete => files,
            _ => {
                return Ok(OnePass {
                    report,
                    facts: line_facts,
                    counted,
                    staged: None,
                });
            }
        };
        let (chunks, order) = cutter
            .finish()
            .map_err(|_| io::Error::other("a line broke a limit after the cut"))?;
        let files = order
            .iter()
            .map(|i| {
                files
                    .remove(i)
                    .ok_or_else(|| io::Error::other("a chunk was not written"))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let LineFacts {
            mut facts, groups, ..
        } = line_facts;
        for f in &mut facts {
            *f = regroup.fact(&groups, *f, cfg);
        }
        let plan = Plan {
            facts,
            groups: regroup.groups,
            chunks,
            blank_lines: report.summary.blank_lines,
            rejected: Vec::new(),
        };
        Ok(OnePass {
            report,
            facts: LineFacts::default(),
            counted,
            staged: Some(Staged { plan, files }),
        })
    })
}
