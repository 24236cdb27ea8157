//! Errors as every client expects them: a 4xx or 5xx status and a JSON body
//! `{"error": "...", "error_type": "..."}` that names what was wrong (which field, which
//! document), in text-embeddings-inference's shape (its `error_type` values, PascalCase).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A request that cannot be answered, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub error_type: &'static str,
}

impl ApiError {
    fn new(status: StatusCode, error_type: &'static str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            error_type,
        }
    }

    /// A field is missing, of the wrong type, or out of range (422).
    pub fn validation(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation", error)
    }

    /// Nothing to rank (400).
    pub fn empty(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Empty", error)
    }

    /// The body is not JSON (400).
    pub fn malformed(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Validation", error)
    }

    /// Too many requests at once (429).
    pub fn overloaded(error: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "Overloaded", error)
    }

    /// The model is not ready, or the device failed (503).
    pub fn unhealthy(error: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Unhealthy", error)
    }

    /// The model could not judge (424, as text-embeddings-inference answers).
    pub fn backend(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FAILED_DEPENDENCY, "Backend", error)
    }

    /// No or a wrong API key (401).
    pub fn unauthorized(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", error)
    }

    /// A request for a host name this server does not answer to, or a file outside the
    /// folders it may read (403).
    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", error)
    }

    /// The body or an image is over its limit (413).
    pub fn too_large(error: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", error)
    }

    /// The body is not sent as JSON (415).
    pub fn not_json(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Validation", error)
    }

    /// No such route (404).
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "error_type": self.error_type });
        (self.status, axum::Json(body)).into_response()
    }
}
