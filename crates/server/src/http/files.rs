//! `/v1/files`: upload (multipart, streamed to disk), list, get, content
//! (streamed), delete.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::multipart::MultipartError;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;

use super::{ApiPath, ApiQuery, AppState, Params, Tenant, limit, list_error};
use batchkit_client::{FileObject, List};

use crate::error::ApiError;
use crate::ids;
use crate::objects::FileRecord;
use crate::store::{FileWriter, Page};

/// Purposes a file may be uploaded with (OpenAI's list).
const PURPOSES: &[&str] = &[
    "batch",
    "assistants",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];
/// Room for the multipart framing and the small fields around the file.
const FRAMING: u64 = 1 << 20;
/// How much of a too-large upload is read (and thrown away) so that the
/// client, still sending, gets the 413 instead of a broken connection.
/// Larger declared uploads are refused before reading anything.
const DRAIN: u64 = 256 << 20;
/// The longest value of a text part (`purpose`, `expires_after[...]`).
const MAX_TEXT: usize = 1024;

/// The body limit of the upload route: none from axum; [`upload`] counts
/// the file's bytes itself (and answers 413 past the cap).
pub(super) fn upload_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::disable()
}

fn too_large(cap: u64) -> ApiError {
    ApiError::too_large(format!(
        "The file is larger than the {cap} bytes this server accepts (--max-upload-bytes)."
    ))
}

fn multipart_error(e: MultipartError, cap: u64) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(cap);
    }
    let mut err = ApiError::invalid(format!(
        "The multipart body cannot be read: {}",
        e.body_text()
    ));
    err.status = e.status();
    err
}

/// The longest file name accepted (a name longer than any file system
/// allows is a mistake, and it is echoed in every file object).
const MAX_FILENAME: usize = 255;

/// The uploaded file, written to the file store as it arrives; stored only
/// once the rest of the upload turned out valid (see [`upload`]).
struct Spooled {
    id: String,
    writer: Box<dyn FileWriter>,
    bytes: u64,
    filename: String,
    /// The file's first bytes, up to the end of its first request line
    /// (or [`HEAD`] bytes), for the checks of a `batch` upload.
    head: Vec<u8>,
}

/// How much of an upload is kept to check its first line.
const HEAD: usize = 16 << 20;

/// The start of `head` up to its first non-blank line's end, if it holds
/// one whole line (or the whole file, `complete`).
fn first_line(head: &[u8], complete: bool) -> Option<&[u8]> {
    let mut rest = head;
    loop {
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) if rest[..end].iter().all(u8::is_ascii_whitespace) => rest = &rest[end + 1..],
            Some(end) => return Some(&rest[..end]),
            None if complete => return Some(rest),
            None => return None,
        }
    }
}

/// OpenAI's check of a `batch` upload: the file has a request, and its
/// first one is a JSON object (the rest is judged when a batch reads it).
fn check_batch_file(head: &[u8], bytes: u64) -> Result<(), ApiError> {
    let refuse = |why: String| {
        ApiError::invalid_param(
            "file",
            format!(
                "Invalid file format for Batch API. {why} Expected .jsonl: one JSON request object per line."
            ),
        )
    };
    let complete = head.len() as u64 == bytes;
    match first_line(head, complete) {
        // Longer than the part kept: left to validation.
        None => Ok(()),
        Some(line) if line.iter().all(u8::is_ascii_whitespace) => {
            Err(refuse("The file is empty.".to_owned()))
        }
        Some(line) => {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            match serde_json::from_slice::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(_)) => Ok(()),
                Ok(_) => Err(refuse(
                    "The first line is JSON but not an object.".to_owned(),
                )),
                Err(e) => Err(refuse(format!("The first line is not JSON: {e}."))),
            }
        }
    }
}

async fn spool(
    state: &AppState,
    field: &mut axum::extract::multipart::Field<'_>,
) -> Result<Spooled, ApiError> {
    let cap = state.engine.cfg.max_upload_bytes;
    let filename = field.file_name().unwrap_or("upload.jsonl").to_owned();
    if filename.len() > MAX_FILENAME {
        return Err(ApiError::invalid_param(
            "file",
            format!(
                "The file name is {} bytes long; at most {MAX_FILENAME} are accepted.",
                filename.len()
            ),
        ));
    }
    let id = ids::new_id("file-", 24);
    let mut writer = state.engine.files.create(&id).await?;
    let mut bytes = 0u64;
    let (mut head, mut head_done) = (Vec::new(), false);
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, cap))? {
        bytes += chunk.len() as u64;
        if !head_done && head.len() < HEAD {
            let part = &chunk[..chunk.len().min(HEAD - head.len())];
            head.extend_from_slice(part);
            // Looked for again only when a line ended.
            head_done = part.contains(&b'\n') && first_line(&head, false).is_some();
        }
        if bytes > cap {
            // Read on (up to a bound), so the client hears the answer.
            while bytes <= cap.saturating_add(DRAIN) {
                match field.chunk().await {
                    Ok(Some(c)) => bytes += c.len() as u64,
                    _ => break,
                }
            }
            return Err(too_large(cap));
        }
        writer.write(chunk).await?;
    }
    Ok(Spooled {
        id,
        writer,
        bytes,
        filename,
        head,
    })
}

/// `POST /v1/files`.
pub(super) async fn upload(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<FileObject>, ApiError> {
    let cap = state.engine.cfg.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap.saturating_add(FRAMING).saturating_add(DRAIN)) {
        return Err(too_large(cap));
    }
    let mut multipart = multipart.map_err(|e| {
        ApiError::invalid(format!(
            "Expected a multipart/form-data body with the parts 'file' and 'purpose': {}",
            e.body_text()
        ))
    })?;
    let mut spooled = None;
    let (mut purpose, mut anchor, mut seconds) = (None, None, None);
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, cap))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let text = async |mut field: axum::extract::multipart::Field<'_>| {
            let mut value = Vec::new();
            while let Some(c) = field.chunk().await.map_err(|e| multipart_error(e, cap))? {
                value.extend_from_slice(&c);
                if value.len() > MAX_TEXT {
                    return Err(ApiError::invalid_param(
                        &name,
                        format!("The value of '{name}' is longer than {MAX_TEXT} bytes."),
                    ));
                }
            }
            String::from_utf8(value).map_err(|_| {
                ApiError::invalid_param(&name, format!("The value of '{name}' is not UTF-8."))
            })
        };
        match name.as_str() {
            // A second part would silently replace the first.
            "file" if spooled.is_some() => {
                return Err(ApiError::invalid_param(
                    "file",
                    "The upload has more than one 'file' part; send one file per upload.",
                ));
            }
            "file" => spooled = Some(spool(&state, &mut field).await?),
            "purpose" => purpose = Some(text(field).await?),
            "expires_after[anchor]" => anchor = Some(text(field).await?),
            "expires_after[seconds]" => seconds = Some(text(field).await?),
            other => {
                return Err(ApiError::invalid_param(
                    other,
                    format!("Unrecognized request argument supplied: '{other}'."),
                ));
            }
        }
    }
    let purpose = purpose.ok_or_else(|| {
        ApiError::invalid_param("purpose", "Missing required parameter: 'purpose'.")
    })?;
    if !PURPOSES.contains(&purpose.as_str()) {
        return Err(ApiError::invalid_param(
            "purpose",
            format!(
                "Invalid purpose '{purpose}': expected one of {}.",
                PURPOSES.join(", ")
            ),
        ));
    }
    let file = spooled
        .ok_or_else(|| ApiError::invalid_param("file", "Missing required parameter: 'file'."))?;
    if purpose == "batch" && !file.filename.ends_with(".jsonl") {
        return Err(ApiError::invalid_param(
            "file",
            "Invalid file format for Batch API. Must be .jsonl",
        ));
    }
    if purpose == "batch" {
        check_batch_file(&file.head, file.bytes)?;
    }
    let now = ids::now();
    let expires_at = match (anchor.as_deref(), seconds) {
        (None, None) => None,
        (Some("created_at"), Some(s)) => match s.trim().parse::<i64>() {
            Ok(s) if batchkit_core::params::EXPIRY_SECONDS.contains(&s) => Some(now + s),
            _ => {
                return Err(ApiError::invalid_param(
                    "expires_after[seconds]",
                    format!(
                        "Invalid 'expires_after[seconds]': expected an integer from 3600 to 2592000, got '{s}'."
                    ),
                ));
            }
        },
        (Some(a), Some(_)) if a != "created_at" => {
            return Err(ApiError::invalid_param(
                "expires_after[anchor]",
                format!("Invalid 'expires_after[anchor]' '{a}': the only anchor is 'created_at'."),
            ));
        }
        _ => {
            return Err(ApiError::invalid_param(
                "expires_after",
                "'expires_after' needs both 'anchor' and 'seconds'.",
            ));
        }
    };
    let record = FileRecord {
        id: file.id,
        tenant,
        bytes: file.bytes,
        created_at: now,
        expires_at,
        filename: file.filename,
        purpose,
    };
    file.writer.commit().await?;
    let r = record.clone();
    state.engine.store.insert_file(&r).await?;
    tracing::info!(file = %record.id, bytes = record.bytes, purpose = %record.purpose, "file uploaded");
    Ok(Json(record.to_wire()))
}

async fn find(state: &AppState, tenant: &str, id: &str) -> Result<FileRecord, ApiError> {
    let (t, i) = (tenant.to_owned(), id.to_owned());
    state
        .engine
        .store
        .file(&t, &i)
        .await?
        .ok_or_else(|| ApiError::not_found("file", id))
}

/// `GET /v1/files`.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    ApiQuery(q): ApiQuery<Params>,
) -> Result<Json<List<FileObject>>, ApiError> {
    let limit = limit(q.get("limit").map(String::as_str), 10_000, 10_000)?;
    let ascending = match q.get("order").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => {
            return Err(ApiError::invalid_param(
                "order",
                format!("Invalid 'order' '{o}': expected 'asc' or 'desc'."),
            ));
        }
    };
    let (purpose, after) = (q.get("purpose").cloned(), q.get("after").cloned());
    let page = Page {
        after: after.as_deref(),
        limit,
        ascending,
    };
    let (files, more) = state
        .engine
        .store
        .list_files(&tenant, purpose.as_deref(), &page)
        .await
        .map_err(list_error)?;
    let items = files.iter().map(FileRecord::to_wire).collect();
    Ok(Json(List::of(items, more, |f: &FileObject| &f.id)))
}

/// `GET /v1/files/{id}`.
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(find(&state, &tenant, &id).await?.to_wire()))
}

/// `GET /v1/files/{id}/content`, streamed from the store.
pub(super) async fn content(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let record = find(&state, &tenant, &id).await?;
    let file = state
        .engine
        .files
        .read(&record.id, None)
        .await
        .map_err(|e| ApiError::internal(format!("the content of {id} cannot be read: {e}")))?;
    let stream = ReaderStream::with_capacity(file, 1 << 16);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, record.bytes.to_string()),
            (header::CONTENT_DISPOSITION, attachment(&record.filename)),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `Content-Disposition` naming the file (RFC 6266): a quoted name where
/// it is plain ASCII, and the exact name percent-encoded (RFC 8187) beside
/// an ASCII stand-in where it is not.
fn attachment(name: &str) -> String {
    let plain = |c: char| (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ';
    if name.chars().all(plain) {
        return format!("attachment; filename=\"{name}\"");
    }
    let ascii: String = name
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// `DELETE /v1/files/{id}`.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    // As on OpenAI, a file a batch still reads can be deleted: it leaves
    // the API at once, and the batch keeps its bytes until it ends.
    if !state.engine.forget_file(&tenant, &id).await? {
        return Err(ApiError::not_found("file", &id));
    }
    tracing::info!(file = %id, "file deleted");
    Ok(Json(json!({"id": id, "object": "file", "deleted": true})))
}

#[cfg(test)]
mod tests {
    use super::attachment;

    #[test]
    fn batch_uploads_need_a_first_request_object() {
        let check = |text: &[u8]| super::check_batch_file(text, text.len() as u64);
        assert!(check(b"{\"custom_id\":\"a\"}\n{broken").is_ok());
        assert!(check(b"\n \r\n{\"a\":1}").is_ok(), "blank lines first");
        assert!(check(b"\xEF\xBB\xBF{\"a\":1}\r\n").is_ok(), "BOM and CRLF");
        for bad in [&b""[..], b"\n\n  ", b"{malformed json", b"[1]\n", b"hello"] {
            let e = check(bad).expect_err("refused");
            assert!(
                e.message.starts_with("Invalid file format for Batch API."),
                "{}",
                e.message
            );
        }
        // A first line longer than what is kept is left to validation.
        let long = b"{\"a\":\"xxxxxxxx";
        assert!(super::check_batch_file(long, 1 << 30).is_ok());
    }

    #[test]
    fn attachments_name_the_file_safely() {
        assert_eq!(
            attachment("batch input.jsonl"),
            "attachment; filename=\"batch input.jsonl\""
        );
        assert_eq!(
            attachment("r\u{e9}sum\u{e9} \"1\".jsonl"),
            "attachment; filename=\"r_sum_ _1_.jsonl\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.jsonl"
        );
        // A header value never carries a line break.
        assert!(!attachment("a\r\nSet-Cookie: x").contains('\n'));
    }
}
