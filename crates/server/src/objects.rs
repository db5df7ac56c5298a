//! Files and batches as the store keeps them (the records), apart from
//! what goes on the wire (the client crate's [`Batch`] and [`FileObject`],
//! the one definition the server writes and the client reads): each record
//! turns into its wire object, exactly as OpenAI's API writes it.

use batchkit_client::{
    Batch, BatchErrorItem, BatchErrors, BatchUsage, FileObject, InputTokensDetails,
    OutputTokensDetails, RequestCounts,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A stored file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// `file-…`.
    pub id: String,
    /// Whose it is.
    pub tenant: String,
    /// Its size.
    pub bytes: u64,
    /// When it was uploaded or written.
    pub created_at: i64,
    /// When it is removed, if ever.
    pub expires_at: Option<i64>,
    /// The name it was uploaded under (or given, for outputs).
    pub filename: String,
    /// `batch`, `batch_output`, ...
    pub purpose: String,
}

impl FileRecord {
    /// The file object, as the API writes it.
    pub fn to_wire(&self) -> FileObject {
        FileObject {
            id: self.id.clone(),
            object: "file".to_owned(),
            bytes: self.bytes,
            created_at: self.created_at,
            expires_at: self.expires_at,
            filename: self.filename.clone(),
            purpose: self.purpose.clone(),
            status: Some("processed".to_owned()),
            status_details: None,
            raw: Value::Null,
        }
    }
}

/// Where a batch is in its life: the one definition the client, the
/// server and the CLI share.
pub use batchkit_client::BatchStatus as Status;

/// Token usage summed over a batch's responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Of which served from cache.
    pub cached_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Of which reasoning.
    pub reasoning_tokens: u64,
    /// All tokens.
    pub total_tokens: u64,
}

impl Usage {
    /// The usage of one response body, read from its `usage` object in any of
    /// the shapes the endpoints use (chat and completions: `prompt_tokens`;
    /// Responses: `input_tokens`; embeddings: only `prompt_tokens`).
    pub fn of_body(body: &Value) -> Usage {
        let Some(u) = body.get("usage") else {
            return Usage::default();
        };
        let n = |keys: &[&str]| -> u64 {
            keys.iter()
                .find_map(|k| {
                    let mut v = u;
                    for part in k.split('.') {
                        v = v.get(part)?;
                    }
                    v.as_u64()
                })
                .unwrap_or(0)
        };
        let input = n(&["input_tokens", "prompt_tokens"]);
        let output = n(&["output_tokens", "completion_tokens"]);
        Usage {
            input_tokens: input,
            cached_tokens: n(&[
                "input_tokens_details.cached_tokens",
                "prompt_tokens_details.cached_tokens",
            ]),
            output_tokens: output,
            reasoning_tokens: n(&[
                "output_tokens_details.reasoning_tokens",
                "completion_tokens_details.reasoning_tokens",
            ]),
            total_tokens: match n(&["total_tokens"]) {
                0 => input + output,
                t => t,
            },
        }
    }

    /// Add `other` to this.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.cached_tokens += other.cached_tokens;
        self.output_tokens += other.output_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.total_tokens += other.total_tokens;
    }

    fn to_wire(self) -> BatchUsage {
        BatchUsage {
            input_tokens: self.input_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens: self.cached_tokens,
            },
            output_tokens: self.output_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: self.reasoning_tokens,
            },
            total_tokens: self.total_tokens,
        }
    }
}

/// One entry of a failed batch's `errors` list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchError {
    /// The validator's code (`invalid_json_line`, `duplicate_custom_id`, ...).
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// The field at fault.
    pub param: Option<String>,
    /// The 1-based line of the input file.
    pub line: Option<u64>,
}

/// The moments a batch passed each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamps {
    /// `in_progress_at`.
    pub in_progress: Option<i64>,
    /// `finalizing_at`.
    pub finalizing: Option<i64>,
    /// `completed_at`.
    pub completed: Option<i64>,
    /// `failed_at`.
    pub failed: Option<i64>,
    /// `expired_at`.
    pub expired: Option<i64>,
    /// `cancelling_at`.
    pub cancelling: Option<i64>,
    /// `cancelled_at`.
    pub cancelled: Option<i64>,
}

/// A batch as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    /// `batch_…`.
    pub id: String,
    /// Whose it is.
    pub tenant: String,
    /// The endpoint every request goes to.
    pub endpoint: String,
    /// The model of the requests, once validated (one model per batch).
    pub model: Option<String>,
    /// The requests.
    pub input_file_id: String,
    /// As given (`24h`).
    pub completion_window: String,
    /// Where it is.
    pub status: Status,
    /// Successful results, once written.
    pub output_file_id: Option<String>,
    /// Failed and unfinished requests, once written.
    pub error_file_id: Option<String>,
    /// When it was created.
    pub created_at: i64,
    /// `created_at` + the window.
    pub expires_at: i64,
    /// When it passed each status.
    pub stamps: Stamps,
    /// Requests in the input file.
    pub total: u64,
    /// Requests answered with a 2xx.
    pub completed: u64,
    /// Requests that failed, expired or were cancelled.
    pub failed: u64,
    /// Up to 16 pairs, as given.
    pub metadata: Option<Map<String, Value>>,
    /// Why validation failed.
    pub errors: Option<Vec<BatchError>>,
    /// Token usage summed over the responses.
    pub usage: Usage,
    /// Seconds after creation that output files expire, if set.
    pub output_expires_after: Option<i64>,
}

impl BatchRecord {
    /// A batch just created: `validating`, nothing counted, no metadata.
    pub fn validating(
        id: String,
        tenant: String,
        endpoint: String,
        input_file_id: String,
        completion_window: String,
        created_at: i64,
        expires_at: i64,
    ) -> BatchRecord {
        BatchRecord {
            id,
            tenant,
            endpoint,
            model: None,
            input_file_id,
            completion_window,
            status: Status::Validating,
            output_file_id: None,
            error_file_id: None,
            created_at,
            expires_at,
            stamps: Stamps::default(),
            total: 0,
            completed: 0,
            failed: 0,
            metadata: None,
            errors: None,
            usage: Usage::default(),
            output_expires_after: None,
        }
    }

    /// The batch object, as the API writes it.
    pub fn to_wire(&self) -> Batch {
        let s = &self.stamps;
        Batch {
            id: self.id.clone(),
            object: "batch".to_owned(),
            endpoint: self.endpoint.clone(),
            model: self.model.clone(),
            // A verdict reached at creation waits for the validation step
            // to apply it: the batch shows it once it has failed.
            errors: self
                .errors
                .as_ref()
                .filter(|_| self.status == Status::Failed)
                .map(|errors| BatchErrors {
                    object: "list".to_owned(),
                    data: errors
                        .iter()
                        .map(|e| BatchErrorItem {
                            code: Some(e.code.clone()),
                            message: Some(e.message.clone()),
                            param: e.param.clone(),
                            line: e.line,
                        })
                        .collect(),
                }),
            input_file_id: self.input_file_id.clone(),
            completion_window: self.completion_window.clone(),
            status: self.status.as_str().to_owned(),
            output_file_id: self.output_file_id.clone(),
            error_file_id: self.error_file_id.clone(),
            created_at: self.created_at,
            in_progress_at: s.in_progress,
            expires_at: Some(self.expires_at),
            finalizing_at: s.finalizing,
            completed_at: s.completed,
            failed_at: s.failed,
            expired_at: s.expired,
            cancelling_at: s.cancelling,
            cancelled_at: s.cancelled,
            request_counts: Some(RequestCounts {
                total: self.total,
                completed: self.completed,
                failed: self.failed,
            }),
            metadata: self.metadata.as_ref().map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            }),
            usage: Some(self.usage.to_wire()),
            raw: Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The wire objects carry every field of OpenAI's (openai-python's
    /// `Batch` and `FileObject` types), in its order, absent ones as null;
    /// and what the server writes, the client reads back.
    #[test]
    fn wire_objects_are_openais_and_read_back() {
        let mut b = BatchRecord::validating(
            "batch_1".into(),
            "t".into(),
            "/v1/chat/completions".into(),
            "file-in".into(),
            "24h".into(),
            100,
            200,
        );
        b.errors = Some(vec![BatchError {
            code: "invalid_json_line".into(),
            message: "m".into(),
            param: None,
            line: Some(3),
        }]);
        assert_eq!(
            serde_json::to_value(b.to_wire()).expect("serialize")["errors"],
            Value::Null,
            "errors show once the batch has failed"
        );
        b.status = Status::Failed;
        b.usage.input_tokens = 5;
        b.metadata = Some(json!({"k": "v"}).as_object().cloned().unwrap_or_default());
        let v = serde_json::to_value(b.to_wire()).expect("serialize");
        let keys: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut want = vec![
            "id",
            "object",
            "endpoint",
            "model",
            "errors",
            "input_file_id",
            "completion_window",
            "status",
            "output_file_id",
            "error_file_id",
            "created_at",
            "in_progress_at",
            "expires_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
            "request_counts",
            "metadata",
            "usage",
        ];
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(v["in_progress_at"], Value::Null);
        assert_eq!(v["errors"]["object"], "list");
        assert_eq!(v["errors"]["data"][0]["line"], 3);
        assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 0);
        let back: Batch = serde_json::from_value(v).expect("the client reads it");
        assert_eq!(
            (back.id.as_str(), back.status.as_str(), back.expires_at),
            ("batch_1", "failed", Some(200))
        );
        assert_eq!(back.usage.map(|u| u.input_tokens), Some(5));
        assert_eq!(
            back.metadata.and_then(|m| m.get("k").cloned()),
            Some("v".to_owned())
        );

        let f = FileRecord {
            id: "file-1".into(),
            tenant: "t".into(),
            bytes: 3,
            created_at: 1,
            expires_at: None,
            filename: "a.jsonl".into(),
            purpose: "batch".into(),
        };
        let v = serde_json::to_value(f.to_wire()).expect("serialize");
        assert_eq!(
            v,
            json!({"id": "file-1", "object": "file", "bytes": 3, "created_at": 1,
                "expires_at": null, "filename": "a.jsonl", "purpose": "batch",
                "status": "processed", "status_details": null})
        );
    }

    #[test]
    fn usage_of_each_shape() {
        let chat = json!({"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 1}}});
        assert_eq!(
            Usage::of_body(&chat),
            Usage {
                input_tokens: 10,
                cached_tokens: 2,
                output_tokens: 5,
                reasoning_tokens: 1,
                total_tokens: 15
            }
        );
        let responses = json!({"usage": {"input_tokens": 7, "output_tokens": 3}});
        assert_eq!(Usage::of_body(&responses).total_tokens, 10);
        let embeddings = json!({"usage": {"prompt_tokens": 4, "total_tokens": 4}});
        assert_eq!(Usage::of_body(&embeddings).input_tokens, 4);
        assert_eq!(Usage::of_body(&json!({})), Usage::default());
    }

    #[test]
    fn statuses_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
