//! Reading result lines of every shape the services write, and classifying
//! each as succeeded, failed, expired or cancelled.
//!
//! Shapes understood (see `shared/BATCH-FORMATS.md`):
//! - OpenAI / Azure output and error files:
//!   `{"id","custom_id","response":{"status_code","request_id","body"},"error"}`;
//!   a model-rejected request has `error: null`, a non-2xx `status_code` and
//!   the real error in `response.body.error`; `status_code: 0` is a failure.
//! - vLLM `run-batch`: one mixed file; `error` may be a string or an object;
//!   `response` may be the bare completion without the wrapper.
//! - Anthropic: `{"custom_id","result":{"type":"succeeded"|"errored"|"canceled"|"expired",…}}`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// It ran and the model answered (2xx).
    Succeeded,
    /// It ran, or tried to, and failed.
    Failed,
    /// The batch's window closed before it ran.
    Expired,
    /// The batch was cancelled before it ran.
    Cancelled,
    /// No result anywhere.
    Missing,
}

impl Status {
    /// Every status, in report order.
    pub const ALL: [Status; 5] = [
        Status::Succeeded,
        Status::Failed,
        Status::Expired,
        Status::Cancelled,
        Status::Missing,
    ];

    /// The status as written in merged files.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Missing => "missing",
        }
    }

    /// Parse a status name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub(crate) fn from_bits(b: u64) -> Status {
        match b {
            0 => Status::Succeeded,
            1 => Status::Failed,
            2 => Status::Expired,
            3 => Status::Cancelled,
            _ => Status::Missing,
        }
    }
}

/// An error as merged files carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultError {
    /// The service's code (`batch_expired`, `context_length_exceeded`, ...),
    /// or its error `type` when it gave no code.
    pub code: Option<String>,
    /// The service's message.
    pub message: Option<String>,
}

/// One classified result line.
#[derive(Clone, Debug)]
pub struct Outcome<'a> {
    /// The request's id.
    pub custom_id: Cow<'a, str>,
    /// What became of it.
    pub status: Status,
    /// The HTTP status, where the line has one.
    pub status_code: Option<i64>,
    /// The response body's JSON text, verbatim, where there is one (UTF-8:
    /// checked when the line was read).
    pub response: Option<&'a [u8]>,
    /// The error, unless it succeeded.
    pub error: Option<ResultError>,
}

/// Why a result line could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadResult {
    /// What is wrong.
    pub reason: String,
    /// The `custom_id`, if it could still be read from the broken line.
    pub custom_id: Option<String>,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    custom_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    response: Option<Response<'a>>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<AnthropicResult<'a>>,
}

/// The line again, for the rare response without the status/body wrapper
/// (some vLLM versions), whose raw text is the body.
#[derive(Deserialize)]
struct BareLine<'a> {
    #[serde(borrow)]
    response: Option<&'a RawValue>,
}

/// `response`, read in one pass: the wrapper's two fields, or a note that
/// it is something else.
enum Response<'a> {
    Wrapped {
        status_code: Option<i64>,
        body: Option<&'a RawValue>,
    },
    Bare,
}

impl<'de: 'a, 'a> Deserialize<'de> for Response<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Response<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a response object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Response<'a>, A::Error> {
                let (mut status_code, mut body, mut wrapped) = (None, None, false);
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "status_code" => {
                            wrapped = true;
                            status_code = map.next_value::<Option<i64>>()?;
                        }
                        "body" => {
                            wrapped = true;
                            body = map.next_value::<Option<&'de RawValue>>()?;
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(if wrapped {
                    Response::Wrapped { status_code, body }
                } else {
                    Response::Bare
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Response<'a>, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Response::Bare)
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Response<'a>, E> {
                Ok(Response::Bare)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Response<'a>, E> {
                Ok(Response::Bare)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Response<'a>, E> {
                Ok(Response::Bare)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Response<'a>, E> {
                Ok(Response::Bare)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Response<'a>, E> {
                Ok(Response::Bare)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow, default)]
    code: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    /// Anthropic nests the real error: `{"type":"error","error":{…}}`.
    #[serde(borrow, default)]
    error: Option<Box<ErrorObject<'a>>>,
}

/// A code may be a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar<'a> {
    Str(#[serde(borrow)] Cow<'a, str>),
    Num(serde_json::Number),
}

#[derive(Deserialize)]
struct BodyWithError<'a> {
    #[serde(borrow, default)]
    error: Option<ErrorObject<'a>>,
}

#[derive(Deserialize)]
struct AnthropicResult<'a> {
    #[serde(rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<ErrorObject<'a>>,
}

impl ErrorObject<'_> {
    fn to_error(&self) -> ResultError {
        if let Some(inner) = &self.error {
            return inner.to_error();
        }
        let code = match &self.code {
            Some(Scalar::Str(s)) => Some(s.to_string()),
            Some(Scalar::Num(n)) => Some(n.to_string()),
            None => self.kind.as_ref().map(|k| k.to_string()),
        };
        ResultError {
            code,
            message: self.message.as_ref().map(|m| m.to_string()),
        }
    }
}

fn raw_bytes(raw: &RawValue) -> &[u8] {
    raw.get().as_bytes()
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
}

/// The fast path of reading a result line (without its line ending): when
/// the line is plainly a success, its `custom_id`, `response.status_code`
/// and the byte range of `response.body` in the line, read by the byte
/// scanner, which also checks the line's syntax and UTF-8. `None` leaves
/// the line to [`classify`], which reads every line and agrees on these.
/// `merge` indexes result files this way; the parsers bench measures it
/// (`cargo bench -p batchkit-benches --features criterion --bench validate -- parsers/results`).
pub fn scan_success(line: &[u8]) -> Option<(&str, Option<i64>, std::ops::Range<usize>)> {
    match crate::scan::scan_success(line)? {
        (s, end) if end == line.len() => Some((s.custom_id, s.status_code, s.body)),
        // A newline inside: the line is not one line.
        _ => None,
    }
}

/// Read and classify one result line (without its line ending).
pub fn classify(line: &str) -> Result<Outcome<'_>, BadResult> {
    let parsed: Line<'_> = serde_json::from_str(line).map_err(|e| BadResult {
        reason: format!("not a valid result line: {e}"),
        custom_id: salvage_custom_id(line),
    })?;
    let Some(custom_id) = parsed.custom_id else {
        return Err(BadResult {
            reason: "the result line has no string custom_id".to_owned(),
            custom_id: None,
        });
    };
    let mut out = Outcome {
        custom_id,
        status: Status::Failed,
        status_code: None,
        response: None,
        error: None,
    };
    if let Some(result) = parsed.result {
        classify_anthropic(&result, &mut out);
        return Ok(out);
    }
    if !is_null(parsed.error) {
        let raw = parsed.error.map(RawValue::get).unwrap_or_default();
        out.error = Some(error_from_raw(raw));
    }
    match parsed.response {
        Some(Response::Wrapped { status_code, body }) => {
            out.status_code = status_code;
            out.response = body.map(raw_bytes).filter(|b| *b != b"null");
            read_response(&mut out);
        }
        Some(Response::Bare) => {
            // vLLM versions that write the bare completion as the response.
            let bare: Option<&[u8]> = serde_json::from_str::<BareLine<'_>>(line)
                .ok()
                .and_then(|b| b.response)
                .map(raw_bytes)
                .filter(|r| r.starts_with(b"{"));
            out.response = bare;
            read_response(&mut out);
        }
        None => {}
    }
    match out.error.as_ref().and_then(|e| e.code.as_deref()) {
        Some("batch_expired") => out.status = Status::Expired,
        Some("batch_cancelled") | Some("batch_canceled") => out.status = Status::Cancelled,
        _ => {}
    }
    if out.status == Status::Failed && out.error.is_none() {
        out.error = Some(ResultError {
            code: out.status_code.map(|c| format!("http_{c}")),
            message: Some(match out.status_code {
                Some(0) => "The request did not run (status_code 0).".to_owned(),
                Some(c) => format!("The request failed with HTTP status {c}."),
                None => "The result has neither a response nor an error.".to_owned(),
            }),
        });
    }
    Ok(out)
}

fn read_response(out: &mut Outcome<'_>) {
    let ok_code = out.status_code.is_none_or(|c| (200..300).contains(&c));
    if out.error.is_none() && ok_code && out.response.is_some() {
        out.status = Status::Succeeded;
        return;
    }
    if out.error.is_none() {
        // The real error of a model-rejected request is inside the body.
        let inner = out
            .response
            .and_then(|b| serde_json::from_slice::<BodyWithError<'_>>(b).ok())
            .and_then(|b| b.error.map(|e| e.to_error()));
        out.error = inner;
    }
}

fn classify_anthropic<'a>(result: &AnthropicResult<'a>, out: &mut Outcome<'a>) {
    match result.kind.as_ref() {
        "succeeded" => {
            out.status = Status::Succeeded;
            out.response = result.message.map(raw_bytes);
        }
        "expired" => {
            out.status = Status::Expired;
            out.error = Some(ResultError {
                code: Some("expired".to_owned()),
                message: Some("The request expired before it ran.".to_owned()),
            });
        }
        "canceled" | "cancelled" => {
            out.status = Status::Cancelled;
            out.error = Some(ResultError {
                code: Some("canceled".to_owned()),
                message: Some("The batch was cancelled before the request ran.".to_owned()),
            });
        }
        other => {
            out.status = Status::Failed;
            out.error = Some(result.error.as_ref().map(ErrorObject::to_error).unwrap_or(
                ResultError {
                    code: Some(other.to_owned()),
                    message: None,
                },
            ));
        }
    }
}

fn error_from_raw(raw: &str) -> ResultError {
    if raw.starts_with('"') {
        let message: Option<String> = serde_json::from_str(raw).ok();
        return ResultError {
            code: None,
            message,
        };
    }
    match serde_json::from_str::<ErrorObject<'_>>(raw) {
        Ok(e) => e.to_error(),
        Err(_) => ResultError {
            code: None,
            message: Some(raw.to_owned()),
        },
    }
}

/// Find `"custom_id": "..."` in a line that is not valid JSON as a whole.
pub fn salvage_custom_id(line: &str) -> Option<String> {
    const KEY: &str = "\"custom_id\"";
    let at = line.find(KEY)? + KEY.len();
    let rest = line[at..].trim_start().strip_prefix(':')?.trim_start();
    let mut de = serde_json::Deserializer::from_str(rest);
    String::deserialize(&mut de).ok()
}

/// The answer text of a response body: chat `choices[0].message.content`,
/// completions `choices[0].text`, Responses API output text items, or
/// Anthropic message text blocks. `None` for other bodies. `body` is the
/// body's JSON text.
pub fn answer_text(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow, default)]
        choices: Option<Vec<Choice<'a>>>,
        #[serde(borrow, default)]
        output: Option<Vec<Item<'a>>>,
        #[serde(borrow, default)]
        content: Option<Vec<Part<'a>>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow, default)]
        message: Option<Message<'a>>,
        #[serde(borrow, default)]
        text: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow, default)]
        content: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        content: Option<Vec<Part<'a>>>,
    }
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        text: Option<Cow<'a, str>>,
    }
    let body: Body<'_> = serde_json::from_slice(body).ok()?;
    if let Some(first) = body.choices.as_ref().and_then(|c| c.first()) {
        if let Some(content) = first.message.as_ref().and_then(|m| m.content.as_ref()) {
            return Some(content.to_string());
        }
        return first.text.as_ref().map(|t| t.to_string());
    }
    let texts = |parts: &[Part<'_>], kind: &str| -> Vec<String> {
        parts
            .iter()
            .filter(|p| p.kind.as_deref() == Some(kind))
            .filter_map(|p| p.text.as_ref().map(|t| t.to_string()))
            .collect()
    };
    if let Some(output) = &body.output {
        let parts: Vec<String> = output
            .iter()
            .filter(|i| i.kind.as_deref() == Some("message"))
            .flat_map(|i| texts(i.content.as_deref().unwrap_or_default(), "output_text"))
            .collect();
        return Some(parts.join(""));
    }
    body.content.map(|c| texts(&c, "text").join(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(line: &str) -> (Status, Option<String>) {
        let o = classify(line).expect("readable");
        (o.status, o.error.and_then(|e| e.code))
    }

    #[test]
    fn the_fast_path_reads_plain_successes_only() {
        let ok =
            r#"{"custom_id":"a","response":{"status_code":200,"body":{"x":[1]}},"error":null}"#;
        let (id, code, body) = scan_success(ok.as_bytes()).expect("a plain success");
        assert_eq!((id, code, &ok[body]), ("a", Some(200), r#"{"x":[1]}"#));
        let o = classify(ok).expect("readable");
        assert_eq!(o.response, Some(&br#"{"x":[1]}"#[..]));
        for other in [
            r#"{"custom_id":"a","response":{"status_code":400,"body":{}},"error":null}"#,
            r#"{"custom_id":"a","response":null,"error":{"code":"batch_expired"}}"#,
            "{\"custom_id\":\"a\",\n\"response\":{\"body\":{}}}",
            r#"{"custom_id":"a","response":{"body":{}}} x"#,
        ] {
            assert_eq!(scan_success(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn openai_shapes() {
        assert_eq!(
            status(
                r#"{"id":"batch_req_1","custom_id":"a","response":{"status_code":200,"request_id":"r","body":{"choices":[]}},"error":null}"#
            ),
            (Status::Succeeded, None)
        );
        assert_eq!(
            status(
                r#"{"id":"b","custom_id":"a","response":null,"error":{"code":"batch_expired","message":"This request could not be executed before the completion window expired."}}"#
            ),
            (Status::Expired, Some("batch_expired".into()))
        );
        assert_eq!(
            status(
                r#"{"custom_id":"a","response":null,"error":{"code":"batch_cancelled","message":"x"}}"#
            ),
            (Status::Cancelled, Some("batch_cancelled".into()))
        );
        // Model-rejected: error null, 400, real error in the body.
        assert_eq!(
            status(
                r#"{"custom_id":"a","response":{"status_code":400,"body":{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}},"error":null}"#
            ),
            (Status::Failed, Some("context_length_exceeded".into()))
        );
        // status_code 0 with an empty body (ellmer #830) is a failure.
        assert_eq!(
            status(
                r#"{"custom_id":"a","response":{"status_code":0,"request_id":"","body":{}},"error":null}"#
            ),
            (Status::Failed, Some("http_0".into()))
        );
    }

    #[test]
    fn vllm_shapes() {
        assert_eq!(
            status(
                r#"{"id":"x","custom_id":"a","response":{"status_code":400,"request_id":"r","body":null},"error":"model not found"}"#
            ),
            (Status::Failed, None)
        );
        let o = classify(r#"{"custom_id":"a","response":{"status_code":500,"body":null},"error":{"message":"boom","code":500}}"#).expect("readable");
        assert_eq!(o.error.and_then(|e| e.code), Some("500".into()));
        // Bare completion, no wrapper.
        assert_eq!(
            status(
                r#"{"custom_id":"a","response":{"id":"cmpl","object":"chat.completion","choices":[{"message":{"content":"hi"}}]},"error":null}"#
            ),
            (Status::Succeeded, None)
        );
    }

    #[test]
    fn anthropic_shapes() {
        assert_eq!(
            status(
                r#"{"custom_id":"a","result":{"type":"succeeded","message":{"content":[{"type":"text","text":"hi"}]}}}"#
            ),
            (Status::Succeeded, None)
        );
        assert_eq!(
            status(
                r#"{"custom_id":"a","result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}}}"#
            ),
            (Status::Failed, Some("invalid_request_error".into()))
        );
        assert_eq!(
            status(r#"{"custom_id":"a","result":{"type":"expired"}}"#).0,
            Status::Expired
        );
        assert_eq!(
            status(r#"{"custom_id":"a","result":{"type":"canceled"}}"#).0,
            Status::Cancelled
        );
    }

    #[test]
    fn broken_lines_keep_their_id_when_possible() {
        let bad = classify(r#"{"custom_id": "req-9", "response": {"status_code": 200"#)
            .expect_err("broken");
        assert_eq!(bad.custom_id.as_deref(), Some("req-9"));
        assert!(classify(r#"{"response":null}"#).is_err());
    }

    #[test]
    fn answer_texts() {
        let text = |body: &str| answer_text(body.as_bytes());
        assert_eq!(
            text(r#"{"choices":[{"message":{"role":"assistant","content":"Paris"}}]}"#).as_deref(),
            Some("Paris")
        );
        assert_eq!(text(r#"{"choices":[{"text":"4"}]}"#).as_deref(), Some("4"));
        assert_eq!(
            text(r#"{"object":"response","output":[{"type":"reasoning"},{"type":"message","content":[{"type":"output_text","text":"a"},{"type":"output_text","text":"b"}]}]}"#).as_deref(),
            Some("ab")
        );
        assert_eq!(
            text(r#"{"content":[{"type":"text","text":"hi"}]}"#).as_deref(),
            Some("hi")
        );
        assert_eq!(text(r#"{"data":[{"embedding":[0.1]}]}"#), None);
    }
}
