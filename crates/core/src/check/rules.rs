//! The per-line rules: everything that can be judged from one line and the
//! batch's reference endpoint and model. Rules that need the whole file
//! (repeated ids, counts, sizes) are in [`crate::validate`].
//!
//! Where a rule's verdict falls follows what the service does: the envelope
//! (`custom_id`, `method`, `url`, `body`), `stream`, the model and the
//! presence of chat messages fail the batch at validation (OpenAI's replies
//! recorded in llama-stack's batch tests); what is inside a body is the
//! endpoint's to refuse when that request runs, so it is a warning
//! ([`Code::InvalidBody`]) unless the profile parses bodies up front (vLLM).

use crate::dedup::IdEntry;
use crate::diag::{Code, Diagnostic, locate};
use crate::envelope::{Body, BodyView, Kind, LineView, MessageProblem, Messages, Text};
use crate::provider::{EndpointKind, LineShape};

use super::{ChunkOut, LineCtx, Pos, without_bom};

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
    typed(out, Code::InvalidRequest, pos, param, expected, kind);
}

fn typed(out: &mut ChunkOut, code: Code, pos: Pos<'_>, param: &str, expected: &str, kind: Kind) {
    out.report(code, pos, || {
        Diagnostic::new(
            code,
            will_fail(
                code,
                format!(
                    "The {param} must be {expected}, but it is {}.",
                    kind.described()
                ),
            ),
        )
        .param(param)
    });
}

/// The code of a problem inside the body that the endpoint refuses when the
/// request runs, not the batch service when it reads the file: only that
/// request fails (a warning), unless the profile parses bodies up front.
fn body_code(ctx: &LineCtx<'_>) -> Code {
    if ctx.profile.body_checked_upfront {
        Code::InvalidRequest
    } else {
        Code::InvalidBody
    }
}

/// `message`, saying what a warning of [`Code::InvalidBody`] means.
fn will_fail(code: Code, mut message: String) -> String {
    if code == Code::InvalidBody {
        message.push_str(" This request will fail when it runs; the others run.");
    }
    message
}

pub(super) fn check_view(ctx: &LineCtx<'_>, view: &LineView<'_>, pos: Pos<'_>, out: &mut ChunkOut) {
    if let Some(key) = view.duplicate_key {
        out.report(Code::DuplicateKey, pos, || {
            Diagnostic::new(
                Code::DuplicateKey,
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
        out.report(Code::DuplicateKey, pos, || {
            Diagnostic::new(
                Code::DuplicateKey,
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
    // OpenAI checks the model and the messages before it runs anything;
    // the rest of a body is the endpoint's to refuse, one request at a time.
    let code = body_code(ctx);
    match kind {
        EndpointKind::Chat => check_messages(code, body.messages, pos, out),
        EndpointKind::Completions => {
            if body.prompt.is_none_or(|p| p.kind == Kind::Null) {
                required(out, code, pos, "Prompt", "body.prompt");
            }
        }
        // A Responses request may name a stored prompt instead of an input.
        EndpointKind::Responses if body.prompt.is_some_and(|p| p.kind != Kind::Null) => {
            if let Some(i) = body
                .input
                .filter(|i| !matches!(i.kind, Kind::String | Kind::Array | Kind::Null))
            {
                typed(out, code, pos, "body.input", "a string or an array", i.kind);
            }
        }
        EndpointKind::Embeddings | EndpointKind::Moderations | EndpointKind::Responses => {
            match body.input {
                None => required(out, code, pos, "Input", "body.input"),
                Some(i) if i.kind == Kind::Null => required(out, code, pos, "Input", "body.input"),
                Some(i) if matches!(i.kind, Kind::String | Kind::Array) => {
                    if kind == EndpointKind::Embeddings {
                        out.embedding_inputs += i.count;
                    }
                }
                Some(i) => typed(out, code, pos, "body.input", "a string or an array", i.kind),
            }
        }
        EndpointKind::Other => {}
    }
}

fn required(out: &mut ChunkOut, code: Code, pos: Pos<'_>, name: &str, param: &'static str) {
    absent(
        out,
        pos,
        code,
        will_fail(code, format!("{name} parameter is required.")),
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

/// The chat messages: their absence fails the batch (OpenAI's "Messages
/// parameter is required."); what is inside them is `code`'s to report.
fn check_messages(code: Code, messages: Option<Messages>, pos: Pos<'_>, out: &mut ChunkOut) {
    let absent = Code::InvalidRequest;
    match messages {
        None => required(out, absent, pos, "Messages", "body.messages"),
        Some(Messages::Other(Kind::Null)) => {
            required(out, absent, pos, "Messages", "body.messages")
        }
        Some(Messages::Other(kind)) => typed(out, code, pos, "body.messages", "an array", kind),
        // An empty array passes every schema (vLLM's too); the engine
        // refuses it when the request runs.
        Some(Messages::Array { len: 0, .. }) => out.report(Code::InvalidBody, pos, || {
            Diagnostic::new(
                Code::InvalidBody,
                will_fail(
                    Code::InvalidBody,
                    "Messages must be a non-empty array.".to_owned(),
                ),
            )
            .param("body.messages")
        }),
        Some(Messages::Array {
            problem: Some((i, problem)),
            ..
        }) => out.report(code, pos, || {
            let message = match problem {
                MessageProblem::NotObject(kind) => format!(
                    "Each message must be an object, but body.messages[{i}] is {}.",
                    kind.described()
                ),
                MessageProblem::NoRole => {
                    format!("Each message must have a role, but body.messages[{i}] has none.")
                }
            };
            Diagnostic::new(code, will_fail(code, message))
                .param(format!("body.messages[{i}]"))
                .hint("messages look like {\"role\": \"user\", \"content\": \"...\"}")
        }),
        Some(Messages::Array { problem: None, .. }) => {}
    }
}
