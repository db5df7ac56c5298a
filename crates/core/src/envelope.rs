//! A borrowed, single-pass view of one request line.
//!
//! The parser reads each line once. It keeps only what the rules need: the
//! envelope strings (borrowed when they hold no escapes), and for the body the
//! model, the stream flag, the shape of `messages`, and the count of embedding
//! inputs. Everything else is syntax-checked and dropped, so no DOM is ever
//! built. A byte scanner (`scan`) reads almost every line; what it cannot
//! answer exactly, `serde_json` reads, with the same visitor. Keys are matched after unescaping, so `"cust\u006fm_id"`
//! is `custom_id`, as it is to every JSON parser the services use.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::scan;

/// The type of a JSON value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `null`
    Null,
    /// `true` or `false`
    Bool,
    /// a number
    Number,
    /// a string
    String,
    /// an array
    Array,
    /// an object
    Object,
}

impl Kind {
    /// The kind with its article, for messages: "an array".
    pub fn described(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// A value seen only for its kind (and its truth, for booleans).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The value's type.
    pub kind: Kind,
    /// `true` only for the boolean `true`.
    pub is_true: bool,
}

/// A value that should be a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Text<'a> {
    /// It is a string (decoded).
    Str(Cow<'a, str>),
    /// It is something else.
    Other(Kind),
}

impl Text<'_> {
    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Text::Str(s) => Some(s),
            Text::Other(_) => None,
        }
    }

    /// The value's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Text::Str(_) => Kind::String,
            Text::Other(k) => *k,
        }
    }
}

/// The request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// An object, with the fields the rules look at.
    Object(BodyView<'a>),
    /// Not an object.
    Other(Kind),
}

/// The fields of a body object that the rules need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BodyView<'a> {
    /// `model`
    pub model: Option<Text<'a>>,
    /// `stream`
    pub stream: Option<Shape>,
    /// `messages`
    pub messages: Option<Messages>,
    /// `input`
    pub input: Option<Inputs>,
    /// `prompt`
    pub prompt: Option<Shape>,
    /// The first of these keys that appears twice, if any.
    pub duplicate_key: Option<&'static str>,
}

/// The shape of `body.messages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Messages {
    /// An array of `len` items; `problem` is the first bad item, if any.
    Array {
        /// Number of messages.
        len: u64,
        /// Index and nature of the first malformed message.
        problem: Option<(u64, MessageProblem)>,
    },
    /// Not an array.
    Other(Kind),
}

/// What is wrong with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageProblem {
    /// The item is not an object.
    NotObject(Kind),
    /// The object has no `role` (or a null one).
    NoRole,
}

/// `body.input`, counted as the embeddings limit counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// The value's type.
    pub kind: Kind,
    /// Inputs it holds: a string is 1; an array of strings or of token arrays
    /// counts its items; an array of numbers is one tokenized input.
    pub count: u64,
}

/// The envelope of one request line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineView<'a> {
    /// `custom_id`
    pub custom_id: Option<Text<'a>>,
    /// `method`
    pub method: Option<Text<'a>>,
    /// `url`
    pub url: Option<Text<'a>>,
    /// `body`
    pub body: Option<Body<'a>>,
    /// The first envelope key that appears twice, if any.
    pub duplicate_key: Option<&'static str>,
}

/// Parse one line (without its line ending) into a [`LineView`]. The line
/// must be a JSON object with nothing but whitespace after it.
///
/// A byte scanner reads the line; where it cannot answer exactly (a syntax
/// error, an escaped key or envelope string, a number read for its value
/// that is not a short integer, deep nesting) `serde_json` reads it, as
/// [`parse_line_serde`] does. The result is the same either way.
pub fn parse_line(line: &str) -> Result<LineView<'_>, serde_json::Error> {
    match scan::scan_line(line.as_bytes()) {
        Some((view, _)) => Ok(view),
        None => parse_line_serde(line),
    }
}

/// The scanner alone, over raw bytes (it checks UTF-8 where it matters, in
/// strings with bytes above 0x7f): the view, or `None` where it declines,
/// and then [`parse_line_serde`] over the UTF-8-checked text has the answer.
/// `validate` reads lines this way; the parsers bench measures it
/// (`cargo bench -p batchkit-benches --features criterion --bench validate -- parsers`).
pub fn scan_bytes(line: &[u8]) -> Option<LineView<'_>> {
    scan::scan_line(line).map(|(view, _)| view)
}

/// [`parse_line`] by `serde_json` alone: the reference the scanner is held
/// to, and the source of every syntax error's message and column.
pub fn parse_line_serde(line: &str) -> Result<LineView<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(line);
    let view = de.deserialize_map(LineVisitor)?;
    de.end()?;
    Ok(view)
}

/// Read a [`LineView`] from any serde deserializer, with the same checks as
/// [`parse_line`] (repeated keys, the body's shape); the caller checks that
/// nothing follows the object. This is how the parsers are compared
/// (`cargo bench -p batchkit-benches --features criterion --bench validate -- parsers`).
pub fn view_from<'de, D: Deserializer<'de>>(de: D) -> Result<LineView<'de>, D::Error> {
    de.deserialize_map(LineVisitor)
}

/// Check that `text` is one complete JSON value of any kind, and say which.
pub fn parse_any(text: &str) -> Result<Kind, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let shape = Shape::deserialize(&mut de)?;
    de.end()?;
    Ok(shape.kind)
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<u64, A::Error> {
    let mut n = 0;
    while seq.next_element::<IgnoredAny>()?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the visitor methods that map every non-string value to
/// `$other(Kind)`, consuming arrays and objects.
macro_rules! other_kinds {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other(Kind::Bool))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other(Kind::Number))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other(Kind::Number))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other(Kind::Number))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other(Kind::Null))
        }
    };
}

macro_rules! other_string {
    ($other:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other(Kind::String))
        }
    };
}

macro_rules! other_containers {
    ($other:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            drain_seq(seq)?;
            Ok($other(Kind::Array))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            drain_map(map)?;
            Ok($other(Kind::Object))
        }
    };
}

fn shape_of(kind: Kind) -> Shape {
    Shape {
        kind,
        is_true: false,
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Shape, E> {
                Ok(Shape {
                    kind: Kind::Bool,
                    is_true: b,
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
                Ok(shape_of(Kind::Number))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
                Ok(shape_of(Kind::Number))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
                Ok(shape_of(Kind::Number))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
                Ok(shape_of(Kind::Null))
            }
            other_string!(shape_of);
            other_containers!(shape_of);
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(s)))
            }
            other_kinds!(Text::Other);
            other_containers!(Text::Other);
        }
        d.deserialize_any(V)
    }
}

/// Keys matched by name after unescaping.
enum Key {
    CustomId,
    Method,
    Url,
    Body,
    Model,
    Stream,
    Messages,
    Input,
    Prompt,
    Role,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "custom_id" => Key::CustomId,
                    "method" => Key::Method,
                    "url" => Key::Url,
                    "body" => Key::Body,
                    "model" => Key::Model,
                    "stream" => Key::Stream,
                    "messages" => Key::Messages,
                    "input" => Key::Input,
                    "prompt" => Key::Prompt,
                    "role" => Key::Role,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Store `value` in `slot`, remembering the key's name if it was already set.
/// Like Python's `json.loads`, the last value wins; the duplicate is reported.
pub(crate) fn set<T>(
    slot: &mut Option<T>,
    value: T,
    name: &'static str,
    dup: &mut Option<&'static str>,
) {
    if slot.is_some() && dup.is_none() {
        *dup = Some(name);
    }
    *slot = Some(value);
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = LineView<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LineView<'de>, A::Error> {
        let mut v = LineView::default();
        let dup = &mut v.duplicate_key;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::CustomId => set(&mut v.custom_id, map.next_value()?, "custom_id", dup),
                Key::Method => set(&mut v.method, map.next_value()?, "method", dup),
                Key::Url => set(&mut v.url, map.next_value()?, "url", dup),
                Key::Body => set(&mut v.body, map.next_value()?, "body", dup),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(v)
    }
}

impl<'de> Deserialize<'de> for Body<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Body<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body<'de>, A::Error> {
                let mut b = BodyView::default();
                let dup = &mut b.duplicate_key;
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Model => set(&mut b.model, map.next_value()?, "model", dup),
                        Key::Stream => set(&mut b.stream, map.next_value()?, "stream", dup),
                        Key::Messages => set(&mut b.messages, map.next_value()?, "messages", dup),
                        Key::Input => set(&mut b.input, map.next_value()?, "input", dup),
                        Key::Prompt => set(&mut b.prompt, map.next_value()?, "prompt", dup),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Body::Object(b))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Body<'de>, A::Error> {
                drain_seq(seq)?;
                Ok(Body::Other(Kind::Array))
            }
            other_kinds!(Body::Other);
            other_string!(Body::Other);
        }
        d.deserialize_any(V)
    }
}

/// One message, seen only for whether it is an object with a role.
struct MessageCheck(Option<MessageProblem>);

impl<'de> Deserialize<'de> for MessageCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MessageCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessageCheck, A::Error> {
                let mut has_role = false;
                while let Some(key) = map.next_key::<Key>()? {
                    if let Key::Role = key {
                        has_role = map.next_value::<Shape>()?.kind != Kind::Null;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(MessageCheck((!has_role).then_some(MessageProblem::NoRole)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MessageCheck, A::Error> {
                drain_seq(seq)?;
                Ok(not_object(Kind::Array))
            }
            other_kinds!(not_object);
            other_string!(not_object);
        }
        d.deserialize_any(V)
    }
}

fn not_object(kind: Kind) -> MessageCheck {
    MessageCheck(Some(MessageProblem::NotObject(kind)))
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut len = 0;
                let mut problem = None;
                while let Some(MessageCheck(p)) = seq.next_element()? {
                    if problem.is_none() {
                        problem = p.map(|p| (len, p));
                    }
                    len += 1;
                }
                Ok(Messages::Array { len, problem })
            }
            other_kinds!(Messages::Other);
            other_string!(Messages::Other);
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Messages, A::Error> {
                drain_map(map)?;
                Ok(Messages::Other(Kind::Object))
            }
        }
        d.deserialize_any(V)
    }
}

fn inputs(kind: Kind) -> Inputs {
    Inputs { kind, count: 0 }
}

impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Inputs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an input")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Inputs, E> {
                Ok(Inputs {
                    kind: Kind::String,
                    count: 1,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inputs, A::Error> {
                let count = match seq.next_element::<Shape>()? {
                    None => 0,
                    // An array of token ids is one input, not one per token.
                    Some(first) if first.kind == Kind::Number => {
                        drain_seq(seq)?;
                        1
                    }
                    Some(_) => 1 + drain_seq(seq)?,
                };
                Ok(Inputs {
                    kind: Kind::Array,
                    count,
                })
            }
            other_kinds!(inputs);
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Inputs, A::Error> {
                drain_map(map)?;
                Ok(inputs(Kind::Object))
            }
        }
        d.deserialize_any(V)
    }
}

/// Find a `\uXXXX` escape of a UTF-16 surrogate that is not part of a valid
/// pair. Such text is not Unicode, and `serde_json` (like `RawValue`) lets it
/// through in the values it only skips. Returns the escape's byte offset.
///
/// `text` must be valid JSON, so every backslash starts an escape.
pub fn find_lone_surrogate(text: &[u8]) -> Option<usize> {
    let hex4 = |at: usize| -> Option<u16> {
        text.get(at..at + 4)?.iter().try_fold(0u16, |unit, &c| {
            let digit = (c as char).to_digit(16)?;
            Some(unit << 4 | digit as u16)
        })
    };
    let mut i = 0;
    while let Some(pos) = memchr::memchr(b'\\', &text[i..]) {
        let at = i + pos;
        match text.get(at + 1) {
            Some(b'u') => {
                let unit = hex4(at + 2)?;
                match unit {
                    0xD800..=0xDBFF => {
                        let pair = text.get(at + 6..at + 8) == Some(b"\\u");
                        match pair.then(|| hex4(at + 8)).flatten() {
                            Some(0xDC00..=0xDFFF) => i = at + 12,
                            _ => return Some(at),
                        }
                    }
                    0xDC00..=0xDFFF => return Some(at),
                    _ => i = at + 6,
                }
            }
            _ => i = at + 2,
        }
        if i >= text.len() {
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_envelope_and_body() {
        let line = r#"{"custom_id":"a\u0062c","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false,"extra":[1,{"x":null}]}}"#;
        let v = parse_line(line).expect("valid line");
        assert_eq!(v.custom_id.as_ref().and_then(Text::as_str), Some("abc"));
        assert_eq!(v.method.as_ref().and_then(Text::as_str), Some("POST"));
        let Some(Body::Object(b)) = v.body else {
            panic!("body is an object")
        };
        assert_eq!(b.model.as_ref().and_then(Text::as_str), Some("m"));
        assert_eq!(
            b.messages,
            Some(Messages::Array {
                len: 1,
                problem: None
            })
        );
        assert_eq!(b.stream.map(|s| s.is_true), Some(false));
        assert_eq!(v.duplicate_key, None);
    }

    #[test]
    fn null_is_present_but_not_a_string() {
        let v = parse_line(r#"{"custom_id":null}"#).expect("valid");
        assert_eq!(v.custom_id, Some(Text::Other(Kind::Null)));
        assert_eq!(v.url, None);
    }

    #[test]
    fn escaped_keys_are_matched_by_value() {
        let v = parse_line(r#"{"cust\u006fm_id":"x"}"#).expect("valid");
        assert_eq!(v.custom_id.as_ref().and_then(Text::as_str), Some("x"));
    }

    #[test]
    fn duplicate_keys_are_noticed_and_the_last_wins() {
        let v = parse_line(r#"{"custom_id":"a","custom_id":"b"}"#).expect("valid");
        assert_eq!(v.duplicate_key, Some("custom_id"));
        assert_eq!(v.custom_id.as_ref().and_then(Text::as_str), Some("b"));
    }

    #[test]
    fn counts_embedding_inputs() {
        let count = |body: &str| {
            let line = format!(r#"{{"body":{{"input":{body}}}}}"#);
            match parse_line(&line).expect("valid").body {
                Some(Body::Object(b)) => b.input.map(|i| i.count),
                _ => None,
            }
        };
        assert_eq!(count(r#""one""#), Some(1));
        assert_eq!(count(r#"["a","b","c"]"#), Some(3));
        assert_eq!(count("[1,2,3]"), Some(1));
        assert_eq!(count("[[1,2],[3]]"), Some(2));
        assert_eq!(count("[]"), Some(0));
    }

    #[test]
    fn message_problems() {
        let msgs = |m: &str| {
            let line = format!(r#"{{"body":{{"messages":{m}}}}}"#);
            match parse_line(&line).expect("valid").body {
                Some(Body::Object(b)) => b.messages,
                _ => None,
            }
        };
        assert_eq!(
            msgs(r#"[{"role":"user"},"x"]"#),
            Some(Messages::Array {
                len: 2,
                problem: Some((1, MessageProblem::NotObject(Kind::String)))
            })
        );
        assert_eq!(
            msgs(r#"[{"content":"x"}]"#),
            Some(Messages::Array {
                len: 1,
                problem: Some((0, MessageProblem::NoRole))
            })
        );
        assert_eq!(msgs(r#""hi""#), Some(Messages::Other(Kind::String)));
    }

    #[test]
    fn rejects_trailing_garbage_and_non_objects() {
        assert!(parse_line(r#"{"a":1} x"#).is_err());
        assert!(parse_line(r#"{"a":1}  "#).is_ok());
        assert!(parse_line("[1]").is_err());
        assert_eq!(parse_any("[1]").ok(), Some(Kind::Array));
        assert!(parse_any("[1").is_err());
    }

    #[test]
    fn lone_surrogates() {
        assert_eq!(find_lone_surrogate(br#""\ud800""#), Some(1));
        assert_eq!(find_lone_surrogate(br#""\udc00""#), Some(1));
        assert_eq!(find_lone_surrogate(br#""\ud83d\ude00""#), None);
        assert_eq!(find_lone_surrogate(br#""\\ud800""#), None);
        assert_eq!(find_lone_surrogate(br#""\ud83d\u0041""#), Some(1));
        assert_eq!(find_lone_surrogate(br#""\n\u00e9""#), None);
    }
}
