//! Reading a request line's `custom_id`: the one reader that validation,
//! merge and `serve` share, so that every command agrees on a line's id.
//!
//! A plain id (no escapes, one `custom_id` key) is read by the byte
//! scanner; anything else by `serde_json`, which decodes escapes and words
//! the errors. Both read the same id from every line both can read (the
//! scanner's differential tests hold it to that).

use std::borrow::Cow;

use serde::Deserialize;

/// The `custom_id` of one request line (without its line ending), or why it
/// has none that can be read (not UTF-8, not a JSON object, no string
/// `custom_id`, the key twice), in `serde_json`'s words.
///
/// ```
/// use batchkit_core::custom_id;
///
/// let line = br#"{"custom_id":"req-1","method":"POST","url":"/v1/embeddings","body":{}}"#;
/// assert_eq!(custom_id::read(line).as_deref(), Ok("req-1"));
/// assert_eq!(custom_id::read(br#"{"custom_id":"a\u0062"}"#).as_deref(), Ok("ab"));
/// assert!(custom_id::read(b"{\"custom_id\":7}").is_err());
/// ```
pub fn read(line: &[u8]) -> Result<Cow<'_, str>, String> {
    match crate::scan::scan_request_id(line) {
        Some((id, end)) if end == line.len() => Ok(Cow::Borrowed(id)),
        _ => read_serde(line),
    }
}

/// [`read`] for a line already read once (while indexing): straight from
/// the bytes when the line starts with a plain `{"custom_id":"…"`, as
/// generated files do, without scanning the rest of the line.
pub(crate) fn read_known(line: &[u8]) -> Result<Cow<'_, str>, String> {
    const PREFIX: &[u8] = b"{\"custom_id\":\"";
    if let Some(rest) = line.strip_prefix(PREFIX) {
        if let Some(end) = memchr::memchr2(b'"', b'\\', rest) {
            if rest[end] == b'"' {
                if let Ok(id) = simdutf8::basic::from_utf8(&rest[..end]) {
                    return Ok(Cow::Borrowed(id));
                }
            }
        }
    }
    read_serde(line)
}

/// [`read`] by `serde_json` alone: the reference, and the reader of the
/// lines the scanner declines.
pub(crate) fn read_serde(line: &[u8]) -> Result<Cow<'_, str>, String> {
    #[derive(Deserialize)]
    struct RequestId<'a> {
        #[serde(borrow)]
        custom_id: Cow<'a, str>,
    }
    let r: RequestId<'_> = serde_json::from_str(utf8(line)?).map_err(|e| e.to_string())?;
    Ok(r.custom_id)
}

/// The line as text, or what is wrong with its UTF-8.
pub(crate) fn utf8(line: &[u8]) -> Result<&str, String> {
    simdutf8::basic::from_utf8(line).map_err(|_| {
        let e = std::str::from_utf8(line).err();
        format!(
            "not UTF-8: {}",
            e.map_or_else(String::new, |e| e.to_string())
        )
    })
}
