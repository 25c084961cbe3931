//! The control plane's HTTP surface: public JSON routes under `/v1/` ([`api`]) and internal
//! bincode routes under `/internal/v1/` for Raft RPC, forwarding and bootstrap ([`internal`]).
//! [`ApiError`] is the one mapping from errors to HTTP responses.

#[cfg(feature = "raft")]
pub mod api;
#[cfg(feature = "raft")]
pub mod coordination;
pub mod extract;
#[cfg(feature = "raft")]
pub mod internal;
#[cfg(feature = "raft")]
pub mod locks;
pub mod views;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::error::CpError;

pub use extract::{JsonBody, QueryParams};

/// All CP routes (public and internal), ready to be merged into the member's HTTP server.
#[cfg(feature = "raft")]
pub fn router(cp: std::sync::Arc<crate::ControlPlane>) -> axum::Router {
    api::routes()
        .merge(coordination::routes())
        .merge(locks::routes())
        .merge(internal::routes(cp.config().cluster_secret.clone()))
        .with_state(cp)
}

/// An HTTP error: `{"error":{"code":"...","message":"...", ...extra}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

impl From<CpError> for ApiError {
    fn from(e: CpError) -> Self {
        let status = match &e {
            CpError::NoQuorum { .. } | CpError::NotLeader { .. } | CpError::Fatal(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            CpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CpError::JoinElsewhere { .. } => StatusCode::MISDIRECTED_REQUEST,
            CpError::NotFound(_) => StatusCode::NOT_FOUND,
            CpError::Membership(_) => StatusCode::CONFLICT,
            CpError::BadToken | CpError::BadGossipKey | CpError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            CpError::Rejected(r) => match r.code() {
                "invalid" => StatusCode::BAD_REQUEST,
                "unknown_member" | "unknown_keygroup" | "unknown_policy" | "unknown_token"
                | "unknown_lease" => StatusCode::NOT_FOUND,
                "not_a_replica" => StatusCode::FORBIDDEN,
                _ => StatusCode::CONFLICT,
            },
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<crate::authority::Denied> for ApiError {
    fn from(denied: crate::authority::Denied) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, denied.code(), denied.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = self.extra;
        error.insert("code".into(), Value::String(self.code));
        error.insert("message".into(), Value::String(self.message));
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}
