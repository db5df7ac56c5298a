//! Planning and writing chunks that each fit every limit.
//!
//! Each request line becomes a 32-byte fact (where it is, its group, bytes,
//! tokens, embedding inputs). Lines are grouped by endpoint and, where the
//! provider wants one model per batch, by model; within a group a new chunk
//! starts whenever the next line would break a limit. Lines are copied byte
//! for byte, in input order, into chunk files written in parallel under
//! temporary names and renamed only when all are complete.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;
use tempfile::TempPath;

use crate::facts::NO_GROUP;
pub use crate::facts::{ChunkFacts, Fact, FactSink, Group, LineFacts, LineNumbers};
use crate::provider::{Limits, Profile};
use crate::tokens::TokenCounter;

mod chunkfile;
mod outdir;
mod stream;
mod writers;

pub use outdir::Staging;
pub use stream::{OnePass, Staged, validate_and_write};
use writers::Writers;

/// How to cut.
#[derive(Clone, Debug)]
pub struct SplitConfig {
    /// The provider's rules (line shape, default endpoint, model rule).
    pub profile: Profile,
    /// Limits per chunk.
    pub limits: Limits,
    /// Most estimated input tokens per chunk (enqueued-token quotas).
    pub max_tokens: Option<u64>,
    /// The endpoint of `{custom_id, body}` lines.
    pub endpoint: Option<String>,
    /// Token counting (encoding choice).
    pub tokens: TokenCounter,
    /// Count tokens (needed for `max_tokens` and for estimates).
    pub count_tokens: bool,
}

impl SplitConfig {
    /// Chunks within `profile`'s limits, by its grouping, without token
    /// counting or a token limit.
    pub fn within(profile: Profile) -> SplitConfig {
        SplitConfig {
            limits: profile.limits,
            profile,
            max_tokens: None,
            endpoint: None,
            tokens: TokenCounter { forced: None },
            count_tokens: false,
        }
    }

    /// The validation a split runs first (with a [`FactSink`], which
    /// collects the facts planning needs): `validate`'s per-line rules for
    /// this provider and endpoint, but several endpoints and models are
    /// allowed (split groups them) and no whole-file limit applies (split
    /// makes every chunk fit).
    pub fn validation(&self) -> crate::validate::Config {
        let mut v = crate::validate::Config::new(self.profile.provider);
        v.profile = self.profile.clone();
        v.endpoint.clone_from(&self.endpoint);
        v.single_endpoint = false;
        v.single_model = false;
        v.limits = Limits::default();
        // Split reads mapped input and hands lines to its writers after
        // each block: larger blocks mean fewer pauses between them
        // (measured: 16-128 MiB alike, 8 MiB 6% slower, 4 MiB 18%).
        v.block_size = 32 << 20;
        v
    }
}

/// One planned chunk.
#[derive(Clone, Debug, Default)]
pub struct ChunkPlan {
    /// Its group.
    pub group: usize,
    /// Its number within the group, from 1.
    pub number: usize,
    /// Requests.
    pub requests: u64,
    /// Bytes.
    pub bytes: u64,
    /// Estimated input tokens.
    pub tokens: u64,
    /// Embedding inputs.
    pub inputs: u64,
    /// 0-based indices of its lines, as ranges in input order (a chunk of
    /// consecutive lines is one range).
    pub lines: Vec<Range<u64>>,
    /// Its lines as indices into [`Plan::facts`], as ranges (lines with
    /// only blank lines between them are one range here).
    pub facts: Vec<Range<u64>>,
}

/// A line that breaks a limit on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oversize {
    /// 1-based line number.
    pub line: u64,
    /// Which limit, with the figures.
    pub what: String,
}

/// The facts of every line and the chunks they make.
pub struct Plan {
    /// One per input line.
    pub facts: Vec<Fact>,
    /// The groups, in order of first appearance.
    pub groups: Vec<Group>,
    /// The chunks, grouped, in order.
    pub chunks: Vec<ChunkPlan>,
    /// Blank lines (left out of every chunk).
    pub blank_lines: u64,
    /// Lines left out as invalid.
    pub rejected: Vec<u64>,
}

impl Plan {
    /// Validate `bytes` (collecting facts in the same pass), leave out the
    /// `rejected` lines (1-based, sorted), then cut chunks. `progress` is
    /// called with bytes done, by the validation and by token counting.
    pub fn new(
        bytes: &[u8],
        cfg: &SplitConfig,
        rejected: Vec<u64>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Plan, Vec<Oversize>> {
        let mut vcfg = cfg.validation();
        vcfg.keep = Some(0);
        let sink = FactSink::default();
        let (report, sink) = crate::validate::validate_bytes_into(bytes, &vcfg, sink, progress);
        let blank = report.summary.blank_lines;
        Plan::from_facts(bytes, cfg, sink.into_facts(), blank, rejected, progress)
    }

    /// Plan from the facts a validation collected (with a [`FactSink`]):
    /// leave out the `rejected` lines (1-based, sorted), count tokens if
    /// asked (once per line, in parallel), group as `cfg` says, and cut.
    pub fn from_facts(
        bytes: &[u8],
        cfg: &SplitConfig,
        facts: LineFacts,
        blank_lines: u64,
        rejected: Vec<u64>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Plan, Vec<Oversize>> {
        Plan::from_partly_counted(bytes, cfg, facts, 0, blank_lines, rejected, progress)
    }

    /// As [`Plan::from_facts`], where the first `counted` facts already
    /// have their tokens (from [`validate_and_write`]): no line is
    /// tokenized twice.
    pub fn from_partly_counted(
        bytes: &[u8],
        cfg: &SplitConfig,
        facts: LineFacts,
        counted: usize,
        blank_lines: u64,
        rejected: Vec<u64>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Plan, Vec<Oversize>> {
        let LineFacts {
            mut facts, groups, ..
        } = facts;
        for i in facts_of_lines(&facts, &rejected) {
            facts[i].group = NO_GROUP;
        }
        if cfg.count_tokens {
            let from = counted.min(facts.len());
            count_tokens(bytes, cfg, &mut facts[from..], progress);
        }
        let mut plan = Plan {
            facts,
            groups,
            chunks: Vec::new(),
            blank_lines,
            rejected,
        };
        let mut regroup = Regroup::default();
        for f in &mut plan.facts {
            *f = regroup.fact(&plan.groups, *f, cfg);
        }
        plan.groups = regroup.groups;
        plan.chunks = cut(&plan.facts, cfg)?;
        Ok(plan)
    }
}

/// Estimate the input tokens of each fact's line that takes part, in
/// parallel; `progress` is called with the bytes counted.
pub fn count_tokens(
    bytes: &[u8],
    cfg: &SplitConfig,
    facts: &mut [Fact],
    progress: &(dyn Fn(u64) + Sync),
) {
    facts.par_chunks_mut(1024).for_each(|part| {
        for f in part.iter_mut().filter(|f| f.group != NO_GROUP) {
            let Some(line) = bytes.get(f.offset as usize..f.offset as usize + f.len as usize)
            else {
                continue;
            };
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Ok(text) = std::str::from_utf8(line) else {
                continue;
            };
            let t = cfg.tokens.count_line(text.trim_start_matches('\u{feff}'));
            f.tokens = t.input.min(u32::MAX as u64) as u32;
            f.max_output = t.max_output.min(u32::MAX as u64) as u32;
        }
        progress(part.iter().map(|f| f.len as u64).sum());
    });
}

/// From a validation's (endpoint, model) groups to the groups chunks are
/// cut by: the model is dropped where batches may mix models. Built as
/// groups appear, so that it works while the input is still being read.
#[derive(Default)]
struct Regroup {
    index: HashMap<Group, u32>,
    groups: Vec<Group>,
    /// Validation group -> chunk group, for those seen so far.
    map: Vec<u32>,
}

impl Regroup {
    /// `f` with its validation group (an index into `from`) replaced by
    /// its chunk group; lines that take no part stay so.
    fn fact(&mut self, from: &[Group], f: Fact, cfg: &SplitConfig) -> Fact {
        let group = match f.group {
            NO_GROUP => NO_GROUP,
            g => self.map(from, g, cfg),
        };
        Fact { group, ..f }
    }

    /// The chunk group of validation group `g` (an index into `from`).
    fn map(&mut self, from: &[Group], g: u32, cfg: &SplitConfig) -> u32 {
        while self.map.len() <= g as usize {
            let Some(v) = from.get(self.map.len()) else {
                return NO_GROUP;
            };
            let key = Group {
                endpoint: v.endpoint.clone(),
                model: v.model.clone().filter(|_| cfg.profile.single_model),
            };
            let next = self.groups.len() as u32;
            let id = *self.index.entry(key.clone()).or_insert_with(|| {
                self.groups.push(key);
                next
            });
            self.map.push(id);
        }
        self.map[g as usize]
    }
}

impl Plan {
    /// Cut these facts again under `cfg`'s limits and grouping (which may
    /// drop the model from the groups), without reading the input again:
    /// no line is tokenized twice.
    pub fn recut(&self, cfg: &SplitConfig) -> Result<Vec<ChunkPlan>, Vec<Oversize>> {
        let mut regroup = Regroup::default();
        let facts: Vec<Fact> = self
            .facts
            .iter()
            .map(|&f| regroup.fact(&self.groups, f, cfg))
            .collect();
        cut(&facts, cfg)
    }
}

fn over(limit: Option<u64>, value: u64) -> bool {
    limit.is_some_and(|max| value > max)
}

/// Greedy cut, in input order within each group.
fn cut(facts: &[Fact], cfg: &SplitConfig) -> Result<Vec<ChunkPlan>, Vec<Oversize>> {
    let mut cutter = Cutter::new(cfg);
    let mut numbers = LineNumbers::default();
    for (i, f) in facts.iter().enumerate() {
        cutter.push(i, numbers.of(f), f);
    }
    cutter.finish().map(|(chunks, _)| chunks)
}

/// Where [`Cutter::push`] put a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Placed {
    /// The chunk (in order of creation) the line went into.
    chunk: usize,
    /// The chunk of the same group that this line closed, if it opened a
    /// new one.
    closed: Option<usize>,
}

/// The greedy cut, one line at a time: a line joins its group's open chunk
/// unless that would break a limit, in which case it opens the next one.
struct Cutter<'c> {
    cfg: &'c SplitConfig,
    /// In order of creation.
    chunks: Vec<ChunkPlan>,
    /// Each group's open chunk.
    open: Vec<Option<usize>>,
    oversize: Vec<Oversize>,
}

impl<'c> Cutter<'c> {
    fn new(cfg: &'c SplitConfig) -> Self {
        Cutter {
            cfg,
            chunks: Vec::new(),
            open: Vec::new(),
            oversize: Vec::new(),
        }
    }

    /// Place fact `i`, of line `line` (0-based); `None` for lines that
    /// take no part and for lines that break a limit alone (kept for
    /// [`Cutter::finish`]).
    fn push(&mut self, i: usize, line: u64, f: &Fact) -> Option<Placed> {
        let g = f.group()?;
        let (l, cfg) = (&self.cfg.limits, self.cfg);
        let (bytes, tokens, inputs) = (f.len as u64, f.tokens as u64, f.inputs as u64);
        if f.len == u32::MAX {
            // Lengths are kept in 32 bits; a longer line cannot be copied whole.
            self.oversize.push(Oversize {
                line: line + 1,
                what: "this line is 4 GiB or longer; batchkit cannot split it".to_owned(),
            });
            return None;
        }
        let alone = [
            (over(l.max_bytes, bytes), "bytes", bytes, l.max_bytes),
            (
                over(cfg.max_tokens, tokens),
                "estimated tokens",
                tokens,
                cfg.max_tokens,
            ),
            (
                over(l.max_embedding_inputs, inputs),
                "embedding inputs",
                inputs,
                l.max_embedding_inputs,
            ),
        ];
        if let Some((_, what, n, max)) = alone.iter().find(|a| a.0) {
            self.oversize.push(Oversize {
                line: line + 1,
                what: format!(
                    "this line alone has {n} {what}; the limit per chunk is {}",
                    max.unwrap_or(0)
                ),
            });
            return None;
        }
        if self.open.len() <= g {
            self.open.resize(g + 1, None);
        }
        let open = self.open[g].filter(|&c| {
            let c = &self.chunks[c];
            !(over(l.max_requests, c.requests + 1)
                || over(l.max_bytes, c.bytes + bytes)
                || over(cfg.max_tokens, c.tokens + tokens)
                || over(l.max_embedding_inputs, c.inputs + inputs))
        });
        let placed = match open {
            Some(chunk) => Placed {
                chunk,
                closed: None,
            },
            None => {
                let number = self.open[g].map_or(0, |c| self.chunks[c].number) + 1;
                self.chunks.push(ChunkPlan {
                    group: g,
                    number,
                    ..ChunkPlan::default()
                });
                let closed = self.open[g].replace(self.chunks.len() - 1);
                Placed {
                    chunk: self.chunks.len() - 1,
                    closed,
                }
            }
        };
        let c = &mut self.chunks[placed.chunk];
        c.requests += 1;
        c.bytes += bytes;
        c.tokens += tokens;
        c.inputs += inputs;
        push_run(&mut c.lines, line..line + 1);
        push_run(&mut c.facts, i as u64..i as u64 + 1);
        Some(placed)
    }

    /// Chunks still open.
    fn open_chunks(&self) -> impl Iterator<Item = usize> + '_ {
        self.open.iter().flatten().copied()
    }

    /// The chunks by group and number, and for each its index in order of
    /// creation; or the lines that break a limit alone.
    fn finish(self) -> Result<(Vec<ChunkPlan>, Vec<usize>), Vec<Oversize>> {
        if !self.oversize.is_empty() {
            return Err(self.oversize);
        }
        let mut order: Vec<usize> = (0..self.chunks.len()).collect();
        order.sort_by_key(|&i| (self.chunks[i].group, self.chunks[i].number));
        let mut chunks: Vec<Option<ChunkPlan>> = self.chunks.into_iter().map(Some).collect();
        let sorted = order.iter().filter_map(|&i| chunks[i].take()).collect();
        Ok((sorted, order))
    }
}

/// The folder, inside the output folder, of the lines `--skip-invalid`
/// sets aside (and their report): out of the chunks' `*.jsonl` glob.
pub const REJECTS_DIR: &str = "rejects";

/// One chunk as the manifest lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ManifestChunk {
    /// File name, relative to the manifest.
    pub path: String,
    /// Endpoint.
    pub endpoint: String,
    /// Model (null when chunks are not per model).
    pub model: Option<String>,
    /// Requests.
    pub requests: u64,
    /// Bytes.
    pub bytes: u64,
    /// Estimated input tokens (null when not counted).
    pub estimated_tokens: Option<u64>,
    /// Embedding inputs.
    pub embedding_inputs: u64,
    /// SHA-256 of the file (null in a dry run).
    pub sha256: Option<String>,
    /// Input line numbers, as inclusive `[first, last]` ranges.
    pub lines: Vec<[u64; 2]>,
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    /// The input's name.
    pub input: String,
    /// Provider whose limits applied.
    pub provider: String,
    /// Limits per chunk.
    pub limits: ManifestLimits,
    /// Requests placed in chunks.
    pub requests: u64,
    /// Blank lines left out.
    pub blank_lines: u64,
    /// The chunks.
    pub chunks: Vec<ManifestChunk>,
    /// Invalid lines written aside (`--skip-invalid`), if any.
    pub rejects: Option<Rejects>,
}

/// Limits in the manifest (null: none).
#[derive(Clone, Debug, Serialize)]
pub struct ManifestLimits {
    /// Requests per chunk.
    pub max_requests: Option<u64>,
    /// Bytes per chunk.
    pub max_bytes: Option<u64>,
    /// Embedding inputs per chunk.
    pub max_embedding_inputs: Option<u64>,
    /// Estimated tokens per chunk.
    pub max_tokens: Option<u64>,
}

/// The reject file.
#[derive(Clone, Debug, Serialize)]
pub struct Rejects {
    /// File name.
    pub path: String,
    /// Lines in it.
    pub lines: u64,
    /// Their input line numbers, as ranges.
    pub input_lines: Vec<[u64; 2]>,
}

fn ranges(lines: impl Iterator<Item = u64>) -> Vec<[u64; 2]> {
    let mut runs = Vec::new();
    for l in lines {
        push_run(&mut runs, l..l + 1);
    }
    runs.into_iter().map(|r| [r.start, r.end - 1]).collect()
}

impl Plan {
    /// The chunk file name for `chunk`.
    pub fn file_name(&self, stem: &str, chunk: &ChunkPlan) -> String {
        let total = self
            .chunks
            .iter()
            .filter(|c| c.group == chunk.group)
            .count();
        let width = total.to_string().len().max(3);
        format!(
            "{stem}.{}.{:0width$}.jsonl",
            self.groups[chunk.group].slug(),
            chunk.number
        )
    }

    /// The manifest (without checksums until written).
    pub fn manifest(
        &self,
        input: &str,
        stem: &str,
        cfg: &SplitConfig,
        sums: Option<&[String]>,
    ) -> Manifest {
        let chunks = self
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| ManifestChunk {
                path: self.file_name(stem, c),
                endpoint: self.groups[c.group].endpoint.clone(),
                model: self.groups[c.group].model.clone(),
                requests: c.requests,
                bytes: c.bytes,
                estimated_tokens: cfg.count_tokens.then_some(c.tokens),
                embedding_inputs: c.inputs,
                sha256: sums.map(|s| s[i].clone()),
                lines: c.lines.iter().map(|r| [r.start + 1, r.end]).collect(),
            })
            .collect();
        Manifest {
            input: input.to_owned(),
            provider: cfg.profile.provider.name().to_owned(),
            limits: ManifestLimits {
                max_requests: cfg.limits.max_requests,
                max_bytes: cfg.limits.max_bytes,
                max_embedding_inputs: cfg.limits.max_embedding_inputs,
                max_tokens: cfg.max_tokens,
            },
            requests: self.chunks.iter().map(|c| c.requests).sum(),
            blank_lines: self.blank_lines,
            chunks,
            rejects: (!self.rejected.is_empty()).then(|| Rejects {
                // In a folder of its own, so `chunks/*.jsonl` is the chunks.
                path: format!("{REJECTS_DIR}/{stem}.rejects.jsonl"),
                lines: self.rejected.len() as u64,
                input_lines: ranges(self.rejected.iter().copied()),
            }),
        }
    }

    /// Write every chunk (and the reject file) into `dir`, in parallel,
    /// under temporary names; rename them all once every one is complete;
    /// then write `manifest.json`. Returns the manifest. With `direct`,
    /// chunks bypass the page cache where the file system allows it (see
    /// [`validate_and_write`]).
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &self,
        bytes: &[u8],
        dir: &Path,
        input: &str,
        stem: &str,
        cfg: &SplitConfig,
        direct: bool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> io::Result<Manifest> {
        std::fs::create_dir_all(dir)?;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut files = std::thread::scope(|scope| {
            let writers = Writers::spawn(scope, bytes, dir, direct, &stop, progress);
            let send = |chunk: usize, facts: &mut dyn Iterator<Item = usize>| {
                let runs = runs(bytes, &self.facts, facts);
                let reserve = runs.iter().map(|r| r.len() as u64).sum();
                writers.append(chunk, runs, reserve);
                writers.close(chunk);
            };
            for (chunk, c) in self.chunks.iter().enumerate() {
                send(
                    chunk,
                    &mut c
                        .facts
                        .iter()
                        .flat_map(|r| r.start as usize..r.end as usize),
                );
            }
            if !self.rejected.is_empty() {
                let mut lines = facts_of_lines(&self.facts, &self.rejected).into_iter();
                send(self.chunks.len(), &mut lines);
            }
            writers.finish(false)
        })?;
        let mut take = |chunk: usize| {
            files
                .remove(&chunk)
                .ok_or_else(|| io::Error::other("a chunk was not written"))
        };
        let written = (0..self.chunks.len())
            .map(&mut take)
            .collect::<io::Result<Vec<_>>>()?;
        let rejects = match self.rejected.is_empty() {
            true => None,
            false => Some(take(self.chunks.len())?.0),
        };
        self.commit(written, rejects, dir, input, stem, cfg)
    }

    /// Rename the written chunks (in plan order) and rejects into place,
    /// then write `manifest.json`.
    fn commit(
        &self,
        files: Vec<(TempPath, String)>,
        rejects: Option<TempPath>,
        dir: &Path,
        input: &str,
        stem: &str,
        cfg: &SplitConfig,
    ) -> io::Result<Manifest> {
        let mut sums = Vec::with_capacity(files.len());
        for (c, (tmp, sum)) in self.chunks.iter().zip(files) {
            tmp.persist(dir.join(self.file_name(stem, c)))
                .map_err(|e| e.error)?;
            sums.push(sum);
        }
        if let Some(tmp) = rejects {
            std::fs::create_dir_all(dir.join(REJECTS_DIR))?;
            tmp.persist(dir.join(REJECTS_DIR).join(format!("{stem}.rejects.jsonl")))
                .map_err(|e| e.error)?;
        }
        let manifest = self.manifest(input, stem, cfg, Some(&sums));
        let mut out = crate::atomic::AtomicFile::create(&dir.join("manifest.json"))?;
        serde_json::to_writer_pretty(&mut out, &manifest)?;
        io::Write::write_all(&mut out, b"\n")?;
        out.commit()?;
        Ok(manifest)
    }
}

/// The indices into `facts` of the 1-based line numbers `lines` (sorted;
/// lines without a fact, blank ones, are left out).
fn facts_of_lines(facts: &[Fact], lines: &[u64]) -> Vec<usize> {
    let mut out = Vec::with_capacity(lines.len());
    let mut numbers = LineNumbers::default();
    let mut wanted = lines.iter().map(|&l| l - 1).peekable();
    for (i, f) in facts.iter().enumerate() {
        if wanted.peek().is_none() {
            break;
        }
        let line = numbers.of(f);
        while wanted.next_if(|&w| w < line).is_some() {}
        if wanted.next_if_eq(&line).is_some() {
            out.push(i);
        }
    }
    out
}

/// The byte ranges of `lines` (indices into `facts`, in order), adjacent
/// lines joined: a one-group input becomes a few large ranges.
fn runs(bytes: &[u8], facts: &[Fact], lines: impl Iterator<Item = usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for i in lines {
        let Some(f) = facts.get(i) else { continue };
        let start = f.offset as usize;
        push_run(&mut out, start..(start + f.len as usize).min(bytes.len()));
    }
    out
}

/// Append `next` to `runs`, joined to the last run if it starts where that
/// one ends.
fn push_run<T: PartialEq + Copy>(runs: &mut Vec<Range<T>>, next: Range<T>) {
    match runs.last_mut() {
        Some(run) if run.end == next.start => run.end = next.end,
        _ => runs.push(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Provider;

    fn cfg(limits: Limits) -> SplitConfig {
        let profile = Provider::OpenAi.profile();
        SplitConfig {
            profile,
            limits,
            max_tokens: None,
            endpoint: None,
            tokens: TokenCounter { forced: None },
            count_tokens: false,
        }
    }

    fn line(id: u32, url: &str, model: &str) -> String {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"{url}","body":{{"model":"{model}","input":"x","messages":[{{"role":"user","content":"hi"}}]}}}}"#
        ) + "\n"
    }

    #[test]
    fn groups_by_endpoint_and_model_and_cuts_by_count() {
        let mut text = String::new();
        for i in 0..10 {
            let (url, model) = if i % 3 == 0 {
                ("/v1/embeddings", "e")
            } else {
                ("/v1/chat/completions", "m")
            };
            text.push_str(&line(i, url, model));
        }
        let plan = Plan::new(
            text.as_bytes(),
            &cfg(Limits {
                max_requests: Some(3),
                ..Limits::default()
            }),
            vec![],
            &|_| {},
        )
        .expect("plan");
        assert_eq!(plan.groups.len(), 2);
        let sizes: Vec<(usize, u64)> = plan.chunks.iter().map(|c| (c.group, c.requests)).collect();
        assert_eq!(sizes, vec![(0, 3), (0, 1), (1, 3), (1, 3)]);
        assert_eq!(plan.groups[0].slug(), "embeddings.e");
        assert_eq!(
            plan.file_name("in", &plan.chunks[1]),
            "in.embeddings.e.002.jsonl"
        );
    }

    #[test]
    fn a_line_over_a_limit_alone_is_an_error() {
        let text = line(1, "/v1/chat/completions", "m") + &line(2, "/v1/chat/completions", "m");
        let err = Plan::new(
            text.as_bytes(),
            &cfg(Limits {
                max_bytes: Some(50),
                ..Limits::default()
            }),
            vec![],
            &|_| {},
        )
        .err()
        .expect("oversize");
        assert_eq!(err.len(), 2);
        assert_eq!(err[0].line, 1);
    }

    #[test]
    fn line_ranges() {
        assert_eq!(
            ranges([1, 2, 3, 5, 7, 8].into_iter()),
            vec![[1, 3], [5, 5], [7, 8]]
        );
    }
}
