//! The lines of output and error files, as OpenAI writes them:
//! `{"id":"batch_req_…","custom_id":…,"response":{status_code, request_id,
//! body}|null,"error":{code, message}|null}`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::upstream::Reply;
use crate::objects::Usage;
use crate::store::ResultRow;

/// What the dispatcher needs of a request line.
#[derive(Deserialize)]
pub struct RequestLine<'a> {
    /// The caller's id for it.
    #[serde(borrow)]
    pub custom_id: Cow<'a, str>,
    /// Where it goes (absent in `{custom_id, body}` lines).
    #[serde(borrow, default)]
    pub url: Option<Cow<'a, str>>,
    /// What is sent.
    #[serde(borrow)]
    pub body: &'a RawValue,
}

fn json_str(s: &str) -> String {
    // A str always serializes.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// An error-file line for a request that got no response.
pub fn error_line(custom_id: Option<&str>, code: &str, message: &str) -> String {
    format!(
        r#"{{"id":{},"custom_id":{},"response":null,"error":{{"code":{},"message":{}}}}}"#,
        json_str(&crate::ids::new_id("batch_req_", 32)),
        custom_id.map_or_else(|| "null".to_owned(), json_str),
        json_str(code),
        json_str(message),
    )
}

/// The row recording how request `line` (`custom_id`) ended.
pub fn result_row(line: u64, custom_id: &str, reply: Reply) -> ResultRow {
    match reply {
        Reply::Response {
            status,
            request_id,
            body,
        } => {
            // A body that is not JSON is kept, as a JSON string.
            let raw = std::str::from_utf8(&body)
                .ok()
                .and_then(|s| RawValue::from_string(s.trim().to_owned()).ok());
            let usage = raw
                .as_ref()
                .and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok())
                .map(|v| Usage::of_body(&v))
                .unwrap_or_default();
            let body = match raw {
                Some(r) => r.get().to_owned(),
                None => json_str(&String::from_utf8_lossy(&body)),
            };
            let ok = (200..300).contains(&status);
            ResultRow {
                line,
                ok,
                body: format!(
                    r#"{{"id":{},"custom_id":{},"response":{{"status_code":{status},"request_id":{},"body":{body}}},"error":null}}"#,
                    json_str(&crate::ids::new_id("batch_req_", 32)),
                    json_str(custom_id),
                    json_str(&request_id),
                ),
                usage: if ok { usage } else { Usage::default() },
            }
        }
        Reply::NoResponse { code, message } => ResultRow {
            line,
            ok: false,
            body: error_line(Some(custom_id), code, &message),
            usage: Usage::default(),
        },
        // The dispatcher sends a moved request elsewhere; one that ends
        // here found no other upstream.
        Reply::Moved => ResultRow {
            line,
            ok: false,
            body: error_line(
                Some(custom_id),
                "upstream_unavailable",
                "The upstream was down, and no other served this request's model.",
            ),
            usage: Usage::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::Value;

    #[test]
    fn lines_have_openai_shape() {
        let row = result_row(
            3,
            "a\"b",
            Reply::Response {
                status: 200,
                request_id: "req_1".into(),
                body: Bytes::from_static(br#"{"usage":{"prompt_tokens":2,"completion_tokens":1}}"#),
            },
        );
        assert!(row.ok);
        assert_eq!(row.usage.total_tokens, 3);
        let v: Value = serde_json::from_str(&row.body).unwrap();
        assert_eq!(v["custom_id"], "a\"b");
        assert_eq!(v["response"]["status_code"], 200);
        assert_eq!(v["response"]["request_id"], "req_1");
        assert!(v["id"].as_str().unwrap().starts_with("batch_req_"));
        assert!(v["error"].is_null());

        let row = result_row(
            4,
            "x",
            Reply::Response {
                status: 502,
                request_id: "r".into(),
                body: Bytes::from_static(b"<html>bad gateway</html>"),
            },
        );
        assert!(!row.ok);
        let v: Value = serde_json::from_str(&row.body).unwrap();
        assert_eq!(v["response"]["body"], "<html>bad gateway</html>");

        let v: Value = serde_json::from_str(&error_line(None, "batch_expired", "late")).unwrap();
        assert!(v["custom_id"].is_null() && v["response"].is_null());
        assert_eq!(v["error"]["code"], "batch_expired");
    }
}
