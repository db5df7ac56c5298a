//! The HTTP API: routes assembled in one place, authentication, and the
//! extractors that turn every malformed request into the error envelope.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tower_http::trace::TraceLayer;

use crate::engine::Engine;
use crate::error::ApiError;

mod batches;
mod files;
pub mod listen;

/// What every handler can reach.
pub struct AppState {
    /// The engine (and through it the stores, settings and tenants).
    pub engine: Arc<Engine>,
}

/// The caller's tenant, set by authentication.
#[derive(Clone, Debug)]
pub struct Tenant(pub String);

pub use crate::tenants::tenant_of;

/// The tenant of a server with no keys.
pub const OPEN_TENANT: &str = "default";

/// The API's router.
pub fn router(engine: Arc<Engine>) -> Router {
    let state = Arc::new(AppState { engine });
    let api = Router::new()
        .route(
            "/v1/files",
            post(files::upload)
                .layer(files::upload_limit())
                .get(files::list),
        )
        .route("/v1/files/{id}", get(files::get).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{id}", get(batches::get))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(axum::extract::DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::map_response(request_id))
        .with_state(state)
}

/// Every answer carries an `x-request-id` (`req_...`), as OpenAI's do; the
/// SDKs show it as `_request_id`, and a user can quote it.
async fn request_id(mut response: Response) -> Response {
    let id = crate::ids::new_id("req_", 32);
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let tenants = state.engine.tenants.now();
    let tenant = if tenants.is_open() {
        OPEN_TENANT.to_owned()
    } else {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            None => {
                return Err(ApiError::unauthorized(
                    "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' (the SDKs do, from OPENAI_API_KEY).",
                ));
            }
            Some(k) => match tenants.by_key(k) {
                Some(t) => t.name.clone(),
                None => {
                    return Err(ApiError::unauthorized(
                        "Incorrect API key provided. Use one of the keys the server was started with (--api-key or --tenants).",
                    ));
                }
            },
        }
    };
    req.extensions_mut().insert(Tenant(tenant));
    Ok(next.run(req).await)
}

/// `GET /health`: 200 `ok`, or 503 `degraded` with the writes that fail.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let (ok, mut body) = state.engine.health.report();
    body["upstreams"] = state.engine.upstream_state();
    let status = match ok {
        true => axum::http::StatusCode::OK,
        false => axum::http::StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let counts = state.engine.store.count_by_status().await?;
    let body = state.engine.metrics.render(&counts);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

async fn no_route(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path())
}

async fn no_method(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    let mut e = ApiError::no_route(method.as_str(), uri.path());
    e.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e
}

/// A JSON body; a malformed one is a 4xx with the envelope.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > JSON_BODY_LIMIT as u64) {
            // Read what the client is still sending (up to a bound), so
            // that it hears the 413 instead of a reset connection.
            if declared.is_some_and(|n| n <= JSON_BODY_LIMIT as u64 + JSON_DRAIN) {
                drain(req.into_body(), JSON_BODY_LIMIT as u64 + JSON_DRAIN).await;
            }
            let mut err = ApiError::invalid(too_large_json());
            err.status = axum::http::StatusCode::PAYLOAD_TOO_LARGE;
            return Err(err);
        }
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => {
                let status = e.status();
                let message = match &e {
                    JsonRejection::MissingJsonContentType(_) => {
                        "Expected a JSON body with 'Content-Type: application/json'.".to_owned()
                    }
                    _ if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE => too_large_json(),
                    _ => format!("The body is not valid JSON: {}", e.body_text()),
                };
                let mut err = ApiError::invalid(message);
                err.status = status;
                Err(err)
            }
        }
    }
}

/// The largest JSON request body (axum's default body limit).
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// How much of a too-large JSON body is read and thrown away so that the
/// client gets its 413 (larger declared bodies are refused unread).
const JSON_DRAIN: u64 = 64 << 20;

fn too_large_json() -> String {
    format!("The request body is larger than the {JSON_BODY_LIMIT} bytes a JSON request may have.")
}

/// Read and drop up to `max` bytes of `body`.
async fn drain(mut body: axum::body::Body, max: u64) {
    use http_body::Body as _;
    let mut seen = 0u64;
    while seen <= max {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => break,
        }
    }
}

/// A path parameter; one that cannot be decoded (`%ff%fe` is not UTF-8)
/// is a 400 with the envelope, not axum's plain text.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| {
                let mut err =
                    ApiError::invalid(format!("The path cannot be read: {}", e.body_text()));
                err.status = e.status();
                err
            })
    }
}

/// Query parameters; a malformed query is a 400 with the envelope.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::invalid(e.body_text()))
    }
}

/// The `limit` of a list: a number in `1..=max`, or `default`.
fn limit(given: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(s) = given else { return Ok(default) };
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid_param(
            "limit",
            format!("Invalid 'limit': expected an integer from 1 to {max}, got '{s}'."),
        )),
    }
}

/// A store list error as the API answers it.
fn list_error(e: crate::store::ListError) -> ApiError {
    match e {
        crate::store::ListError::UnknownAfter(id) => ApiError::invalid_param(
            "after",
            format!("Invalid 'after': no object '{id}' to list after."),
        ),
        crate::store::ListError::Store(e) => e.into(),
    }
}

/// Query parameters as strings, checked one by one by the handlers.
type Params = HashMap<String, String>;
