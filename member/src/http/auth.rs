//! Who may call internal routes: members only, by the cluster secret and, on a TLS member, a
//! certificate from the cluster CA; who the caller is ([`Caller`], from the certificate's
//! identity) is left in the request for the control plane's rules
//! (`hivemind_control_plane::authority`). (Tokens on `/v1` routes, the admin token included,
//! are `acl`'s.)

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hivemind_common::secret::{satisfies, CLUSTER_SECRET_HEADER};
use hivemind_control_plane::authority::Caller;
use hivemind_control_plane::http::ApiError;
use hivemind_tls::Peer;

/// Where a client may send its token (besides `Authorization: Bearer`).
pub const TOKEN_HEADER: &str = "x-hivemind-token";
/// What Consul's clients send their token in.
pub const CONSUL_TOKEN_HEADER: &str = "x-consul-token";

/// Mutual TLS on internal routes (DESIGN.md §6e): on a TLS member, `/internal/*` answers only
/// connections that presented a certificate from the cluster CA; the public API takes any
/// HTTPS client (and its token). Every request carries its [`Caller`] on: the certificate's
/// identity on a TLS member, the shared secret's one trust domain otherwise.
pub async fn require_member_certificate(
    State(tls): State<bool>,
    mut request: Request,
    next: Next,
) -> Response {
    if !tls {
        request.extensions_mut().insert(Caller::SharedSecret);
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|info| info.0.clone());
    let member = peer.as_ref().is_some_and(|p| p.member_cert);
    request
        .extensions_mut()
        .insert(Caller::Certified(peer.and_then(|p| p.identity)));
    if request.uri().path().starts_with("/internal/") && !member {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "certificate_required",
            "internal routes need a client certificate from the cluster CA (mutual TLS)",
        )
        .into_response();
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
