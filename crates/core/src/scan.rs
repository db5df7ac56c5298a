//! The byte scanner: the fast path of
//! [`parse_line`](crate::envelope::parse_line), which reads the same
//! [`LineView`] as the `serde_json` visitor, or declines; and of the result
//! readers ([`scan_success`], [`scan_request_id`]), which read a result
//! line's id and status the same way.
//!
//! It accepts only what it can read exactly as `serde_json` would: it never
//! reports an error, it returns `None` and the caller asks `serde_json`,
//! which gives the result or the error with its column. It declines on any
//! syntax error, on an escape in a string whose value is read (keys, the
//! envelope strings, the model; `serde_json` decodes and checks those), on a
//! number whose value is read and might not fit an `f64` (anything but a
//! short integer), and on nesting deeper than [`MAX_DEPTH`]. Skipped strings
//! are checked as `serde_json` skips them: escapes well formed, no control
//! bytes; a lone surrogate escape is let through, as `serde_json` lets it
//! through, and is found afterwards by
//! [`find_lone_surrogate`](crate::envelope::find_lone_surrogate).
//!
//! Its speed comes from the strings: the bytes that end a string's plain run
//! (`"`, `\` and control bytes) are found 16 at a time with SSE2, and 32 at a
//! time with AVX2 in long runs, where `serde_json` looks at 8 at a time; and
//! from one pass over each byte: the scanner finds the line's end as it
//! reads, and checks UTF-8 only in strings that have bytes above 0x7f. The
//! differential tests below hold it to `serde_json`'s answers.

use std::borrow::Cow;
use std::ops::Range;

use crate::envelope::{
    Body, BodyView, Inputs, Kind, LineView, MessageProblem, Messages, Shape, Text, set,
};

/// Containers nested deeper than this are left to `serde_json` (whose limit
/// is 128), so the scanner's recursion is bounded.
const MAX_DEPTH: u32 = 100;

/// Read `line` (one line without its ending) as a request object followed
/// only by whitespace. Returns the view and whether the line holds a
/// backslash escape, or `None` to leave the line to `serde_json`.
pub(crate) fn scan_line(line: &[u8]) -> Option<(LineView<'_>, bool)> {
    match scan_to_newline(line)? {
        (view, escapes, end) if end == line.len() => Some((view, escapes)),
        // A newline inside: whitespace to `serde_json`, not to a line.
        _ => None,
    }
}

/// Read the line at the start of `buf`, which runs to the first `\n` or to
/// the end: a request object and whitespace. Returns the view, whether the
/// line holds an escape, and where it ends (the `\n`'s index, or
/// `buf.len()`), so that a file is read without a separate search for line
/// ends. `None` leaves the line to `serde_json`.
pub(crate) fn scan_to_newline(buf: &[u8]) -> Option<(LineView<'_>, bool, usize)> {
    let mut s = Scanner::at_object(buf)?;
    let view = s.line()?;
    let end = s.line_end()?;
    Some((view, s.escapes, end))
}

/// The `custom_id` of the request line at the start of `buf`, which runs
/// to the first `\n` or to the end, and where the line ends: a JSON object
/// with one `custom_id`, a plain string, and any other fields, followed by
/// whitespace. That is what a merge reads of a request line; for anything
/// else (no `custom_id`, one with escapes or of another type, two of them,
/// a syntax error) this says `None` and `serde_json` reads the line.
pub(crate) fn scan_request_id(buf: &[u8]) -> Option<(&str, usize)> {
    let mut s = Scanner::at_object(buf)?;
    let mut id = None;
    s.object(|s, key| {
        match key {
            b"custom_id" if id.is_none() && s.peek()? == b'"' => id = Some(s.plain_string()?),
            b"custom_id" => return None,
            _ => s.skip(1)?,
        }
        Some(())
    })?;
    let end = s.line_end()?;
    Some((id?, end))
}

/// A result line that is plainly a success, as [`scan_success`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Success<'a> {
    /// The request's id.
    pub(crate) custom_id: &'a str,
    /// The response's `status_code`, if it has one (then 2xx).
    pub(crate) status_code: Option<i64>,
    /// Where the response's `body` is in the line, verbatim.
    pub(crate) body: Range<usize>,
}

/// The result line at the start of `buf` (to the first `\n` or the end)
/// when it is plainly a success, and where it ends: a JSON object with a
/// plain string `custom_id`, a `response` object whose `status_code` is
/// absent, null or 2xx and whose `body` is not null, an `error` that is
/// absent or null, and no `result`, none of these keys twice. That is what
/// [`crate::results::classify`] calls succeeded, with the same status code
/// and body; for anything else (other shapes, errors, escapes, repeated
/// keys) this says `None` and `classify` reads the line.
pub(crate) fn scan_success(buf: &[u8]) -> Option<(Success<'_>, usize)> {
    let mut s = Scanner::at_object(buf)?;
    let (mut id, mut response, mut error) = (None, None, None);
    s.object(|s, key| {
        match key {
            b"custom_id" if id.is_none() && s.peek()? == b'"' => id = Some(s.plain_string()?),
            b"response" if response.is_none() => response = Some(s.success_response()?),
            b"error" if error.is_none() => {
                s.literal(b"null")?;
                error = Some(());
            }
            b"custom_id" | b"response" | b"error" | b"result" => return None,
            _ => s.skip(1)?,
        }
        Some(())
    })?;
    let end = s.line_end()?;
    let (status_code, body) = response?;
    let success = Success {
        custom_id: id?,
        status_code,
        body,
    };
    Some((success, end))
}

/// A value read for its kind.
enum Val<'a> {
    Str(&'a str),
    Bool(bool),
    Other(Kind),
}

impl Val<'_> {
    fn kind(&self) -> Kind {
        match self {
            Val::Str(_) => Kind::String,
            Val::Bool(_) => Kind::Bool,
            Val::Other(k) => *k,
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// Some string held a backslash escape.
    escapes: bool,
    /// From the first string with a byte above 0x7f to the end of the last:
    /// the bytes still to be checked as UTF-8.
    unchecked: Option<(usize, usize)>,
}

impl<'a> Scanner<'a> {
    /// A scanner at the `{` that starts `buf` (after whitespace), if any.
    fn at_object(buf: &'a [u8]) -> Option<Self> {
        let mut s = Scanner {
            b: buf,
            i: 0,
            escapes: false,
            unchecked: None,
        };
        s.ws();
        (s.peek()? == b'{').then_some(s)
    }

    /// After the object: only whitespace up to the `\n` or the end, and
    /// the strings' bytes above 0x7f are UTF-8. Returns where the line ends.
    fn line_end(&mut self) -> Option<usize> {
        self.ws();
        match self.peek() {
            None | Some(b'\n') if self.utf8_checked() => Some(self.i),
            _ => None,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    /// Skip JSON whitespace, but for `\n`, which ends the line.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// At `"`: consume the string. Returns its content's range, whether it
    /// holds an escape and whether it may hold bytes above 0x7f; those are
    /// checked as UTF-8 with the rest of the line ([`Scanner::unchecked`]).
    fn string(&mut self) -> Option<(usize, usize, bool, bool)> {
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        let mut high = false;
        loop {
            let (run, run_high) = plain_run(self.b.get(i..)?);
            i += run;
            high |= run_high;
            match *self.b.get(i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match *self.b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            let hex = self.b.get(i + 2..i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 6;
                        }
                        _ => return None,
                    }
                }
                // A control byte: not allowed in a JSON string.
                _ => return None,
            }
        }
        if high {
            let from = self.unchecked.map_or(start, |(from, _)| from);
            self.unchecked = Some((from, i));
        }
        self.i = i + 1;
        self.escapes |= escaped;
        Some((start, i, escaped, high))
    }

    /// Check the bytes above 0x7f met in strings, in one pass from the first
    /// such string to the last. Outside strings the scanner accepts only
    /// ASCII, and escapes are ASCII, so the line is UTF-8 when this span is.
    fn utf8_checked(&self) -> bool {
        self.unchecked.is_none_or(|(from, to)| {
            let span = self.b.get(from..to);
            span.is_some_and(|span| simdutf8::basic::from_utf8(span).is_ok())
        })
    }

    /// At `"`: the bytes of a string whose value is read (a key). Escaped
    /// ones are left to `serde_json`, which decodes them and rejects lone
    /// surrogates.
    fn plain_bytes(&mut self) -> Option<&'a [u8]> {
        let (start, end, escaped, _) = self.string()?;
        if escaped {
            return None;
        }
        self.b.get(start..end)
    }

    /// At `"`: a string value that is read, as [`Scanner::plain_bytes`];
    /// one with bytes above 0x7f is checked as UTF-8 at once.
    fn plain_string(&mut self) -> Option<&'a str> {
        let (start, end, escaped, high) = self.string()?;
        if escaped {
            return None;
        }
        let bytes = self.b.get(start..end)?;
        if high {
            return std::str::from_utf8(bytes).ok();
        }
        debug_assert!(bytes.is_ascii());
        #[allow(unsafe_code)]
        // SAFETY: every byte of the range passed through `plain_run`, which
        // reports any byte above 0x7f; there was none, so it is ASCII.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    }

    /// At a number: consume it. Returns whether it is an integer of at most
    /// 18 digits, whose value `serde_json` reads without any range error.
    fn number(&mut self) -> Option<bool> {
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        match *b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i += digits(&b[i..]),
            _ => return None,
        }
        let mut short_int = i - int_start <= 18;
        if b.get(i) == Some(&b'.') {
            i = at_least_one_digit(b, i + 1)?;
            short_int = false;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            i = at_least_one_digit(b, i)?;
            short_int = false;
        }
        self.i = i;
        Some(short_int)
    }

    /// At `t`, `f` or `n`: consume the literal `word`.
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? != word {
            return None;
        }
        self.i += word.len();
        Some(())
    }

    /// Consume any value, checking its syntax only. `depth` is the nesting
    /// of the value's container.
    fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.object(|s, _| s.skip(depth + 1))?;
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.array(|s, _| s.skip(depth + 1))?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => {
                self.number()?;
            }
            _ => return None,
        }
        Some(())
    }

    /// Consume a value read for its kind: strings and numbers as
    /// `serde_json` reads them, containers skipped.
    fn value(&mut self, depth: u32) -> Option<Val<'a>> {
        Some(match self.peek()? {
            b'"' => Val::Str(self.plain_string()?),
            b'{' => {
                self.skip(depth)?;
                Val::Other(Kind::Object)
            }
            b'[' => {
                self.skip(depth)?;
                Val::Other(Kind::Array)
            }
            b't' => {
                self.literal(b"true")?;
                Val::Bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                Val::Bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                Val::Other(Kind::Null)
            }
            b'-' | b'0'..=b'9' => {
                if !self.number()? {
                    return None;
                }
                Val::Other(Kind::Number)
            }
            _ => return None,
        })
    }

    fn text(&mut self, depth: u32) -> Option<Text<'a>> {
        Some(match self.value(depth)? {
            Val::Str(s) => Text::Str(Cow::Borrowed(s)),
            v => Text::Other(v.kind()),
        })
    }

    fn shape(&mut self, depth: u32) -> Option<Shape> {
        let v = self.value(depth)?;
        Some(Shape {
            kind: v.kind(),
            is_true: matches!(v, Val::Bool(true)),
        })
    }

    /// At `{`: consume an object, calling `field` with each key (which must
    /// be unescaped) when the scanner is at its value; `field` consumes the
    /// value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.plain_bytes()?;
            self.ws();
            if self.bump()? != b':' {
                return None;
            }
            self.ws();
            field(self, key)?;
            self.ws();
            match self.bump()? {
                b',' => self.ws(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// At `[`: consume an array, calling `item` with each index when the
    /// scanner is at the item; `item` consumes it.
    fn array(&mut self, mut item: impl FnMut(&mut Self, u64) -> Option<()>) -> Option<()> {
        self.i += 1;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        let mut n = 0;
        loop {
            item(self, n)?;
            n += 1;
            self.ws();
            match self.bump()? {
                b',' => self.ws(),
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// At `{`: the request object.
    fn line(&mut self) -> Option<LineView<'a>> {
        let mut v = LineView::default();
        let mut dup = None;
        self.object(|s, key| {
            match key {
                b"custom_id" => set(&mut v.custom_id, s.text(1)?, "custom_id", &mut dup),
                b"method" => set(&mut v.method, s.text(1)?, "method", &mut dup),
                b"url" => set(&mut v.url, s.text(1)?, "url", &mut dup),
                b"body" => set(&mut v.body, s.body()?, "body", &mut dup),
                _ => s.skip(1)?,
            }
            Some(())
        })?;
        v.duplicate_key = dup;
        Some(v)
    }

    /// At the value of a result's `response`: an object whose last
    /// `status_code` is absent, null or 2xx and whose last `body` is there
    /// and not null. Returns the status code and where the body is; `None`
    /// for anything else.
    fn success_response(&mut self) -> Option<(Option<i64>, Range<usize>)> {
        if self.peek()? != b'{' {
            return None;
        }
        let (mut code, mut body) = (None, None);
        self.object(|s, key| {
            match key {
                b"status_code" => {
                    code = if s.peek()? == b'n' {
                        s.literal(b"null")?;
                        None
                    } else {
                        let start = s.i;
                        if !s.number()? {
                            return None;
                        }
                        let digits = std::str::from_utf8(&s.b[start..s.i]).ok()?;
                        Some(digits.parse::<i64>().ok()?)
                    };
                }
                b"body" => {
                    let start = s.i;
                    let null = s.peek()? == b'n';
                    s.skip(2)?;
                    body = (!null).then_some(start..s.i);
                }
                _ => s.skip(2)?,
            }
            Some(())
        })?;
        let ok_code = code.is_none_or(|c| (200..300).contains(&c));
        Some((code, body.filter(|_| ok_code)?))
    }

    /// At the value of `body`.
    fn body(&mut self) -> Option<Body<'a>> {
        if self.peek()? != b'{' {
            return Some(Body::Other(self.value(1)?.kind()));
        }
        let mut b = BodyView::default();
        let mut dup = None;
        self.object(|s, key| {
            match key {
                b"model" => set(&mut b.model, s.text(2)?, "model", &mut dup),
                b"stream" => set(&mut b.stream, s.shape(2)?, "stream", &mut dup),
                b"messages" => set(&mut b.messages, s.messages()?, "messages", &mut dup),
                b"input" => set(&mut b.input, s.inputs()?, "input", &mut dup),
                b"prompt" => set(&mut b.prompt, s.shape(2)?, "prompt", &mut dup),
                _ => s.skip(2)?,
            }
            Some(())
        })?;
        b.duplicate_key = dup;
        Some(Body::Object(b))
    }

    /// At the value of `body.messages`.
    fn messages(&mut self) -> Option<Messages> {
        if self.peek()? != b'[' {
            return Some(Messages::Other(self.value(2)?.kind()));
        }
        let mut len = 0;
        let mut problem = None;
        self.array(|s, i| {
            let p = s.message()?;
            if problem.is_none() {
                problem = p.map(|p| (i, p));
            }
            len += 1;
            Some(())
        })?;
        Some(Messages::Array { len, problem })
    }

    /// At one message: what is wrong with it, if anything.
    fn message(&mut self) -> Option<Option<MessageProblem>> {
        if self.peek()? != b'{' {
            return Some(Some(MessageProblem::NotObject(self.value(3)?.kind())));
        }
        let mut has_role = false;
        self.object(|s, key| {
            if key == b"role" {
                has_role = s.value(4)?.kind() != Kind::Null;
            } else {
                s.skip(4)?;
            }
            Some(())
        })?;
        Some((!has_role).then_some(MessageProblem::NoRole))
    }

    /// At the value of `body.input`.
    fn inputs(&mut self) -> Option<Inputs> {
        if self.peek()? != b'[' {
            return Some(match self.value(2)? {
                Val::Str(_) => Inputs {
                    kind: Kind::String,
                    count: 1,
                },
                v => Inputs {
                    kind: v.kind(),
                    count: 0,
                },
            });
        }
        let mut count = 0;
        let mut tokens = false;
        self.array(|s, i| {
            if i == 0 {
                // An array of token ids is one input, not one per token.
                tokens = s.value(3)?.kind() == Kind::Number;
            } else {
                s.skip(3)?;
            }
            count += 1;
            Some(())
        })?;
        Some(Inputs {
            kind: Kind::Array,
            count: if tokens { 1 } else { count },
        })
    }
}

/// Length of the run of ASCII digits at the start of `b`.
fn digits(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// The end of the digits at `b[i..]`, of which there must be one or more.
fn at_least_one_digit(b: &[u8], i: usize) -> Option<usize> {
    match digits(b.get(i..)?) {
        0 => None,
        n => Some(i + n),
    }
}

/// Length of the run at the start of `b` that holds no `"`, no `\\` and no
/// control byte: the part of a string that needs no second look; and
/// whether a byte above 0x7f may be in it (it may say so of a few bytes
/// after the run, which only costs a UTF-8 check).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn plain_run(b: &[u8]) -> (usize, bool) {
    // Most runs end within 16 bytes (keys, short values, the text between
    // escapes): look at those inline, and call out only for a long run.
    let Some(first) = b.first_chunk::<16>() else {
        return plain_run_scalar(b);
    };
    let (stops, high) = stops16(first);
    if stops != 0 {
        return (stops.trailing_zeros() as usize, high != 0);
    }
    let (run, rest_high) = plain_run_long(&b[16..]);
    (16 + run, high != 0 || rest_high)
}

/// The stop bytes (`"`, `\\`, control) and the bytes above 0x7f of a block,
/// as bit masks.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn stops16(block: &[u8; 16]) -> (u32, u32) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    #[allow(unsafe_code)]
    // SAFETY: SSE2 is part of x86_64, so the intrinsics exist on every
    // machine this is built for; `block` is 16 readable bytes and `loadu`
    // needs no alignment.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        // A byte is a control byte when min(byte, 0x1f) is the byte.
        let hits = _mm_or_si128(
            _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
            ),
            _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v),
        );
        (_mm_movemask_epi8(hits) as u32, _mm_movemask_epi8(v) as u32)
    }
}

/// [`plain_run`] past its first block: 32 bytes at a time where the CPU
/// has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn plain_run_long(b: &[u8]) -> (usize, bool) {
    if b.len() >= 32 && std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { plain_run_avx2(b) };
    }
    plain_run_sse2(b)
}

/// [`plain_run`] 32 bytes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn plain_run_avx2(b: &[u8]) -> (usize, bool) {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8,
    };
    let mut blocks = b.chunks_exact(32);
    let mut done = 0;
    let mut high = 0;
    for block in &mut blocks {
        #[allow(unsafe_code)]
        // SAFETY: `block` is 32 readable bytes; `loadu` needs no alignment.
        let v = unsafe { _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()) };
        // A byte is a control byte when min(byte, 0x1f) is the byte.
        let hits = _mm256_or_si256(
            _mm256_or_si256(
                _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8)),
                _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8)),
            ),
            _mm256_cmpeq_epi8(_mm256_min_epu8(v, _mm256_set1_epi8(0x1f)), v),
        );
        let stops = _mm256_movemask_epi8(hits) as u32;
        high |= _mm256_movemask_epi8(v) as u32;
        if stops != 0 {
            return (done + stops.trailing_zeros() as usize, high != 0);
        }
        done += 32;
    }
    let (run, tail_high) = plain_run_sse2(blocks.remainder());
    (done + run, high != 0 || tail_high)
}

/// [`plain_run`] 16 bytes at a time (SSE2 is part of x86_64).
#[cfg(target_arch = "x86_64")]
fn plain_run_sse2(b: &[u8]) -> (usize, bool) {
    let mut blocks = b.chunks_exact(16);
    let mut done = 0;
    let mut high = 0;
    for block in &mut blocks {
        let Ok(block) = <&[u8; 16]>::try_from(block) else {
            break;
        };
        let (stops, top_bits) = stops16(block);
        high |= top_bits;
        if stops != 0 {
            return (done + stops.trailing_zeros() as usize, high != 0);
        }
        done += 16;
    }
    let (run, tail_high) = plain_run_scalar(blocks.remainder());
    (done + run, high != 0 || tail_high)
}

#[cfg(not(target_arch = "x86_64"))]
fn plain_run(b: &[u8]) -> (usize, bool) {
    plain_run_scalar(b)
}

fn plain_run_scalar(b: &[u8]) -> (usize, bool) {
    let run = b
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(b.len());
    (run, !b[..run].is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::parse_line_serde;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    /// A JSON-ish value: mostly valid, with the near misses a scanner can
    /// get wrong (bad escapes, control bytes, odd numbers, deep nesting).
    fn value() -> impl Strategy<Value = String> {
        let good_string = prop_oneof![
            6 => "[a-z ]{0,40}",
            3 => Just("caf\u{e9} 日本語 👍".to_owned()),
            1 => Just(r#"\u00e9\ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"#.to_owned()),
            1 => "[a-z]{20,60}\\\\[a-z]{0,5}",
            1 => Just(r"\ud800".to_owned()),
        ];
        let bad_string = prop_oneof![
            Just(r"\udc00x".to_owned()),
            Just(r"\u12g4".to_owned()),
            Just(r"\x".to_owned()),
            Just("tab\there".to_owned()),
            Just("nul\u{0}".to_owned()),
            Just("\u{7f}".to_owned()),
        ];
        let good_number = prop_oneof![
            Just("0"),
            Just("-0"),
            Just("7"),
            Just("-12"),
            Just("1.5"),
            Just("-0.5e-3"),
            Just("1E+2"),
            Just("123456789012345678"),
            Just("1234567890123456789"),
            Just("1e400"),
            Just("99999999999999999999999"),
        ]
        .prop_map(str::to_owned);
        // Too large for an f64: serde_json rejects it where it reads it.
        let good_number =
            prop_oneof![10 => good_number, 1 => Just(format!("1{}", "0".repeat(400)))];
        let bad_number = prop_oneof![Just("01"), Just("1."), Just(".5"), Just("-"), Just("1e")];
        let good = prop_oneof![
            3 => good_string.prop_map(|s| format!("\"{s}\"")),
            2 => good_number,
            1 => prop_oneof![Just("true"), Just("false"), Just("null")].prop_map(str::to_owned),
        ];
        let bad = prop_oneof![
            bad_string.prop_map(|s| format!("\"{s}\"")),
            bad_number.prop_map(str::to_owned),
            prop_oneof![Just("nul"), Just("tru")].prop_map(str::to_owned),
        ];
        let leaf = prop_oneof![60 => good, 1 => bad];
        leaf.prop_recursive(4, 24, 5, |inner| {
            let key = prop_oneof![
                30 => prop_oneof![Just("role"), Just("content"), Just("model"), Just("x")],
                1 => Just("r\\u006fle"),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((key, inner), 0..5).prop_map(|fields| {
                    let fields: Vec<String> =
                        fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    /// A request line built from envelope and body keys, with random values.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        let body_key = prop_oneof![
            Just("model"),
            Just("stream"),
            Just("messages"),
            Just("input"),
            Just("prompt"),
            Just("max_tokens"),
            Just("custom_id"),
        ];
        let body = proptest::collection::vec((body_key, value()), 0..6).prop_map(|fields| {
            let fields: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", fields.join(","))
        });
        let body = prop_oneof![3 => body, 1 => value()];
        let key = prop_oneof![
            30 => prop_oneof![Just("custom_id"), Just("method"), Just("url"), Just("extra")],
            1 => Just("cust\\u006fm_id"),
        ];
        let fields = proptest::collection::vec((key, value()), 0..5);
        let space = prop_oneof![Just(""), Just(" "), Just("\t"), Just("\r\n ")];
        (fields, body, space).prop_map(|(fields, body, space)| {
            let mut parts: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("\"{k}\"{space}:{space}{v}"))
                .collect();
            parts.push(format!("\"body\":{body}"));
            format!("{space}{{{}}}{space}", parts.join(&format!(",{space}"))).into_bytes()
        })
    }

    /// `lines` with a few bytes changed, inserted or removed.
    fn damaged(lines: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        let edit = (
            any::<prop::sample::Index>(),
            0u8..3,
            prop::sample::select(&b"\"\\{}[],:0e-.tn \x01\xc3\xe6\x80\xff"[..]),
        );
        (lines, proptest::collection::vec(edit, 0..4)).prop_map(|(mut line, edits)| {
            for (at, op, byte) in edits {
                if line.is_empty() {
                    break;
                }
                let i = at.index(line.len());
                match op {
                    0 => line[i] = byte,
                    1 => line.insert(i, byte),
                    _ => {
                        line.remove(i);
                    }
                }
            }
            line
        })
    }

    /// The scanner's answer, where it gives one, is `serde_json`'s.
    fn agrees(line: &[u8]) -> Result<(), TestCaseError> {
        let Some((view, escapes)) = scan_line(line) else {
            return Ok(());
        };
        let text = std::str::from_utf8(line);
        prop_assert!(text.is_ok(), "accepted bytes that are not UTF-8");
        let text = text.unwrap_or_default();
        let reference = parse_line_serde(text);
        prop_assert!(
            reference.is_ok(),
            "accepted what serde_json rejects: {:?}",
            reference.err()
        );
        prop_assert_eq!(Some(view), reference.ok());
        prop_assert_eq!(escapes, text.contains('\\'));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn the_scanner_agrees_with_serde_json(line in line()) {
            agrees(&line)?;
        }

        #[test]
        fn the_scanner_agrees_on_damaged_lines(line in damaged(line())) {
            agrees(&line)?;
        }

        #[test]
        fn the_scanner_agrees_on_any_bytes(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            agrees(&line)?;
        }

        #[test]
        fn request_ids_agree_with_serde_json(line in line()) {
            request_id_agrees(&line)?;
        }

        #[test]
        fn request_ids_agree_on_damaged_lines(line in damaged(line())) {
            request_id_agrees(&line)?;
        }

        #[test]
        fn request_ids_agree_on_any_bytes(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            request_id_agrees(&line)?;
        }

        #[test]
        fn a_success_to_the_scanner_is_a_success_to_classify(line in result_line()) {
            success_agrees(&line)?;
        }

        #[test]
        fn a_damaged_result_line_agrees_too(line in damaged(result_line())) {
            success_agrees(&line)?;
        }
    }

    /// A result line: the success shape and its near misses.
    fn result_line() -> impl Strategy<Value = Vec<u8>> {
        let code = prop_oneof![
            Just("200"),
            Just("201"),
            Just("299"),
            Just("300"),
            Just("404"),
            Just("-1"),
            Just("null"),
            Just("2e2"),
            Just("\"200\""),
            Just("true"),
        ];
        let body = prop_oneof![
            4 => value(),
            1 => Just("null".to_owned()),
        ];
        let response_field = prop_oneof![
            (Just("status_code"), code.prop_map(str::to_owned)),
            (Just("body"), body),
            (Just("request_id"), value()),
        ];
        let response = prop_oneof![
            6 => proptest::collection::vec(response_field, 0..4).prop_map(|fields| {
                let fields: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
            1 => value(),
        ];
        let field = prop_oneof![
            3 => (Just("custom_id"), prop_oneof![
                4 => "[a-z0-9-]{1,12}".prop_map(|s| format!("\"{s}\"")),
                1 => value(),
            ]),
            3 => (Just("response"), response),
            2 => (Just("error"), prop_oneof![3 => Just("null".to_owned()), 1 => value()]),
            1 => (Just("result"), value()),
            1 => (Just("id"), value()),
        ];
        let any_fields = proptest::collection::vec(field, 0..6).prop_map(|fields| {
            let fields: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", fields.join(",")).into_bytes()
        });
        // The shape OpenAI writes, with one part varied at a time.
        let id = prop_oneof![
            8 => "[a-z0-9-]{1,12}".prop_map(|s| format!("\"{s}\"")),
            1 => Just(r#""r\u002d1""#.to_owned()),
            1 => Just("null".to_owned()),
        ];
        let code = prop_oneof![
            8 => Just("200"), 1 => Just("500"), 1 => Just("null"), 1 => Just("200.0"),
        ];
        let error = prop_oneof![8 => Just("null".to_owned()), 1 => value()];
        let tail = prop_oneof![
            8 => Just(String::new()),
            1 => Just(r#","result":null"#.to_owned()),
            1 => Just(r#","custom_id":"again""#.to_owned()),
            1 => Just(r#","error":null"#.to_owned()),
        ];
        let openai = (id, code, value(), error, tail).prop_map(|(id, code, body, error, tail)| {
            format!(
                r#"{{"id":"batch_req_1","custom_id":{id},"response":{{"status_code":{code},"request_id":"req_1","body":{body}}},"error":{error}{tail}}}"#
            )
            .into_bytes()
        });
        prop_oneof![any_fields, openai]
    }

    /// A whole line as [`scan_success`] reads it.
    fn success_of(line: &[u8]) -> Option<Success<'_>> {
        scan_success(line)
            .filter(|(_, end)| *end == line.len())
            .map(|(s, _)| s)
    }

    /// Where the scanner calls a result line a success, `classify` does too,
    /// with the same id, status code and body.
    fn success_agrees(line: &[u8]) -> Result<bool, TestCaseError> {
        let Some(success) = success_of(line) else {
            return Ok(false);
        };
        let text = std::str::from_utf8(line);
        prop_assert!(text.is_ok(), "accepted bytes that are not UTF-8");
        let text = text.unwrap_or_default();
        let outcome = crate::results::classify(text);
        prop_assert!(outcome.is_ok(), "classify rejects it: {:?}", outcome.err());
        let outcome = outcome.map_err(|e| TestCaseError::fail(e.reason))?;
        prop_assert_eq!(outcome.status, crate::results::Status::Succeeded);
        prop_assert_eq!(outcome.custom_id.as_ref(), success.custom_id);
        prop_assert_eq!(outcome.status_code, success.status_code);
        prop_assert_eq!(outcome.response, line.get(success.body.clone()));
        Ok(true)
    }

    /// Where the scanner reads a request line's id, `serde_json` reads the
    /// same id; where `serde_json` reads one from a line without escapes,
    /// the scanner does too.
    fn request_id_agrees(line: &[u8]) -> Result<(), TestCaseError> {
        let scanned = scan_request_id(line)
            .filter(|(_, end)| *end == line.len())
            .map(|(id, _)| id);
        let reference = crate::custom_id::read_serde(line).ok();
        match scanned {
            Some(id) => prop_assert_eq!(Some(id), reference.as_deref()),
            None => prop_assert!(
                reference.is_none() || line.contains(&b'\\') || line.contains(&b'\n'),
                "declined a plain line serde_json reads: {:?}",
                String::from_utf8_lossy(line)
            ),
        }
        Ok(())
    }

    #[test]
    fn result_lines_reach_both_answers() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut read, n) = (0, 2000);
        for _ in 0..n {
            let Ok(tree) = result_line().new_tree(&mut runner) else {
                continue;
            };
            read += usize::from(success_of(&tree.current()).is_some());
        }
        assert!(read > n / 20 && read < n * 9 / 10, "read {read} of {n}");
        let success = r#"{"id":"batch_req_1","custom_id":"r-1","response":{"status_code":200,"request_id":"q","body":{"choices":[{"message":{"content":"caf\u00e9 日本"}}]}},"error":null}"#;
        let read = success_of(success.as_bytes()).expect("a success");
        assert_eq!((read.custom_id, read.status_code), ("r-1", Some(200)));
        assert!(success[read.body].starts_with(r#"{"choices""#));
    }

    /// The generated lines reach both answers: read, and left to serde_json.
    #[test]
    fn the_generator_reaches_both_paths() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut read, mut declined_valid, n) = (0, 0, 2000);
        for _ in 0..n {
            let Ok(tree) = line().new_tree(&mut runner) else {
                continue;
            };
            let line = tree.current();
            let scanned = scan_line(&line).is_some();
            read += usize::from(scanned);
            let valid = std::str::from_utf8(&line).is_ok_and(|t| parse_line_serde(t).is_ok());
            declined_valid += usize::from(valid && !scanned);
        }
        assert!(read > n / 5, "read {read} of {n}");
        assert!(
            declined_valid > n / 50,
            "declined {declined_valid} valid lines of {n}"
        );
    }

    #[test]
    fn reads_the_lines_of_real_requests() {
        for line in [
            r#"{"custom_id":"request-0","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"caf\u00e9 日本語 👍 \"quoted\"\n\tend"}],"max_tokens":66,"temperature":0.5}}"#,
            r#"{"custom_id": "e-1", "method": "POST", "url": "/v1/embeddings", "body": {"model": "text-embedding-3-small", "input": ["a", "b", [1, 2]], "dimensions": 256}}"#,
            r#"{"custom_id":"c","method":"POST","url":"/v1/completions","body":{"model":"m","prompt":"Say hi","stream":false,"logit_bias":{"50256":-100}}}"#,
        ] {
            let scanned = scan_line(line.as_bytes()).map(|(v, _)| v);
            assert!(scanned.is_some(), "{line}");
            assert_eq!(scanned, parse_line_serde(line).ok());
        }
    }

    #[test]
    fn plain_runs_stop_at_quotes_escapes_and_control_bytes() {
        for len in 0..40 {
            for stop in [b'"', b'\\', 0x00, 0x1f, b'\t'] {
                let mut s = vec![b'a'; len];
                assert_eq!(plain_run(&s), (len, false));
                s.push(stop);
                s.extend_from_slice(b"tail after the stop byte");
                assert_eq!(plain_run(&s), (len, false), "len {len}, stop {stop:#x}");
            }
            // Bytes above 0x7f (UTF-8) and 0x20 are plain, and noticed.
            let s: Vec<u8> = (0..len).map(|i| [0x20, 0x7f, 0x80, 0xff][i % 4]).collect();
            assert_eq!(plain_run(&s), (len, len > 2));
        }
    }

    #[test]
    fn declines_what_serde_json_must_decide() {
        for line in [
            r#"{"custom_id":"a\u0062"}"#,
            r#"{"cust\u006fm_id":"a"}"#,
            r#"{"body":{"stream":1e400}}"#,
            r#"{"body":{"stream":1.5}}"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":"tab	in string"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":1} x"#,
            r#"[1]"#,
        ] {
            assert!(scan_line(line.as_bytes()).is_none(), "{line}");
        }
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(scan_line(deep.as_bytes()).is_none());
        // Bytes that are not UTF-8, in a skipped string or split by a quote.
        assert!(scan_line(b"{\"a\":\"caf\xe9\"}").is_none());
        assert!(scan_line(b"{\"a\":\"\xe6\x97\"}").is_none());
        assert!(scan_line("{\"a\":\"日本語\"}".as_bytes()).is_some());
    }

    #[test]
    fn reads_skipped_escapes_and_reports_them() {
        let (v, escapes) =
            scan_line(br#"{"custom_id":"a","x":"\ud800\n\"","body":{"temperature":-0.5e-3}}"#)
                .expect("scanned");
        assert!(escapes);
        assert_eq!(v.custom_id.as_ref().and_then(Text::as_str), Some("a"));
        let (_, escapes) = scan_line(br#" { "custom_id" : "a" } "#).expect("scanned");
        assert!(!escapes);
    }
}
