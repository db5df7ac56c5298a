//! What the walker hands its caller about each line: the way for split,
//! stats and `run` to learn, in validation's one pass, more than a
//! [`Report`](crate::Report) says, without the validator knowing them.

use crate::envelope::{Body, LineView, Text};
use crate::provider::LineShape;

use super::LineCtx;

/// One line as the walker saw it, once the rules have judged it.
#[derive(Clone, Copy, Debug)]
pub struct SeenLine<'a> {
    /// Byte offset of the line's start in its chunk.
    pub offset: u64,
    /// Its bytes, with the line ending.
    pub len: u32,
    /// Blank (whitespace only): not a request.
    pub blank: bool,
    /// Read as a JSON object (it may still break rules).
    pub read: bool,
    /// The rules found an error in it. Repeated `custom_id`s are found only
    /// once the whole input is read: see [`Sink::repeated`].
    pub has_error: bool,
    /// The endpoint it is for: its `url`, or for `{custom_id, body}` lines
    /// the batch's.
    pub endpoint: Option<&'a str>,
    /// Its `body.model`, if that is a string.
    pub model: Option<&'a str>,
    /// Its embedding inputs (the items of `body.input`).
    pub inputs: u64,
}

impl<'a> SeenLine<'a> {
    pub(super) fn new(
        ctx: &LineCtx<'a>,
        view: Option<&'a LineView<'a>>,
        (offset, len): (u64, u32),
        blank: bool,
        has_error: bool,
    ) -> SeenLine<'a> {
        let body = match view.and_then(|v| v.body.as_ref()) {
            Some(Body::Object(b)) => Some(b),
            _ => None,
        };
        SeenLine {
            offset,
            len,
            blank,
            read: view.is_some(),
            has_error,
            endpoint: match ctx.profile.shape {
                LineShape::Full => view.and_then(|v| v.url.as_ref()).and_then(Text::as_str),
                LineShape::IdAndBody => ctx.endpoint,
            },
            model: body.and_then(|b| b.model.as_ref()).and_then(Text::as_str),
            inputs: body.and_then(|b| b.input).map_or(0, |i| i.count),
        }
    }
}

/// Takes every line of one chunk, in order, on the thread that checks the
/// chunk; the [`Sink`] then absorbs it.
pub trait LineSink: Default + Send {
    /// One more line of the chunk.
    fn line(&mut self, line: &SeenLine<'_>);
}

impl LineSink for () {
    #[inline]
    fn line(&mut self, _: &SeenLine<'_>) {}
}

/// A consumer of a validation's lines (validate itself needs none: `()`).
/// Chunks are checked in parallel, each into its own [`Sink::Chunk`], and
/// absorbed in input order, so what a sink collects does not depend on the
/// thread count or the chunk size.
pub trait Sink {
    /// What one chunk of lines gathers.
    type Chunk: LineSink;

    /// Whether [`Sink::repeated`] must hear of every line whose `custom_id`
    /// repeats an earlier one, not only of those whose diagnostics are kept.
    const EVERY_REPEAT: bool = false;

    /// Take one chunk's lines. Chunks come in input order; `first_line` is
    /// the 0-based index in the input of the chunk's first line, `offset`
    /// the input offset of its first byte.
    fn absorb(&mut self, chunk: Self::Chunk, first_line: u64, offset: u64);

    /// The 1-based numbers, sorted, of lines whose `custom_id` repeats an
    /// earlier line's: errors found only at the end.
    fn repeated(&mut self, lines: &[u64]) {
        let _ = lines;
    }
}

impl Sink for () {
    type Chunk = ();

    #[inline]
    fn absorb(&mut self, (): (), _: u64, _: u64) {}
}
