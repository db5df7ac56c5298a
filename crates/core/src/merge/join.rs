//! Joining: the sorted input and result keys walked together once, each
//! request given its best result; conflicts and unknown ids reported.

use std::io::{self, Write};
use std::path::PathBuf;

use rayon::prelude::*;

use super::key::{BROKEN, Chosen, Key, ResultKey, ref_file, ref_offset, ref_status};
use super::side::classify_bytes;
use super::{Merge, MergeConfig, Problem, ProblemKind};
use crate::results::Status;

impl Merge {
    /// Give every request its best result, turning the input keys into
    /// [`Chosen`] in place (the same size, so no second array is needed),
    /// then put them back in input order.
    pub(super) fn join(&mut self, inputs: Vec<Key>, results: Vec<ResultKey>, cfg: &MergeConfig) {
        let mut conflicts: Vec<(u64, u64)> = Vec::new();
        let mut conflict_count = 0u64;
        let mut unknown = std::mem::take(&mut self.unknown);
        let mut r = 0;
        let this = &*self;
        let mut chosen: Vec<Chosen> = inputs
            .into_iter()
            .map(|input| {
                // Results of ids that sort before this input's are unknown.
                while r < results.len() && results[r].id() < input.id() {
                    unknown.push(results[r].at);
                    r += 1;
                }
                let mut best: Option<&ResultKey> = None;
                while r < results.len() && results[r].same_id(&input) {
                    let cand = &results[r];
                    r += 1;
                    best = Some(match best {
                        None => cand,
                        Some(b) => match (ref_status(b.at), ref_status(cand.at)) {
                            (Status::Succeeded, Status::Succeeded) => {
                                if this.response_of(b.at) != this.response_of(cand.at) {
                                    conflict_count += 1;
                                    if conflicts.len() < cfg.keep {
                                        conflicts.push((b.at, cand.at));
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
                            _ if cand.at & 7 == BROKEN && b.at & 7 != BROKEN => b,
                            _ => cand,
                        },
                    });
                }
                match best {
                    Some(b) => Chosen {
                        request: input.at,
                        at: b.at,
                        success: b.more,
                    },
                    None => Chosen {
                        request: input.at,
                        ..Chosen::NONE
                    },
                }
            })
            .collect();
        unknown.extend(results[r..].iter().map(|k| k.at));
        drop(results);
        chosen.par_sort_unstable_by_key(|c| c.request);
        self.chosen = chosen;
        self.unknown = unknown;
        self.unknown.sort_unstable();
        self.report_conflicts(conflicts, conflict_count, cfg);
        self.report_unknown(cfg);
    }

    pub(super) fn response_of(&self, r: u64) -> Option<Vec<u8>> {
        let line = self.results[ref_file(r)].line_at(ref_offset(r));
        let o = classify_bytes(line).ok()?;
        o.response.map(<[u8]>::to_vec)
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

    /// Write the result lines whose `custom_id` is in no input, verbatim,
    /// in the order the files were given.
    pub fn write_unknown(&self, out: &mut dyn Write) -> io::Result<u64> {
        for &r in &self.unknown {
            out.write_all(self.results[ref_file(r)].line_at(ref_offset(r)))?;
            out.write_all(b"\n")?;
        }
        Ok(self.unknown.len() as u64)
    }
}
