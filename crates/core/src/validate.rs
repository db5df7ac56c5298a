//! The validator: runs the per-line rules over blocks of input in parallel,
//! then the rules that need the whole file (repeated ids, counts, sizes).
//!
//! Results do not depend on the thread count, the chunk size or whether the
//! input was mapped or streamed: chunks are checked in parallel but absorbed
//! in input order, and the whole-file rules run once at the end.

use rayon::prelude::*;

use crate::check::{self, ChunkOut, LineCtx, ModelTally};
use crate::dedup::{IdEntry, SeenFilter, find_repeats};
use crate::diag::{Code, CodeCounts, Diagnostic, Severity};
use crate::input::{self, Input, InputError, Source};
use crate::lines::chunk_ranges;
use crate::provider::{Limits, LineShape, Profile, Provider};

pub use crate::check::{LineSink, SeenLine, Sink};

/// Diagnostics kept for printing unless told otherwise.
pub const DEFAULT_KEEP: usize = 1000;
/// A mapped file is fed to the validator in blocks of this size, so that the
/// per-chunk results held at once stay small.
const MAPPED_BLOCK: usize = 64 << 20;

/// How to validate.
#[derive(Clone, Debug)]
pub struct Config {
    /// The provider's rules.
    pub profile: Profile,
    /// Limits in force (the profile's, with the user's overrides).
    pub limits: Limits,
    /// The batch endpoint; `None` takes the first line's `url`.
    pub endpoint: Option<String>,
    /// Every line must use one model.
    pub single_model: bool,
    /// Every line must use the batch endpoint.
    pub single_endpoint: bool,
    /// How many diagnostics to keep (all are counted); `None` keeps all.
    pub keep: Option<usize>,
    /// Bytes per parallel chunk; `None` picks one from the input and the
    /// thread count. Results never depend on it.
    pub chunk_size: Option<usize>,
    /// Bytes per block when streaming.
    pub block_size: usize,
}

impl Config {
    /// The rules of `provider`, with its default limits.
    pub fn new(provider: Provider) -> Config {
        let profile = provider.profile();
        Config {
            limits: profile.limits,
            single_model: profile.single_model,
            // vLLM serves each line by its own url.
            single_endpoint: !profile.per_line,
            endpoint: None,
            keep: Some(DEFAULT_KEEP),
            chunk_size: None,
            block_size: input::DEFAULT_BLOCK_SIZE,
            profile,
        }
    }
}

/// What a validation found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The kept diagnostics, by line (whole-file problems last).
    pub diagnostics: Vec<Diagnostic>,
    /// Every problem, counted by code.
    pub counts: CodeCounts,
    /// Facts about the file.
    pub summary: Summary,
}

impl Report {
    /// No errors (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.errors() == 0
    }

    /// Number of errors found.
    pub fn errors(&self) -> u64 {
        self.counts.total(Severity::Error)
    }

    /// Add the file-name check the service makes at upload: a batch input
    /// must be named `*.jsonl` (`*.jsonl.gz` is taken as the name of a
    /// file that will be uncompressed first; stdin has no name to check).
    pub fn check_file_name(&mut self, name: &std::path::Path) {
        if name.as_os_str() == "-" {
            return;
        }
        let file = name
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = file.strip_suffix(".gz").unwrap_or(&file);
        if !file.ends_with(".jsonl") {
            self.counts.add(Code::InvalidFileFormat);
            self.diagnostics.push(
                Diagnostic::new(
                    Code::InvalidFileFormat,
                    "Invalid file format for Batch API. Must be .jsonl",
                )
                .hint(format!(
                    "OpenAI refuses the upload of '{file}': rename it to end in .jsonl"
                )),
            );
        }
    }

    /// Number of warnings found.
    pub fn warnings(&self) -> u64 {
        self.counts.total(Severity::Warning)
    }

    /// Whether some diagnostics were counted but not kept.
    pub fn truncated(&self) -> bool {
        (self.diagnostics.len() as u64) < self.errors() + self.warnings()
    }
}

/// Facts about a validated file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The provider whose rules applied.
    pub provider: Provider,
    /// Lines, blank ones included.
    pub lines: u64,
    /// Non-blank lines: each is a request to the service.
    pub requests: u64,
    /// Blank lines.
    pub blank_lines: u64,
    /// Bytes (decompressed).
    pub bytes: u64,
    /// Length in bytes of the longest line.
    pub longest_line: u64,
    /// The batch endpoint.
    pub endpoint: Option<String>,
    /// Models and how many requests use each, most used first.
    pub models: Vec<(String, u64)>,
    /// Requests whose model was not tallied by name (too many distinct models).
    pub other_models: u64,
    /// The batch's model and the line it was first read from, where the
    /// profile wants one model per batch.
    pub batch_model: Option<(String, u64)>,
    /// Embedding inputs across all lines.
    pub embedding_inputs: u64,
    /// The limits checked.
    pub limits: Limits,
}

/// Validate a whole input. `progress` is called with the number of bytes
/// done after each chunk, from any thread.
pub fn validate(
    input: Input,
    cfg: &Config,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, InputError> {
    validate_into(input, cfg, (), progress).map(|(report, ())| report)
}

/// Validate a whole input, handing every line to `sink` too.
pub fn validate_into<S: Sink>(
    input: Input,
    cfg: &Config,
    sink: S,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Report, S), InputError> {
    match input.source {
        Source::Mapped(map) => Ok(validate_bytes_into(map.bytes(), cfg, sink, progress)),
        Source::Stream(reader) => {
            let mut v = Validator::with_sink(cfg, sink);
            input::for_each_block(reader, &input.name, cfg.block_size, |block| {
                v.feed(block, progress);
            })?;
            Ok(v.finish_into(None))
        }
    }
}

/// Validate bytes held in memory.
pub fn validate_bytes(bytes: &[u8], cfg: &Config) -> Report {
    validate_bytes_with_progress(bytes, cfg, &|_| {})
}

/// Validate bytes held in memory, calling `progress` with the bytes done
/// after each chunk (from any thread).
pub fn validate_bytes_with_progress(
    bytes: &[u8],
    cfg: &Config,
    progress: &(dyn Fn(u64) + Sync),
) -> Report {
    validate_bytes_into(bytes, cfg, (), progress).0
}

/// Validate bytes held in memory, handing every line to `sink` too.
pub fn validate_bytes_into<S: Sink>(
    bytes: &[u8],
    cfg: &Config,
    sink: S,
    progress: &(dyn Fn(u64) + Sync),
) -> (Report, S) {
    let mut v = Validator::with_sink(cfg, sink).over_whole();
    for block in chunk_ranges(bytes, MAPPED_BLOCK) {
        v.feed(&bytes[block], progress);
    }
    v.finish_into(Some(bytes))
}

/// A line whose `custom_id` may repeat an earlier one, kept to name it.
#[derive(Debug)]
struct NamedId {
    line: u64,
    id: Box<str>,
    /// Where the id is in the input.
    offset: u64,
    excerpt: Box<str>,
    caret: u32,
}

/// Incremental validation: feed blocks of whole lines in order, then finish.
/// Every line is handed to the [`Sink`] `S` too (none for `()`).
pub struct Validator<'c, S: Sink = ()> {
    cfg: &'c Config,
    sink: S,
    lines: u64,
    bytes: u64,
    requests: u64,
    blank: u64,
    embedding_inputs: u64,
    longest_line: u64,
    endpoint: Option<String>,
    model: Option<(String, u64)>,
    /// Where (a byte offset in the input) the lines start that the endpoint
    /// and the model apply to; `u64::MAX` until they are known.
    endpoint_from: u64,
    model_from: u64,
    /// One entry per `custom_id`, appended in input order. A single vector:
    /// large reallocations move pages (mremap) instead of copying, so peak
    /// memory stays at 24 bytes per request.
    ids: Vec<IdEntry>,
    /// For a stream: asked about every id in input order; the ids it may
    /// have seen are kept in `named`, so that a repeat can be named without
    /// keeping the bytes of every id. `None` over a whole input in memory,
    /// where the repeats are named by a second look at their lines
    /// ([`Validator::finish_over`]), which costs nothing when there are none.
    seen: Option<SeenFilter>,
    /// The ids that may repeat (or do), by line.
    named: Vec<NamedId>,
    diags: Vec<Diagnostic>,
    counts: CodeCounts,
    models: ModelTally,
    requests_over_at: Option<u64>,
    inputs_over_at: Option<u64>,
    /// The diagnostic of the line that set an unsupported endpoint, until
    /// the lines before it have had their diagnostics kept.
    endpoint_diag: Option<Diagnostic>,
}

impl<'c> Validator<'c, ()> {
    /// Start a validation.
    pub fn new(cfg: &'c Config) -> Self {
        Validator::with_sink(cfg, ())
    }
}

impl<'c, S: Sink> Validator<'c, S> {
    /// Start a validation that hands every line to `sink`.
    pub fn with_sink(cfg: &'c Config, sink: S) -> Self {
        let mut v = Validator {
            cfg,
            sink,
            lines: 0,
            bytes: 0,
            requests: 0,
            blank: 0,
            embedding_inputs: 0,
            longest_line: 0,
            endpoint: None,
            model: None,
            endpoint_from: u64::MAX,
            model_from: u64::MAX,
            ids: Vec::new(),
            seen: Some(SeenFilter::default()),
            named: Vec::new(),
            diags: Vec::new(),
            counts: CodeCounts::default(),
            models: ModelTally::default(),
            requests_over_at: None,
            inputs_over_at: None,
            endpoint_diag: None,
        };
        let given = cfg.endpoint.as_deref().or(cfg.profile.default_endpoint());
        if let Some(endpoint) = given {
            v.set_endpoint(endpoint.to_owned(), None);
            v.endpoint_from = 0;
        }
        v
    }

    /// Make this a validation of an input held whole (mapped or in
    /// memory), to be finished by [`Validator::finish_over`] (or
    /// [`Validator::finish_into`]) with the same bytes.
    pub fn over_whole(self) -> Self {
        Validator { seen: None, ..self }
    }

    /// The sink, with what it has absorbed so far.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    fn keep(&self) -> usize {
        self.cfg.keep.unwrap_or(usize::MAX)
    }

    /// Keep the endpoint's diagnostic (already counted), if there is room,
    /// at its place in line order.
    fn keep_diag_in_order(&mut self) {
        if let Some(d) = self.endpoint_diag.take() {
            if self.diags.len() < self.keep() {
                self.diags.push(d);
            }
        }
    }

    fn push(&mut self, d: Diagnostic) {
        self.counts.add(d.code);
        if self.diags.len() < self.keep() {
            self.diags.push(d);
        }
    }

    fn set_endpoint(&mut self, endpoint: String, line: Option<u64>) {
        let profile = &self.cfg.profile;
        // Without one batch endpoint, each line's url is checked instead.
        if self.cfg.single_endpoint && !profile.supports(&endpoint) {
            let mut d = Diagnostic::new(
                Code::UnsupportedEndpoint,
                format!(
                    "The endpoint '{endpoint}' is not supported by the {} Batch API.",
                    profile.provider
                ),
            )
            .param(if line.is_some() { "url" } else { "endpoint" })
            .hint(match profile.near_miss(&endpoint) {
                Some(meant) => format!("did you mean `{meant}`?"),
                None => format!(
                    "{} batches accept: {}; another provider's rules: --provider",
                    profile.provider,
                    profile.endpoints.join(", ")
                ),
            });
            d.line = line;
            match line {
                // Kept in line order among the lines' own diagnostics (see
                // `absorb`), so that which ones are kept does not depend on
                // the block the line came in.
                Some(_) => {
                    self.counts.add(d.code);
                    self.endpoint_diag = Some(d);
                }
                None => self.push(d),
            }
        }
        self.endpoint = Some(endpoint);
    }

    /// Check one block of whole lines (the last block may lack a final
    /// newline). Blocks must be fed in input order.
    pub fn feed(&mut self, block: &[u8], progress: &(dyn Fn(u64) + Sync)) {
        self.find_references(block);
        // Copies (once per block), so the context does not borrow `self`.
        let cfg = self.cfg;
        let endpoint = self.endpoint.clone();
        let model = self.model.clone();
        let ctx = LineCtx {
            profile: &cfg.profile,
            endpoint: endpoint.as_deref(),
            model: model.as_ref().map(|(m, l)| (m.as_str(), *l)),
            // Counted from this block's start from here on; 0 when there is
            // nothing to hide from earlier lines.
            endpoint_from: match endpoint {
                Some(_) => self.endpoint_from.saturating_sub(self.bytes),
                None => 0,
            },
            model_from: match model {
                Some(_) => self.model_from.saturating_sub(self.bytes),
                None => 0,
            },
            single_model: self.cfg.single_model,
            single_endpoint: self.cfg.single_endpoint,
            id_lines: self.seen.is_some(),
        };
        let threads = rayon::current_num_threads().max(1);
        // At most 512 KiB: enough chunks for the threads to share a block
        // evenly, and small per-chunk results (measured with the serde_json
        // reader and a UTF-8 pass per chunk: 0.47 s on the 1 GB corpus,
        // against 0.52 s with 4 MiB chunks).
        let target = self
            .cfg
            .chunk_size
            .unwrap_or_else(|| (block.len() / (threads * 8)).clamp(64 << 10, 512 << 10));
        let ranges = chunk_ranges(block, target);
        let at_file_start = self.lines == 0;
        let keep = self.keep().saturating_sub(self.diags.len());
        let outs: Vec<(ChunkOut, S::Chunk)> = ranges
            .par_iter()
            .enumerate()
            .map(|(i, r)| {
                let mut out = ChunkOut::new(keep);
                let mut lines = S::Chunk::default();
                let ctx = ctx.for_chunk(r.start as u64);
                let starts_file = at_file_start && i == 0;
                check::check_chunk(&ctx, &block[r.clone()], starts_file, &mut out, &mut lines);
                progress(r.len() as u64);
                (out, lines)
            })
            .collect();
        for (i, (range, (out, lines))) in ranges.iter().zip(outs).enumerate() {
            let chunk = &block[range.clone()];
            let starts_file = at_file_start && i == 0;
            self.note_limit_crossings(&ctx.for_chunk(range.start as u64), chunk, starts_file, &out);
            let offset = self.bytes + range.start as u64;
            self.sink.absorb(lines, self.lines, offset);
            self.absorb(out, chunk, offset);
        }
        self.bytes += block.len() as u64;
    }

    /// Set the batch endpoint and model from the first lines that have them.
    fn find_references(&mut self, block: &[u8]) {
        let want_url = self.endpoint.is_none() && self.cfg.profile.shape == LineShape::Full;
        let want_model = self.model.is_none() && self.cfg.single_model;
        if !want_url && !want_model {
            return;
        }
        let seen = check::first_seen(block, want_url, want_model, self.bytes == 0);
        if let Some((url, i, at)) = seen.url {
            self.set_endpoint(url, Some(self.lines + i + 1));
            self.endpoint_from = self.bytes + at;
        }
        if let Some((model, i, at)) = seen.model {
            self.model = Some((model, self.lines + i + 1));
            self.model_from = self.bytes + at;
        }
    }

    /// Find the lines where the request and embedding-input totals first
    /// exceed their limits, re-checking only the chunk where that happens.
    fn note_limit_crossings(
        &mut self,
        ctx: &LineCtx<'_>,
        chunk: &[u8],
        starts_file: bool,
        out: &ChunkOut,
    ) {
        let limits = self.cfg.limits;
        if let (None, Some(max)) = (self.requests_over_at, limits.max_requests) {
            if self.requests + out.requests > max {
                let room = max - self.requests;
                let at = check::first_line_where(ctx, chunk, starts_file, |o| o.requests > room);
                self.requests_over_at = at.map(|i| self.lines + i + 1);
            }
        }
        if let (None, Some(max)) = (self.inputs_over_at, limits.max_embedding_inputs) {
            if self.embedding_inputs + out.embedding_inputs > max {
                let room = max - self.embedding_inputs;
                let at =
                    check::first_line_where(ctx, chunk, starts_file, |o| o.embedding_inputs > room);
                self.inputs_over_at = at.map(|i| self.lines + i + 1);
            }
        }
    }

    fn absorb(&mut self, out: ChunkOut, chunk: &[u8], offset_base: u64) {
        let line_base = self.lines + 1;
        match self.seen.take() {
            Some(mut seen) => {
                self.note_candidates(&mut seen, &out, chunk, line_base, offset_base);
                self.seen = Some(seen);
            }
            None => self
                .ids
                .extend(out.ids.iter().map(|e| e.shifted(line_base))),
        }
        // The first line after this chunk's.
        let next_line = line_base + out.lines;
        for mut d in out.diags {
            d.line = d.line.map(|l| l + line_base);
            d.offset = d.offset.map(|o| o + offset_base);
            if self.endpoint_diag.as_ref().is_some_and(|e| e.line < d.line) {
                self.keep_diag_in_order();
            }
            if self.diags.len() < self.keep() {
                self.diags.push(d);
            }
        }
        if self
            .endpoint_diag
            .as_ref()
            .is_some_and(|e| e.line.is_some_and(|l| l < next_line))
        {
            self.keep_diag_in_order();
        }
        self.counts.merge(&out.counts);
        self.models.merge(out.models);
        self.lines += out.lines;
        self.requests += out.requests;
        self.blank += out.blank;
        self.embedding_inputs += out.embedding_inputs;
        self.longest_line = self.longest_line.max(out.longest_line);
    }

    /// Add the chunk's ids, keeping (with its bytes) each one that `seen`
    /// may have seen before.
    fn note_candidates(
        &mut self,
        seen: &mut SeenFilter,
        out: &ChunkOut,
        chunk: &[u8],
        line_base: u64,
        offset_base: u64,
    ) {
        seen.reserve(out.ids.len(), &self.ids);
        for (e, &at) in out.ids.iter().zip(&out.id_lines) {
            let e = e.shifted(line_base);
            if seen.insert(&e) {
                let line = chunk.get(at as usize..).unwrap_or_default();
                self.name(e.line(), line, offset_base + at);
            }
            self.ids.push(e);
        }
    }

    /// Keep the id of `line` (the text from the line's start, at `offset` in
    /// the input), to name it if it is a repeat.
    fn name(&mut self, line: u64, text: &[u8], offset: u64) {
        if let Some((id, column, excerpt, caret)) = check::custom_id_of(text) {
            self.named.push(NamedId {
                line,
                id: id.into_boxed_str(),
                offset: offset + column as u64,
                excerpt: excerpt.into_boxed_str(),
                caret: caret as u32,
            });
        }
    }

    /// Errors found so far. Repeated `custom_id`s and the whole-file
    /// limits are only found by [`Validator::finish`].
    pub fn errors(&self) -> u64 {
        self.counts.total(Severity::Error)
    }

    /// Run the whole-file rules and produce the report.
    pub fn finish(self) -> Report {
        self.finish_into(None).0
    }

    /// Like [`Validator::finish`], for a validation made
    /// [`Validator::over_whole`]: `bytes` is the whole input fed, read again
    /// at the lines whose `custom_id` repeats, to name it.
    pub fn finish_over(self, bytes: &[u8]) -> Report {
        self.finish_into(Some(bytes)).0
    }

    /// Run the whole-file rules; the report and the sink. `whole` is the
    /// whole input fed, for a validation made [`Validator::over_whole`].
    pub fn finish_into(mut self, whole: Option<&[u8]>) -> (Report, S) {
        self.keep_diag_in_order();
        self.report_repeats(whole);
        let provider = self.cfg.profile.provider;
        let limits = self.cfg.limits;
        let own = self.cfg.profile.limits;
        // Say whose limit it is: the provider's, or the caller's own flag.
        let whose = |mine: Option<u64>, flag: &str| -> String {
            if mine == limits_of(&own, flag) {
                format!("{provider} accepts")
            } else {
                format!("--{flag} allows")
            }
        };
        fn limits_of(l: &Limits, flag: &str) -> Option<u64> {
            match flag {
                "max-requests" => l.max_requests,
                "max-embedding-inputs" => l.max_embedding_inputs,
                _ => l.max_bytes,
            }
        }
        if let (Some(line), Some(max)) = (self.requests_over_at, limits.max_requests) {
            let who = whose(limits.max_requests, "max-requests");
            self.push(
                Diagnostic::new(
                    Code::TooManyTasks,
                    format!(
                        "The batch has {} requests; {who} at most {max} in one batch (the limit is passed on this line).",
                        self.requests
                    ),
                )
                .hint("cut the file into batches that fit: `batchkit split FILE --out-dir DIR`")
                .at_line(line),
            );
        }
        if let (Some(line), Some(max)) = (self.inputs_over_at, limits.max_embedding_inputs) {
            let who = whose(limits.max_embedding_inputs, "max-embedding-inputs");
            self.push(
                Diagnostic::new(
                    Code::TooManyEmbeddingInputs,
                    format!(
                        "The batch has {} embedding inputs; {who} at most {max} across all requests of one batch (the limit is passed on this line).",
                        self.embedding_inputs
                    ),
                )
                .param("body.input")
                .hint("cut the file into batches that fit: `batchkit split FILE --out-dir DIR`")
                .at_line(line),
            );
        }
        if let Some(max) = limits.max_bytes.filter(|&max| self.bytes > max) {
            let message = if limits.max_bytes == own.max_bytes {
                format!(
                    "The batch input file is larger than the {max} maximum for {provider} ({} bytes).",
                    self.bytes
                )
            } else {
                format!(
                    "The batch input file is larger than the {max} bytes --max-bytes allows ({} bytes).",
                    self.bytes
                )
            };
            self.push(
                Diagnostic::new(Code::FileTooLarge, message).hint(
                    "cut the file into batches that fit: `batchkit split FILE --out-dir DIR`",
                ),
            );
        }
        if self.requests == 0 {
            let d = if self.cfg.profile.per_line {
                Diagnostic::new(
                    Code::NoRequests,
                    format!(
                        "The input file has no requests: {provider} runs nothing and writes an empty output file."
                    ),
                )
            } else {
                Diagnostic::new(
                    Code::EmptyFile,
                    "The input file is empty. Please ensure the batch contains at least one request.",
                )
            };
            self.push(d.hint("a batch file holds one JSON request per line"));
        }
        self.diags.sort_by_key(|d| d.line.unwrap_or(u64::MAX));
        self.diags.truncate(self.keep());
        let mut models: Vec<(String, u64)> = self
            .models
            .names
            .into_iter()
            .map(|(name, n)| (name.into_string(), n))
            .collect();
        models.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let report = Report {
            diagnostics: self.diags,
            counts: self.counts,
            summary: Summary {
                provider,
                lines: self.lines,
                requests: self.requests,
                blank_lines: self.blank,
                bytes: self.bytes,
                longest_line: self.longest_line,
                endpoint: self.endpoint,
                models,
                other_models: self.models.others,
                batch_model: self.model,
                embedding_inputs: self.embedding_inputs,
                limits,
            },
        };
        (report, self.sink)
    }

    /// Name the repeats in `kept` (sorted by line) by reading their lines
    /// in `bytes` again: one scan for line ends up to the last of them.
    fn name_repeats(&mut self, bytes: &[u8], kept: &[crate::dedup::Repeat]) {
        let mut wanted = kept.iter().map(|r| r.line).peekable();
        for (i, line) in crate::lines::Lines::new(bytes).enumerate() {
            let Some(&next) = wanted.peek() else { break };
            if i as u64 + 1 == next {
                wanted.next();
                let text = bytes.get(line.offset..).unwrap_or_default();
                self.name(next, text, line.offset as u64);
            }
        }
    }

    fn report_repeats(&mut self, whole: Option<&[u8]>) {
        // Every repeated line is needed when the sink asks for them.
        let keep = if S::EVERY_REPEAT { None } else { self.cfg.keep };
        let (count, mut kept) = find_repeats(std::mem::take(&mut self.ids), keep);
        // vLLM runs every line, repeated ids too: a warning, not a bad line.
        let lenient = self.cfg.profile.per_line;
        let code = if lenient {
            Code::RepeatedCustomId
        } else {
            Code::DuplicateCustomId
        };
        if S::EVERY_REPEAT && !lenient {
            let lines: Vec<u64> = kept.iter().map(|r| r.line).collect();
            self.sink.repeated(&lines);
            if let Some(k) = self.cfg.keep {
                kept.truncate(k);
            }
        }
        self.counts.add_n(code, count);
        if lenient {
            kept.truncate(self.cfg.keep.unwrap_or(usize::MAX));
        }
        if let (Some(bytes), None) = (whole, &self.seen) {
            self.name_repeats(bytes, &kept);
        }
        for r in kept {
            let named = self.named.binary_search_by_key(&r.line, |n| n.line);
            let named = named.ok().and_then(|i| self.named.get(i));
            let this = match named {
                Some(n) => format!("`{}`", n.id),
                None => "this custom_id".to_owned(),
            };
            let hint = if lenient {
                format!(
                    "line {} already uses {this}; vLLM runs both, but `batchkit merge` cannot tell their results apart and refuses the file: give each request its own",
                    r.first_line
                )
            } else {
                format!(
                    "line {} already uses {this}; give each request its own",
                    r.first_line
                )
            };
            let mut d = Diagnostic::new(
                code,
                format!(
                    "The custom_id for this request is a duplicate of another request (line {}). The custom_id parameter must be unique for each request in a batch.",
                    r.first_line
                ),
            )
            .param("custom_id")
            .hint(hint);
            d.line = Some(r.line);
            if let Some(n) = named {
                d.custom_id = Some(n.id.to_string());
                d.offset = Some(n.offset);
                d.excerpt = Some(n.excerpt.to_string());
                d.caret = Some(n.caret as usize);
            }
            self.diags.push(d);
        }
    }
}
