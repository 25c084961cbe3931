//! The admin token: when `--admin-token` is set, every `/v1/*` request must carry it as
//! `Authorization: Bearer T`, `X-Hivemind-Token: T` or (for Consul clients) `X-Consul-Token: T`;
//! otherwise 401 `unauthorized`. Internal routes take calls from members only: the cluster secret
//! and, on a TLS member, a certificate from the cluster CA.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hivemind_common::secret::{constant_time_eq, satisfies, CLUSTER_SECRET_HEADER};
use hivemind_control_plane::http::ApiError;
use hivemind_tls::Peer;

pub const TOKEN_HEADER: &str = "x-hivemind-token";
/// What Consul's clients send their token in.
pub const CONSUL_TOKEN_HEADER: &str = "x-consul-token";

/// Whether `headers` carry `token` (sans-IO: the middleware only wraps this).
pub fn carries_token(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let direct = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let consul = headers
        .get(CONSUL_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    [bearer, direct, consul]
        .into_iter()
        .flatten()
        .any(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

/// Middleware guarding `/v1/*` with the admin token (internal routes have their own secret).
pub async fn require_admin_token(token: Option<String>, request: Request, next: Next) -> Response {
    if let Some(token) = token {
        if request.uri().path().starts_with("/v1/") && !carries_token(request.headers(), &token) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this member requires the admin token (Authorization: Bearer T or X-Hivemind-Token)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Mutual TLS on internal routes (DESIGN.md §6e): on a TLS member, `/internal/*` answers only
/// connections that presented a certificate from the cluster CA; the public API takes any
/// HTTPS client (and its token).
pub async fn require_member_certificate(
    State(tls): State<bool>,
    request: Request,
    next: Next,
) -> Response {
    if tls && request.uri().path().starts_with("/internal/") {
        let member = request
            .extensions()
            .get::<ConnectInfo<Peer>>()
            .is_some_and(|info| info.0.member_cert);
        if !member {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "certificate_required",
                "internal routes need a client certificate from the cluster CA (mutual TLS)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Middleware guarding a member's own internal routes (role streams) with the cluster secret,
/// as the control plane's internal routes are.
pub async fn require_cluster_secret(
    secret: Option<String>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(CLUSTER_SECRET_HEADER)
        .map(|v| v.as_bytes());
    if !satisfies(secret.as_deref(), given) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_cluster_secret",
            "internal route needs the cluster secret",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn token_is_accepted_in_either_header_and_only_exactly() {
        let mut h = HeaderMap::new();
        assert!(!carries_token(&h, "s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(carries_token(&h, "s3cret"));
        assert!(!carries_token(&h, "s3cre"));
        let mut h = HeaderMap::new();
        h.insert(TOKEN_HEADER, HeaderValue::from_static("s3cret"));
        assert!(carries_token(&h, "s3cret"));
        h.insert(TOKEN_HEADER, HeaderValue::from_static("s3cret2"));
        assert!(!carries_token(&h, "s3cret"));
        let mut h = HeaderMap::new();
        h.insert(CONSUL_TOKEN_HEADER, HeaderValue::from_static("s3cret"));
        assert!(carries_token(&h, "s3cret"), "a Consul client's header");
    }
}
