//! The objects of the Files and Batches API, on the wire: the one
//! definition that `batchkit serve` writes and the client reads. Every
//! field OpenAI's objects have is here, in OpenAI's order, absent ones
//! written as `null`; read leniently (a missing field takes its default),
//! since other services omit some. Each object read by the client also
//! keeps the service's JSON as it came (`raw`), so that it can be shown
//! unchanged and nothing a service adds is lost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FileObject {
    /// `file-…`.
    pub id: String,
    /// `file`.
    #[serde(default)]
    pub object: String,
    /// Size.
    #[serde(default)]
    pub bytes: u64,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: i64,
    /// Unix seconds, if it expires.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Its name.
    #[serde(default)]
    pub filename: String,
    /// `batch`, `batch_output`, ...
    #[serde(default)]
    pub purpose: String,
    /// `processed` (deprecated by OpenAI, still sent).
    #[serde(default)]
    pub status: Option<String>,
    /// Deprecated by OpenAI, still sent (`null`).
    #[serde(default)]
    pub status_details: Option<Value>,
    /// The object as the service sent it.
    #[serde(skip)]
    pub raw: Value,
}

/// `request_counts`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Requests in the batch.
    #[serde(default)]
    pub total: u64,
    /// Requests that succeeded.
    #[serde(default)]
    pub completed: u64,
    /// Requests that failed.
    #[serde(default)]
    pub failed: u64,
}

/// One entry of a failed batch's `errors`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchErrorItem {
    /// Error code.
    #[serde(default)]
    pub code: Option<String>,
    /// What is wrong.
    #[serde(default)]
    pub message: Option<String>,
    /// The field at fault.
    #[serde(default)]
    pub param: Option<String>,
    /// The input line.
    #[serde(default)]
    pub line: Option<u64>,
}

/// A batch's `errors` list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchErrors {
    /// `list`.
    #[serde(default)]
    pub object: String,
    /// The errors.
    #[serde(default)]
    pub data: Vec<BatchErrorItem>,
}

/// `input_tokens_details`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    /// Served from cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

/// `output_tokens_details`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    /// Spent on reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// A batch's `usage`: tokens summed over its responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Of which cached.
    #[serde(default)]
    pub input_tokens_details: InputTokensDetails,
    /// Completion tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Of which reasoning.
    #[serde(default)]
    pub output_tokens_details: OutputTokensDetails,
    /// All tokens.
    #[serde(default)]
    pub total_tokens: u64,
}

/// A batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Batch {
    /// `batch_…`.
    pub id: String,
    /// `batch`.
    #[serde(default)]
    pub object: String,
    /// The endpoint.
    #[serde(default)]
    pub endpoint: String,
    /// The model of its requests, once validation found it.
    #[serde(default)]
    pub model: Option<String>,
    /// Why validation failed.
    #[serde(default)]
    pub errors: Option<BatchErrors>,
    /// The input file.
    #[serde(default)]
    pub input_file_id: String,
    /// `24h`, ...
    #[serde(default)]
    pub completion_window: String,
    /// `validating`, `in_progress`, `completed`, ... (a string: a service
    /// may have statuses [`crate::BatchStatus`] does not know).
    #[serde(default)]
    pub status: String,
    /// Successful results.
    #[serde(default)]
    pub output_file_id: Option<String>,
    /// Failed requests.
    #[serde(default)]
    pub error_file_id: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: i64,
    /// When it went `in_progress`.
    #[serde(default)]
    pub in_progress_at: Option<i64>,
    /// When the window ends.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// When it went `finalizing`.
    #[serde(default)]
    pub finalizing_at: Option<i64>,
    /// When it completed.
    #[serde(default)]
    pub completed_at: Option<i64>,
    /// When it failed.
    #[serde(default)]
    pub failed_at: Option<i64>,
    /// When its window ended.
    #[serde(default)]
    pub expired_at: Option<i64>,
    /// When cancel was asked.
    #[serde(default)]
    pub cancelling_at: Option<i64>,
    /// When it was cancelled.
    #[serde(default)]
    pub cancelled_at: Option<i64>,
    /// Progress.
    #[serde(default)]
    pub request_counts: Option<RequestCounts>,
    /// As given at creation.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Tokens, summed over the responses so far.
    #[serde(default)]
    pub usage: Option<BatchUsage>,
    /// The object as the service sent it.
    #[serde(skip)]
    pub raw: Value,
}

impl Batch {
    /// Nothing more will happen to it.
    pub fn is_terminal(&self) -> bool {
        crate::BatchStatus::parse(&self.status).is_some_and(crate::BatchStatus::is_terminal)
    }

    /// The counts, zero when absent.
    pub fn counts(&self) -> RequestCounts {
        self.request_counts.unwrap_or_default()
    }

    /// Why it failed: its `errors`, none when absent.
    pub fn error_list(&self) -> &[BatchErrorItem] {
        self.errors.as_ref().map_or(&[], |e| e.data.as_slice())
    }
}

/// A list on the wire: `{object: "list", data, first_id, last_id,
/// has_more}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct List<T> {
    /// `list`.
    #[serde(default)]
    pub object: String,
    /// The items.
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    /// The first item's id.
    #[serde(default)]
    pub first_id: Option<String>,
    /// The last item's id.
    #[serde(default)]
    pub last_id: Option<String>,
    /// More follow after `last_id`.
    #[serde(default)]
    pub has_more: bool,
}

impl<T> List<T> {
    /// A page of `data`, whose items' ids are given by `id`.
    pub fn of(data: Vec<T>, has_more: bool, id: impl Fn(&T) -> &str) -> List<T> {
        List {
            object: "list".to_owned(),
            first_id: data.first().map(|t| id(t).to_owned()),
            last_id: data.last().map(|t| id(t).to_owned()),
            has_more,
            data,
        }
    }
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items.
    pub data: Vec<T>,
    /// More follow after `last_id`.
    pub has_more: bool,
    /// The last item's id.
    pub last_id: Option<String>,
}

/// What `POST /v1/batches` takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateBatch {
    /// The uploaded request file.
    pub input_file_id: String,
    /// `/v1/chat/completions`, ...
    pub endpoint: String,
    /// `24h` (or what the service allows).
    pub completion_window: String,
    /// Up to 16 pairs.
    pub metadata: BTreeMap<String, String>,
    /// Seconds after creation that the output files expire.
    pub output_expires_after: Option<i64>,
}

impl CreateBatch {
    /// Check the limits the service enforces, before sending anything.
    pub fn check(&self) -> Result<(), batchkit_core::params::ParamError> {
        batchkit_core::params::check_metadata(
            self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        if let Some(s) = self.output_expires_after {
            batchkit_core::params::check_output_expiry(s)?;
        }
        Ok(())
    }

    /// The request body.
    pub fn body(&self) -> Value {
        let body = CreateBatchBody {
            input_file_id: self.input_file_id.clone(),
            endpoint: self.endpoint.clone(),
            completion_window: self.completion_window.clone(),
            metadata: (!self.metadata.is_empty()).then(|| self.metadata.clone()),
            output_expires_after: self.output_expires_after.map(|seconds| ExpiresAfter {
                anchor: "created_at".to_owned(),
                seconds,
            }),
        };
        serde_json::to_value(body).unwrap_or_default()
    }
}

/// `POST /v1/batches`'s body on the wire, as the client sends it and the
/// server reads it (once its fields are checked one by one, for messages
/// that name the field at fault).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBatchBody {
    /// The uploaded request file.
    pub input_file_id: String,
    /// `/v1/chat/completions`, ...
    pub endpoint: String,
    /// `24h`, ...
    pub completion_window: String,
    /// Up to 16 pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// When the output files expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_expires_after: Option<ExpiresAfter>,
}

/// `{anchor: "created_at", seconds}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiresAfter {
    /// `created_at`, the only anchor.
    pub anchor: String,
    /// Seconds after the anchor.
    pub seconds: i64,
}

/// Types that keep the JSON they were read from.
pub trait WithRaw: serde::de::DeserializeOwned {
    /// Store the JSON.
    fn set_raw(&mut self, raw: Value);
}

impl WithRaw for FileObject {
    fn set_raw(&mut self, raw: Value) {
        self.raw = raw;
    }
}

impl WithRaw for Batch {
    fn set_raw(&mut self, raw: Value) {
        self.raw = raw;
    }
}

/// Read `T` from `v`, keeping `v`.
pub(crate) fn from_value<T: WithRaw>(v: Value) -> Result<T, serde_json::Error> {
    let mut t: T = serde_json::from_value(v.clone())?;
    t.set_raw(v);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the client sends is the wire body the server reads, field for
    /// field; absent options are left out, not sent as null.
    #[test]
    fn a_create_request_is_the_wire_body() {
        let mut req = CreateBatch {
            input_file_id: "file-1".into(),
            endpoint: "/v1/chat/completions".into(),
            completion_window: "24h".into(),
            ..CreateBatch::default()
        };
        let plain = req.body();
        assert_eq!(
            plain,
            serde_json::json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        );
        req.metadata.insert("k".into(), "v".into());
        req.output_expires_after = Some(3600);
        let body: CreateBatchBody = serde_json::from_value(req.body()).expect("reads back");
        assert_eq!(
            body.metadata.and_then(|m| m.get("k").cloned()).as_deref(),
            Some("v")
        );
        assert_eq!(
            body.output_expires_after,
            Some(ExpiresAfter {
                anchor: "created_at".into(),
                seconds: 3600
            })
        );
    }
}
