//! The one place that knows the API's error envelope:
//! `{"error":{"message","type","param","code"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What is wrong and how to fix it.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`, ...
    pub kind: &'static str,
    /// The parameter at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code, if there is one.
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    /// 400: the request is wrong.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 about one parameter.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::invalid(message).param(param)
    }

    /// 400: a parameter is absent (`missing_required_parameter`).
    pub fn missing(param: &str) -> ApiError {
        ApiError::invalid_param(param, format!("Missing required parameter: '{param}'."))
            .code("missing_required_parameter")
    }

    /// 400: a value outside the set a parameter takes (`invalid_value`), in
    /// OpenAI's words: "Invalid value: 'x'. Supported values are: 'a' and 'b'."
    pub fn invalid_value(param: &str, value: &str, supported: &[&str]) -> ApiError {
        let quoted: Vec<String> = supported.iter().map(|s| format!("'{s}'")).collect();
        let list = match quoted.as_slice() {
            [] => String::new(),
            [one] => one.clone(),
            [rest @ .., last] if rest.len() == 1 => format!("{} and {last}", rest[0]),
            [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
        };
        let supported = if supported.len() == 1 {
            format!("Supported values: {list}.")
        } else {
            format!("Supported values are: {list}.")
        };
        ApiError::invalid_param(param, format!("Invalid value: '{value}'. {supported}"))
            .code("invalid_value")
    }

    /// 400: a parameter of the wrong JSON type (`invalid_type`), in OpenAI's
    /// words: "Invalid type for 'p': expected a string, but got an array
    /// instead."
    pub fn invalid_type(param: &str, expected: &str, got: &str) -> ApiError {
        ApiError::invalid_param(
            param,
            format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
        )
        .code("invalid_type")
    }

    /// 404: no such object (also for another tenant's objects): "No batch
    /// found with id '...'".
    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No {what} found with id '{id}': not found for this API key."),
        )
        .param("id")
    }

    /// 404 for a path the API does not have.
    pub fn no_route(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {path})"),
        )
    }

    /// 401: a missing or wrong API key.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .code("invalid_api_key")
    }

    /// 409: the object is not in a state that allows this.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "invalid_request_error", message)
    }

    /// 429: the caller is over one of its limits (the SDKs retry it with
    /// backoff).
    pub fn too_many(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            message,
        )
        .code("rate_limit_exceeded")
    }

    /// 413: the upload is larger than the server takes.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            message,
        )
        .code("file_too_large")
    }

    /// 500: a fault of the server's own (logged; the client may retry).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// With the parameter at fault.
    pub fn param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_owned());
        self
    }

    /// With a machine-readable code.
    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        }
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        // The SDKs retry 409s unless told not to: a state conflict does not
        // go away by asking again.
        if self.status == StatusCode::CONFLICT {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::internal(format!("the job store failed: {e}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        ApiError::internal(format!("the file store failed: {e}"))
    }
}
