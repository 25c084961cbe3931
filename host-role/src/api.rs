//! The host role's own routes: its record, its services (`GET/PUT /v1/roles/host/services`,
//! the same fields as Consul's agent API), and the internal subscription stream that carries the
//! sealed record to consumers.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hivemind_common::api::ErrorBody;
use hivemind_common::records::{self, CheckStatus, Health, HostRecord, Service};

use crate::registration::{self, ServiceDef};
use crate::{RegisterError, RoleState};

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

/// A refused registration as its answer: 400 `invalid`, 404 `unknown_service`, 503
/// `store_failed`.
pub(crate) fn refused(e: RegisterError) -> Response {
    match e {
        RegisterError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid", m),
        e @ RegisterError::Unknown(_) => {
            error(StatusCode::NOT_FOUND, "unknown_service", e.to_string())
        }
        e @ RegisterError::Store(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_failed",
            e.to_string(),
        ),
    }
}

/// The host role's routes, for the OpenAPI document (mounted only on members running it).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(record_route, services_route, put_services),
    components(schemas(RecordView, Service, CheckStatus, Health, ServiceBody, CheckBody, ErrorBody)),
    tags((name = "host role", description = "On members with --roles host"))
)]
pub struct HostApi;

/// `GET /v1/roles/host/record`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RecordView {
    pub host: String,
    pub keygroups: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub addrs: Vec<std::net::IpAddr>,
    /// Each with its checks' statuses as published.
    pub services: Vec<Service>,
    /// Persisted; grows with every change.
    pub seq: u64,
    pub generation: u64,
}

/// A service as registered (the body of `PUT /v1/roles/host/services`, a list of these).
/// Keys also match in Consul's spelling (`Name`, `DeregisterCriticalServiceAfter`).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct ServiceBody {
    name: String,
    /// Unique on this host; default: the name (`<name>:udp` for UDP).
    id: Option<String>,
    port: u16,
    /// `tcp` (default) or `udp`.
    proto: Option<String>,
    tags: Option<Vec<String>>,
    meta: Option<std::collections::BTreeMap<String, String>>,
    /// An IP address, when the service does not listen on the host's.
    address: Option<String>,
    /// At most 8.
    checks: Option<Vec<CheckBody>>,
}

/// A health check: exactly one of `http`, `tcp` and `ttl`.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct CheckBody {
    /// Default `service:<service id>` (`service:<id>:<n>` with several checks).
    id: Option<String>,
    /// Default `Service '<name>' check`.
    name: Option<String>,
    /// A URL: 2xx is passing, 429 warning, anything else or no answer critical.
    http: Option<String>,
    /// Default GET.
    method: Option<String>,
    header: Option<std::collections::BTreeMap<String, Vec<String>>>,
    body: Option<String>,
    tls_skip_verify: Option<bool>,
    /// `host:port`: passing when a connect succeeds.
    tcp: Option<String>,
    /// Critical unless reported within it (`PUT /v1/agent/check/pass/{id}`).
    ttl: Option<String>,
    /// For http and tcp: at least 1s.
    interval: Option<String>,
    /// Default 2s.
    timeout: Option<String>,
    /// Deregister the service once this check has been critical this long (at least 1s).
    deregister_critical_after: Option<String>,
    success_before_passing: Option<u32>,
    failures_before_critical: Option<u32>,
    notes: Option<String>,
    /// The status it starts with (default critical).
    status: Option<Health>,
}

pub(crate) fn routes(shared: Arc<RoleState>) -> Router {
    Router::new()
        .route("/record", get(record_route))
        .route("/services", get(services_route).put(put_services))
        .with_state(shared)
}

/// This host's current record.
#[utoipa::path(get, path = "/v1/roles/host/record", tag = "host role",
    responses((status = 200, description = "The record published now", body = RecordView)))]
async fn record_route(State(shared): State<Arc<RoleState>>) -> Json<RecordView> {
    let r = shared.published.borrow().clone();
    Json(RecordView {
        host: r.host,
        keygroups: shared.keygroups.clone(),
        addrs: r.addrs,
        services: r.services,
        seq: r.seq,
        generation: r.generation,
    })
}

/// This host's services as registered (what a PUT of the same body keeps).
#[utoipa::path(get, path = "/v1/roles/host/services", tag = "host role",
    responses((status = 200, description = "The services", body = [ServiceBody])))]
async fn services_route(State(shared): State<Arc<RoleState>>) -> Json<Vec<serde_json::Value>> {
    Json(
        shared
            .services()
            .defs()
            .iter()
            .map(ServiceDef::to_json)
            .collect(),
    )
}

/// Replaces this host's services; subscribers get the new record at once.
#[utoipa::path(put, path = "/v1/roles/host/services", tag = "host role", request_body = [ServiceBody],
    responses((status = 200, description = "The record after the change", body = RecordView),
        (status = 400, description = "A bad service or check (invalid; the message names the field)", body = ErrorBody),
        (status = 503, description = "The services could not be persisted (store_failed)", body = ErrorBody)))]
async fn put_services(State(shared): State<Arc<RoleState>>, body: Bytes) -> Response {
    let defs = match registration::parse_services(&body) {
        Ok(defs) => defs,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid", message),
    };
    match shared.register(|_| Ok(defs)) {
        Ok(()) => record_route(State(shared)).await.into_response(),
        Err(e) => refused(e),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct SubscribeQuery {
    keygroup: String,
    /// The member the subscriber means to reach: an address reused by another member after a
    /// restart must not serve the old one's subscribers.
    member: Option<hivemind_common::MemberId>,
}

/// The subscription stream: frames of the sealed record, the current one first.
pub(crate) async fn subscribe(
    State(shared): State<Arc<RoleState>>,
    Query(q): Query<SubscribeQuery>,
) -> Response {
    let me = shared.published.borrow().member;
    if q.member.is_some_and(|m| m != me) {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_member",
            format!("this is member {me}, not the one asked for"),
        );
    }
    if !shared.keygroups.contains(&q.keygroup) {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_keygroup",
            format!("this host does not publish into {}", q.keygroup),
        );
    }
    if shared.secret(&q.keygroup).is_none() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_joined",
            format!("not a replica of {} yet", q.keygroup),
        );
    }
    let mut updates = shared.published.subscribe();
    updates.mark_changed();
    let keygroup = q.keygroup;
    let stream = futures::stream::unfold(
        (updates, shared, keygroup),
        |(mut updates, shared, keygroup)| async move {
            updates.changed().await.ok()?;
            let published = updates.borrow_and_update().clone();
            let (keygroup_version, secret) = shared.secret(&keygroup)?;
            let record = HostRecord {
                member: published.member,
                host: published.host,
                keygroup: keygroup.clone(),
                addrs: published.addrs,
                services: published.services,
                seq: published.seq,
                generation: published.generation,
                keygroup_version,
            };
            // Sealed with the secret as it is now (a rotation is picked up by the refresh).
            let sealed = records::seal(&secret, rand::random(), &record)?;
            let frame: Result<Bytes, Infallible> = Ok(Bytes::from(records::frame(&sealed)));
            Some((frame, (updates, shared, keygroup)))
        },
    );
    Body::from_stream(stream).into_response()
}
