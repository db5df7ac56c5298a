//! What can go wrong talking to a service.

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error (after any retries).
    #[error("HTTP {status}: {message}{}", request_id.as_ref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
    Api {
        /// The HTTP status.
        status: u16,
        /// The service's `error.message` (or the body, if it has none).
        message: String,
        /// The service's `error.type`.
        kind: Option<String>,
        /// The service's `error.code`.
        code: Option<String>,
        /// The service's `error.param`.
        param: Option<String>,
        /// The `x-request-id` of the reply.
        request_id: Option<String>,
    },
    /// No answer came (after any retries).
    #[error("cannot reach {url}: {reason}")]
    Transport {
        /// What was asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from {url}: {reason}")]
    Decode {
        /// What was asked.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status of a service error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The text of an error chain (reqwest hides the cause of its errors).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cur = c.source();
    }
    s
}
