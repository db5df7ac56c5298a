//! The per-line rules: everything that can be judged from one line and the
//! batch's reference endpoint and model. Rules that need the whole file
//! (repeated ids, counts, sizes) are in [`crate::validate`].

use std::collections::HashMap;

use crate::dedup::IdEntry;
use crate::diag::{Code, CodeCounts, Diagnostic, excerpt_with_caret, locate};
use crate::envelope::{self, Body, BodyView, Kind, MessageProblem, Messages, Text};
use crate::lines::is_blank;
use crate::provider::{EndpointKind, LineShape, Profile};

const EXCERPT_WIDTH: usize = 72;
const NOT_JSON: &str = "This line is not parseable as valid JSON";
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
    /// Record the lines that have errors (for `split --skip-invalid`).
    pub collect_bad: bool,
    /// Record each line's facts for planning chunks (for `split`).
    pub collect_facts: bool,
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

/// One line's facts, relative to its chunk until absorbed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineFact {
    pub offset: u64,
    pub len: u32,
    /// Index into the chunk's `fact_groups`, or `u32::MAX`.
    pub group: u32,
    pub inputs: u32,
    /// Blank lines just before this one in the chunk (they get no fact).
    pub skipped: u32,
}

/// Endpoint and model of a group of lines.
pub(crate) type GroupKey = (String, Option<String>);

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
    /// Relative indices of lines with errors, when the context asks.
    pub bad_lines: Vec<u64>,
    /// Per-line facts, when the context asks: one per line that is not
    /// blank (a blank line costs a count, not a fact).
    pub facts: Vec<LineFact>,
    /// Blank lines after the last fact (or in all, if there is none).
    pub trailing_blanks: u32,
    /// The groups `facts` refer to.
    pub fact_groups: Vec<GroupKey>,
}

impl ChunkOut {
    /// The index of the group `(endpoint, model)`, added if new. Lines of a
    /// chunk mostly share one group, so the last one is tried first.
    fn group_of(&mut self, endpoint: &str, model: Option<&str>) -> u32 {
        let matches = |g: &GroupKey| g.0 == endpoint && g.1.as_deref() == model;
        if let Some(last) = self.facts.last().map(|f| f.group) {
            if self.fact_groups.get(last as usize).is_some_and(matches) {
                return last;
            }
        }
        if let Some(i) = self.fact_groups.iter().position(matches) {
            return i as u32;
        }
        self.fact_groups
            .push((endpoint.to_owned(), model.map(str::to_owned)));
        (self.fact_groups.len() - 1) as u32
    }
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
    fn report(&mut self, code: Code, at: Pos<'_>, build: impl FnOnce() -> Diagnostic) {
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
fn without_bom(line: &[u8]) -> &[u8] {
    line.strip_prefix(UTF8_BOM).unwrap_or(line)
}

/// A line's `custom_id` (the line starts at `line` and may run on to the end
/// of the block), with an excerpt centred on it: the id, its column, the
/// excerpt and the caret's place in it.
pub(crate) fn custom_id_of(line: &[u8]) -> Option<(String, usize, String, usize)> {
    let line = crate::lines::Lines::new(line).next()?.bytes;
    let text = std::str::from_utf8(without_bom(line)).ok()?;
    let id = envelope::parse_line(text)
        .ok()?
        .custom_id?
        .as_str()?
        .to_owned();
    let column = locate(line, "custom_id");
    let (excerpt, caret) = excerpt_with_caret(line, column, EXCERPT_WIDTH);
    Some((id, column, excerpt, caret))
}

/// Where a problem is: the line (relative), its offset and text, and the
/// column within it.
#[derive(Clone, Copy)]
struct Pos<'a> {
    line: u64,
    offset: u64,
    text: &'a [u8],
    column: usize,
}

impl<'a> Pos<'a> {
    fn at(self, column: usize) -> Pos<'a> {
        Pos { column, ..self }
    }
}

/// Check every line of `chunk`. `starts_file` says whether the chunk's first
/// line is the file's first (where a byte order mark would be).
pub(crate) fn check_chunk(ctx: &LineCtx<'_>, chunk: &[u8], starts_file: bool, out: &mut ChunkOut) {
    walk(ctx, chunk, starts_file, out, |_| false);
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
    walk(ctx, chunk, starts_file, &mut out, stop)
}

fn walk(
    ctx: &LineCtx<'_>,
    chunk: &[u8],
    starts_file: bool,
    out: &mut ChunkOut,
    stop: impl Fn(&ChunkOut) -> bool,
) -> Option<u64> {
    let mut at = 0;
    let mut i = 0;
    while at < chunk.len() {
        // The scanner finds the line's end as it reads it; a line it
        // declines is found by a search for its end and read slowly.
        let (end, scanned) = match envelope::scan_to_newline(&chunk[at..]) {
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
        let errors_before = out.errors;
        let blank_before = out.blank;
        let first = starts_file && i == 0;
        let group = match ctx.before_references(start as u64) {
            None => check_line(ctx, bytes, scanned, first, pos, out),
            Some(earlier) => check_line(&earlier, bytes, scanned, first, pos, out),
        };
        if ctx.collect_facts {
            // A chunk holds far fewer than 2^32 lines.
            if out.blank > blank_before {
                out.trailing_blanks += 1;
            } else {
                let (group, inputs) = group.unwrap_or((u32::MAX, 0));
                out.facts.push(LineFact {
                    offset: start as u64,
                    // The line with its ending.
                    len: (at.min(chunk.len()) - start).min(u32::MAX as usize) as u32,
                    group,
                    inputs,
                    skipped: std::mem::take(&mut out.trailing_blanks),
                });
            }
        }
        if ctx.collect_bad && out.errors > errors_before {
            out.bad_lines.push(pos.line);
        }
        if stop(out) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Check one line; `scanned` is the scanner's reading of it, if it gave one.
fn check_line<'a>(
    ctx: &LineCtx<'_>,
    raw: &'a [u8],
    scanned: Option<(envelope::LineView<'a>, bool)>,
    first_of_file: bool,
    pos: Pos<'_>,
    out: &mut ChunkOut,
) -> Option<(u32, u32)> {
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
    check_view(ctx, &view, pos, out);

    // Stamp the line's custom_id on its diagnostics.
    if let Some(Text::Str(id)) = &view.custom_id {
        for d in &mut out.diags[first_diag..] {
            d.custom_id = Some(id.to_string());
        }
    }
    ctx.collect_facts.then(|| line_group(ctx, &view, out))
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

/// The group and embedding inputs of a parsed line, for planning chunks.
fn line_group(ctx: &LineCtx<'_>, view: &envelope::LineView<'_>, out: &mut ChunkOut) -> (u32, u32) {
    let endpoint = match ctx.profile.shape {
        LineShape::Full => view.url.as_ref().and_then(Text::as_str),
        LineShape::IdAndBody => ctx.endpoint,
    };
    let body = match &view.body {
        Some(Body::Object(b)) => Some(b),
        _ => None,
    };
    let model = body.and_then(|b| b.model.as_ref()).and_then(Text::as_str);
    let inputs = body
        .and_then(|b| b.input)
        .map_or(0, |i| i.count.min(u32::MAX as u64) as u32);
    (out.group_of(endpoint.unwrap_or_default(), model), inputs)
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

fn missing(out: &mut ChunkOut, pos: Pos<'_>, field: &'static str) {
    absent(
        out,
        pos,
        Code::MissingRequiredParameter,
        format!("Missing required parameter: '{field}'."),
        field,
        Some(format!("add \"{field}\" to the request")),
    );
}

/// Report the missing parameter `param`; where the line has a key that is
/// nearly its name (`customid`, `Custom-ID`, `mesages`), point at that key
/// and ask "did you mean".
fn absent(
    out: &mut ChunkOut,
    pos: Pos<'_>,
    code: Code,
    message: String,
    param: &'static str,
    otherwise: Option<String>,
) {
    // The line is parsed again only for a diagnostic that is kept.
    let near = (out.diags.len() < out.keep)
        .then(|| near_key(pos.text, param))
        .flatten();
    let at = match &near {
        Some((_, column)) => pos.at(*column),
        None => pos,
    };
    out.report(code, at, || {
        let d = Diagnostic::new(code, message).param(param);
        match (near, otherwise) {
            (Some((key, _)), _) => {
                let name = param.rsplit('.').next().unwrap_or(param);
                d.hint(format!(
                    "did you mean \"{name}\"? the request has \"{key}\""
                ))
            }
            (None, Some(hint)) => d.hint(hint),
            (None, None) => d,
        }
    });
}

/// A key of the object that holds `param` (`body.model`: the body's keys)
/// whose name is nearly `param`'s last segment, and the key's column.
fn near_key(line: &[u8], param: &str) -> Option<(String, usize)> {
    let value: serde_json::Value = serde_json::from_slice(without_bom(line)).ok()?;
    let mut path: Vec<&str> = param.split('.').collect();
    let name = path.pop()?;
    let mut object = value.as_object()?;
    for key in &path {
        object = object.get(*key)?.as_object()?;
    }
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = fold(name);
    let allowed = if name.len() >= 5 { 2 } else { 1 };
    let key = object
        .keys()
        .filter(|k| k.as_str() != name)
        .map(|k| {
            let d = if fold(k) == wanted {
                0
            } else {
                crate::provider::edit_distance(&k.to_lowercase(), name)
            };
            (d, k)
        })
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)?
        .1
        .clone();
    let mut at = path.join(".");
    if !at.is_empty() {
        at.push('.');
    }
    at.push_str(&key);
    // The key itself, the last one of that name before its value.
    let value = locate(line, &at);
    let quoted = format!("\"{key}\"");
    let column = line[..value]
        .windows(quoted.len())
        .rposition(|w| w == quoted.as_bytes())
        .unwrap_or(value);
    Some((key, column))
}

fn wrong_type(out: &mut ChunkOut, pos: Pos<'_>, param: &str, expected: &str, kind: Kind) {
    out.report(Code::InvalidRequest, pos, || {
        Diagnostic::new(
            Code::InvalidRequest,
            format!(
                "The {param} must be {expected}, but it is {}.",
                kind.described()
            ),
        )
        .param(param)
    });
}

fn check_view(ctx: &LineCtx<'_>, view: &envelope::LineView<'_>, pos: Pos<'_>, out: &mut ChunkOut) {
    if let Some(key) = view.duplicate_key {
        out.report(Code::InvalidRequest, pos, || {
            Diagnostic::new(
                Code::InvalidRequest,
                format!("The key '{key}' appears more than once in this request; parsers disagree on which value counts."),
            )
            .param(key)
            .hint("keep one of them")
        });
    }
    match &view.custom_id {
        None => missing(out, pos, "custom_id"),
        Some(Text::Other(kind)) => wrong_type(out, pos, "custom_id", "a string", *kind),
        Some(Text::Str(id)) if id.is_empty() => out.report(Code::InvalidRequest, pos, || {
            Diagnostic::new(Code::InvalidRequest, "The custom_id must not be empty.")
                .param("custom_id")
                .hint("give every request a unique, non-empty custom_id")
        }),
        Some(Text::Str(id)) => {
            out.ids.push(IdEntry::new(id, pos.line));
            if ctx.id_lines {
                out.id_lines.push(pos.offset);
            }
            check_custom_id_form(ctx, id, pos, out);
        }
    }
    let mut line_endpoint = ctx.endpoint;
    if ctx.profile.shape == LineShape::Full {
        match &view.method {
            None => missing(out, pos, "method"),
            Some(Text::Str(m)) if m == "POST" => {}
            Some(Text::Str(m)) => out.report(Code::InvalidRequest, pos, || {
                Diagnostic::new(
                    Code::InvalidRequest,
                    format!("The method must be 'POST', not '{m}'."),
                )
                .param("method")
                .hint("the Batch API only runs POST requests")
            }),
            Some(Text::Other(kind)) => wrong_type(out, pos, "method", "a string", *kind),
        }
        match &view.url {
            None => missing(out, pos, "url"),
            Some(Text::Other(kind)) => wrong_type(out, pos, "url", "a string", *kind),
            Some(Text::Str(url)) => {
                match ctx.endpoint {
                    Some(batch) if ctx.single_endpoint && batch != url => {
                        line_endpoint = None;
                        out.report(Code::InvalidUrl, pos, || {
                            let hint = match ctx.profile.near_miss(url) {
                                Some(meant) => format!("did you mean `{meant}`?"),
                                None if !ctx.profile.supports(url) => format!(
                                    "{} batches accept: {}",
                                    ctx.profile.provider,
                                    ctx.profile.endpoints.join(", ")
                                ),
                                None => "every line of a batch must use the same url; `batchkit split` separates endpoints".to_owned(),
                            };
                            Diagnostic::new(
                                Code::InvalidUrl,
                                format!("The URL provided for this request does not match the batch endpoint ('{url}' here, '{batch}' for the batch)."),
                            )
                            .param("url")
                            .hint(hint)
                        });
                    }
                    // Judging the body by either endpoint would bury the real
                    // problem (the url) under noise, so skip endpoint checks.
                    _ => line_endpoint = Some(url),
                }
                if !ctx.single_endpoint && !ctx.profile.supports(url) && ctx.profile.per_line {
                    line_endpoint = None;
                    out.report(Code::UnservedUrl, pos, || {
                        Diagnostic::new(
                            Code::UnservedUrl,
                            format!(
                                "The URL '{url}' is not one {} serves: this request gets an error line, and the others run.",
                                ctx.profile.provider
                            ),
                        )
                        .param("url")
                        .hint(format!(
                            "{} serves: {}",
                            ctx.profile.provider,
                            ctx.profile.endpoints.join(", ")
                        ))
                    });
                } else if !ctx.single_endpoint && !ctx.profile.supports(url) {
                    // A line's url is `invalid_url` in every command (as
                    // `validate` says of a url that is not the batch's);
                    // `unsupported_endpoint` is for a batch's endpoint.
                    line_endpoint = None;
                    out.report(Code::InvalidUrl, pos, || {
                        let hint = match ctx.profile.near_miss(url) {
                            Some(meant) => format!("did you mean `{meant}`?"),
                            None => format!(
                                "{} batches accept: {}",
                                ctx.profile.provider,
                                ctx.profile.endpoints.join(", ")
                            ),
                        };
                        Diagnostic::new(
                            Code::InvalidUrl,
                            format!(
                                "The URL '{url}' is not an endpoint the {} Batch API supports.",
                                ctx.profile.provider
                            ),
                        )
                        .param("url")
                        .hint(hint)
                    });
                }
            }
        }
    }
    match &view.body {
        None => missing(out, pos, "body"),
        Some(Body::Other(kind)) => wrong_type(out, pos, "body", "a JSON object", *kind),
        Some(Body::Object(body)) => {
            let kind = line_endpoint.map_or(EndpointKind::Other, EndpointKind::of);
            check_body(ctx, body, kind, pos, out);
        }
    }
}

fn check_custom_id_form(ctx: &LineCtx<'_>, id: &str, pos: Pos<'_>, out: &mut ChunkOut) {
    if let Some(max) = ctx.profile.max_custom_id_chars {
        let chars = id.chars().count();
        if chars > max {
            out.report(Code::InvalidCustomId, pos, || {
                Diagnostic::new(
                    Code::InvalidCustomId,
                    format!(
                        "The custom_id is {chars} characters long; {} accepts at most {max}.",
                        ctx.profile.provider
                    ),
                )
                .param("custom_id")
                .hint("shorten the id, e.g. to a hash of it, and keep a mapping")
            });
        }
    }
}

fn check_body(
    ctx: &LineCtx<'_>,
    body: &BodyView<'_>,
    kind: EndpointKind,
    pos: Pos<'_>,
    out: &mut ChunkOut,
) {
    if let Some(key) = body.duplicate_key {
        let param = format!("body.{key}");
        out.report(Code::InvalidRequest, pos, || {
            Diagnostic::new(
                Code::InvalidRequest,
                format!("The key '{param}' appears more than once in this request; parsers disagree on which value counts."),
            )
            .param(param.clone())
            .hint("keep one of them")
        });
    }
    if body.stream.is_some_and(|s| s.is_true) && ctx.profile.per_line {
        out.report(Code::StreamedRequest, pos, || {
            Diagnostic::new(
                Code::StreamedRequest,
                format!(
                    "{} answers a streamed request with an error line ('Request must not be sent in stream mode') and runs the others.",
                    ctx.profile.provider
                ),
            )
            .param("body.stream")
            .hint("remove \"stream\": true from the body")
        });
    } else if body.stream.is_some_and(|s| s.is_true) {
        out.report(Code::StreamingUnsupported, pos, || {
            let prefix = if kind == EndpointKind::Chat {
                "Chat Completions: "
            } else {
                ""
            };
            Diagnostic::new(
                Code::StreamingUnsupported,
                format!("{prefix}Streaming is not supported in the Batch API."),
            )
            .param("body.stream")
            .hint("remove \"stream\": true from the body")
        });
    }
    check_model(ctx, body, kind, pos, out);
    match kind {
        EndpointKind::Chat => check_messages(body.messages, pos, out),
        EndpointKind::Completions => {
            if body.prompt.is_none_or(|p| p.kind == Kind::Null) {
                required(out, pos, "Prompt", "body.prompt");
            }
        }
        // A Responses request may name a stored prompt instead of an input.
        EndpointKind::Responses if body.prompt.is_some_and(|p| p.kind != Kind::Null) => {
            if let Some(i) = body
                .input
                .filter(|i| !matches!(i.kind, Kind::String | Kind::Array | Kind::Null))
            {
                wrong_type(out, pos, "body.input", "a string or an array", i.kind);
            }
        }
        EndpointKind::Embeddings | EndpointKind::Moderations | EndpointKind::Responses => {
            match body.input {
                None => required(out, pos, "Input", "body.input"),
                Some(i) if i.kind == Kind::Null => required(out, pos, "Input", "body.input"),
                Some(i) if matches!(i.kind, Kind::String | Kind::Array) => {
                    if kind == EndpointKind::Embeddings {
                        out.embedding_inputs += i.count;
                    }
                }
                Some(i) => wrong_type(out, pos, "body.input", "a string or an array", i.kind),
            }
        }
        EndpointKind::Other => {}
    }
}

fn required(out: &mut ChunkOut, pos: Pos<'_>, name: &str, param: &'static str) {
    absent(
        out,
        pos,
        Code::InvalidRequest,
        format!("{name} parameter is required."),
        param,
        None,
    );
}

fn check_model(
    ctx: &LineCtx<'_>,
    body: &BodyView<'_>,
    kind: EndpointKind,
    pos: Pos<'_>,
    out: &mut ChunkOut,
) {
    match &body.model {
        None => {
            // Moderations default their model; Mistral sets it on the job.
            if ctx.profile.model_required && kind != EndpointKind::Moderations {
                absent(
                    out,
                    pos,
                    Code::InvalidRequest,
                    "Model parameter is required.".to_owned(),
                    "body.model",
                    Some("add \"model\" to the body".to_owned()),
                );
            }
        }
        Some(Text::Other(k)) => wrong_type(out, pos, "body.model", "a string", *k),
        Some(Text::Str(model)) => {
            out.models.add(model, 1);
            if let Some((batch, first_line)) = ctx.model {
                if ctx.single_model && batch != model {
                    out.report(Code::MismatchedModel, pos, || {
                        Diagnostic::new(
                            Code::MismatchedModel,
                            format!("The model '{model}' for this request does not match the rest of the batch. Each batch must contain requests for a single model."),
                        )
                        .param("body.model")
                        .hint(format!("the batch's model is '{batch}' (line {first_line}); `batchkit split` separates models"))
                    });
                }
            }
        }
    }
}

fn check_messages(messages: Option<Messages>, pos: Pos<'_>, out: &mut ChunkOut) {
    match messages {
        None => required(out, pos, "Messages", "body.messages"),
        Some(Messages::Other(Kind::Null)) => required(out, pos, "Messages", "body.messages"),
        Some(Messages::Other(kind)) => wrong_type(out, pos, "body.messages", "an array", kind),
        Some(Messages::Array { len: 0, .. }) => out.report(Code::InvalidRequest, pos, || {
            Diagnostic::new(Code::InvalidRequest, "Messages must be a non-empty array.")
                .param("body.messages")
        }),
        Some(Messages::Array {
            problem: Some((i, problem)),
            ..
        }) => out.report(Code::InvalidRequest, pos, || {
            let message = match problem {
                MessageProblem::NotObject(kind) => format!(
                    "Each message must be an object, but body.messages[{i}] is {}.",
                    kind.described()
                ),
                MessageProblem::NoRole => {
                    format!("Each message must have a role, but body.messages[{i}] has none.")
                }
            };
            Diagnostic::new(Code::InvalidRequest, message)
                .param(format!("body.messages[{i}]"))
                .hint("messages look like {\"role\": \"user\", \"content\": \"...\"}")
        }),
        Some(Messages::Array { problem: None, .. }) => {}
    }
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
