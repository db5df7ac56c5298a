//! `/v1/batches`: create, get, list (newest first, paged by `after`),
//! cancel.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Json;
use batchkit_client::{Batch, CreateBatchBody, List};
use batchkit_core::params;
use serde_json::{Map, Value};

use super::{ApiJson, ApiPath, ApiQuery, AppState, Params, Tenant, limit, list_error};
use crate::error::ApiError;
use crate::ids;
use crate::objects::{BatchError, BatchRecord, Status};
use crate::store::{Cancel, Page};

const FIELDS: &[&str] = &[
    "input_file_id",
    "endpoint",
    "completion_window",
    "metadata",
    "output_expires_after",
];

fn required<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Err(ApiError::missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ApiError::invalid_type(name, "a string", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `metadata`: at most 16 string pairs, keys of at most 64 characters,
/// values of at most 512.
pub fn check_metadata(v: &Value) -> Result<(), ApiError> {
    let m = match v {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        other => return Err(ApiError::invalid_type("metadata", "an object", kind(other))),
    };
    let mut pairs = Vec::with_capacity(m.len());
    for (k, v) in m {
        match v {
            Value::String(s) => pairs.push((k.as_str(), s.as_str())),
            other => {
                return Err(ApiError::invalid_type(
                    &format!("metadata.{k}"),
                    "a string",
                    kind(other),
                ));
            }
        }
    }
    params::check_metadata(pairs.into_iter())
        .map_err(|e| ApiError::invalid_param(&e.param, e.message))
}

/// `output_expires_after`: `{anchor: "created_at", seconds: 3600..=2592000}`.
pub fn check_output_expiry(v: &Value) -> Result<(), ApiError> {
    let m = match v {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        other => {
            return Err(ApiError::invalid_type(
                "output_expires_after",
                "an object",
                kind(other),
            ));
        }
    };
    if let Some(k) = m.keys().find(|k| *k != "anchor" && *k != "seconds") {
        return Err(ApiError::invalid_param(
            &format!("output_expires_after.{k}"),
            format!("Unrecognized request argument supplied: 'output_expires_after.{k}'."),
        ));
    }
    match m.get("anchor") {
        Some(Value::String(a)) if a == "created_at" => {}
        Some(a) => {
            return Err(ApiError::invalid_param(
                "output_expires_after.anchor",
                format!(
                    "Invalid 'output_expires_after.anchor' {a}: the only anchor is 'created_at'."
                ),
            ));
        }
        None => {
            return Err(ApiError::invalid_param(
                "output_expires_after.anchor",
                "Missing required parameter: 'output_expires_after.anchor'.",
            ));
        }
    }
    match m.get("seconds").and_then(Value::as_i64) {
        Some(s) => {
            params::check_output_expiry(s).map_err(|e| ApiError::invalid_param(&e.param, e.message))
        }
        None => Err(ApiError::invalid_param(
            "output_expires_after.seconds",
            format!(
                "Invalid 'output_expires_after.seconds': expected an integer from 3600 to 2592000, got {}.",
                m.get("seconds")
                    .map_or("nothing".to_owned(), Value::to_string)
            ),
        )),
    }
}

/// `POST /v1/batches`.
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Batch>, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::invalid(format!(
            "The body must be a JSON object, but it is {}.",
            kind(&body)
        )));
    };
    if let Some(k) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid_param(
            k,
            format!("Unrecognized request argument supplied: '{k}'."),
        ));
    }
    required(&body, "input_file_id")?;
    let endpoint = required(&body, "endpoint")?;
    let window_text = required(&body, "completion_window")?;
    let profile = state.engine.cfg.provider.profile();
    if !profile.supports(endpoint) {
        return Err(ApiError::invalid_value(
            "endpoint",
            endpoint,
            profile.endpoints,
        ));
    }
    let windows = &state.engine.cfg.completion_windows;
    let window = match windows.iter().find(|w| w.text == window_text) {
        Some(w) => w.seconds,
        None => {
            let names: Vec<&str> = windows.iter().map(|w| w.text.as_str()).collect();
            return Err(ApiError::invalid_value(
                "completion_window",
                window_text,
                &names,
            ));
        }
    };
    check_metadata(body.get("metadata").unwrap_or(&Value::Null))?;
    check_output_expiry(body.get("output_expires_after").unwrap_or(&Value::Null))?;
    // Every field checked, the body reads as the wire type the client
    // writes.
    let CreateBatchBody {
        input_file_id,
        endpoint,
        completion_window: window_text,
        metadata,
        output_expires_after,
    } = serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::invalid(format!("The body cannot be read: {e}.")))?;
    let metadata: Option<Map<String, Value>> =
        metadata.map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
    let output_expires_after = output_expires_after.map(|e| e.seconds);
    let (t, f) = (tenant.clone(), input_file_id.clone());
    let file = state.engine.store.file(&t, &f).await?;
    if let Some(file) = &file
        && file.purpose != "batch"
    {
        return Err(ApiError::invalid_param(
            "input_file_id",
            format!(
                "The file '{input_file_id}' was uploaded with purpose '{}'; a batch's input needs purpose 'batch'.",
                file.purpose
            ),
        ));
    }
    // As on OpenAI, a file that is not there (or not this key's) does not
    // refuse the create: the batch is created and fails at validation. The
    // verdict is reached here, while the file's owner is known, and carried
    // to the validation step in `errors`.
    let errors = file.is_none().then(|| {
        vec![BatchError {
            code: "invalid_request".to_owned(),
            message: format!(
                "Cannot find file {input_file_id}, or this API key does not have access to it."
            ),
            param: Some("file_id".to_owned()),
            line: None,
        }]
    });
    let cap = state
        .engine
        .tenants
        .now()
        .get(&tenant)
        .and_then(|t| t.max_batches);
    if let Some(cap) = cap {
        let t = tenant.clone();
        let open = state.engine.store.unfinished_batches(&t).await?;
        if open >= cap {
            return Err(ApiError::too_many(format!(
                "This API key's tenant has {open} unfinished batches, its limit (max_batches in the tenants file); create this one when one of them has ended."
            )));
        }
    }
    let now = ids::now();
    let record = BatchRecord {
        metadata,
        output_expires_after,
        errors,
        ..BatchRecord::validating(
            ids::new_id("batch_", 32),
            tenant,
            endpoint,
            input_file_id,
            window_text,
            now,
            now + window,
        )
    };
    let r = record.clone();
    state.engine.store.insert_batch(&r).await?;
    tracing::info!(batch = %record.id, to = "validating", input = %record.input_file_id, endpoint = %record.endpoint, "batch created");
    state.engine.wake();
    Ok(Json(record.to_wire()))
}

/// `GET /v1/batches/{id}`.
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Batch>, ApiError> {
    let i = id.clone();
    let batch = state.engine.store.batch(&tenant, &i).await?;
    batch
        .map(|b| Json(b.to_wire()))
        .ok_or_else(|| ApiError::not_found("batch", &id))
}

/// `GET /v1/batches`.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    ApiQuery(q): ApiQuery<Params>,
) -> Result<Json<List<Batch>>, ApiError> {
    let limit = limit(q.get("limit").map(String::as_str), 20, 100)?;
    let after = q.get("after").cloned();
    let page = Page {
        after: after.as_deref(),
        limit,
        ascending: false,
    };
    let (batches, more) = state
        .engine
        .store
        .list_batches(&tenant, &page)
        .await
        .map_err(list_error)?;
    let items = batches.iter().map(BatchRecord::to_wire).collect();
    Ok(Json(List::of(items, more, |b: &Batch| &b.id)))
}

/// `POST /v1/batches/{id}/cancel`.
pub(super) async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Batch>, ApiError> {
    let (i, now) = (id.clone(), ids::now());
    match state.engine.store.cancel(&tenant, &i, now).await? {
        Cancel::Cancelling(batch) => {
            tracing::info!(batch = %id, to = "cancelling", "cancel asked");
            state.engine.cancelled(&id);
            Ok(Json(batch.to_wire()))
        }
        // As on OpenAI: asking again is answered with the batch, and a
        // batch already finalizing finishes as it would (so "create, then
        // cancel at once" never races into an error); only an ended batch
        // refuses.
        Cancel::Unchanged(batch)
            if matches!(
                batch.status,
                Status::Cancelling | Status::Cancelled | Status::Finalizing
            ) =>
        {
            Ok(Json(batch.to_wire()))
        }
        Cancel::Unchanged(batch) => Err(ApiError::conflict(format!(
            "Cannot cancel a batch with status '{}'.",
            batch.status.as_str()
        ))),
        Cancel::NotFound => Err(ApiError::not_found("batch", &id)),
    }
}
