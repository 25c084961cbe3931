//! Consul's agent API on host members (DESIGN.md §6g), so Consul client libraries register
//! services and report TTL checks unmodified: `PUT /v1/agent/service/register`,
//! `PUT /v1/agent/service/deregister/{id}`, `GET /v1/agent/services`, `GET /v1/agent/checks`,
//! `PUT /v1/agent/check/pass|warn|fail/{id}?note=` and `PUT /v1/agent/check/update/{id}`.
//! Bodies take Consul's fields in any case ([`crate::registration`]); updates are PUT only, as in
//! Consul 1.x (a GET is 405). Answers are Consul's shapes; errors are hivemind's JSON error body
//! with a message naming the field.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use hivemind_common::api::{ErrorBody, CONSUL_DATACENTER};
use hivemind_common::records::Health;
use serde_json::{json, Map, Value};

use crate::api::{error, refused};
use crate::registration::{parse_service, CheckKind};
use crate::services::ReportError;
use crate::{RegisterError, RoleState};

/// The agent API's routes, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(register, deregister, services, checks, pass, warn, fail, update),
    components(schemas(ErrorBody)),
    tags((name = "consul agent", description = "Consul's agent API, on members with --roles host"))
)]
pub struct AgentApi;

pub(crate) fn routes(shared: Arc<RoleState>) -> Router {
    Router::new()
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{id}", put(deregister))
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/check/pass/{id}", put(pass))
        .route("/v1/agent/check/warn/{id}", put(warn))
        .route("/v1/agent/check/fail/{id}", put(fail))
        .route("/v1/agent/check/update/{id}", put(update))
        .with_state(shared)
}

/// Registers a service, or replaces the one with its ID (its checks keep their statuses).
#[utoipa::path(put, path = "/v1/agent/service/register", tag = "consul agent", operation_id = "agent_service_register",
    request_body(content = Object, description = "Consul's service definition: Name, ID, Tags, Address, Port, Meta, Check, Checks"),
    params(("replace-existing-checks" = Option<bool>, Query, description = "Accepted; the checks given always replace the service's")),
    responses((status = 200, description = "Registered"),
        (status = 400, description = "A bad field (invalid)", body = ErrorBody),
        (status = 503, description = "Not persisted (store_failed)", body = ErrorBody)))]
async fn register(State(shared): State<Arc<RoleState>>, body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", format!("body: {e}")),
    };
    let def = match parse_service(&value, "Service") {
        Ok(def) => def,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid", m),
    };
    match shared.register(|s| s.with_registered(def).map_err(RegisterError::Invalid)) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => refused(e),
    }
}

/// Deregisters a service and its checks.
#[utoipa::path(put, path = "/v1/agent/service/deregister/{id}", tag = "consul agent", operation_id = "agent_service_deregister",
    params(("id" = String, Path, description = "The service ID")),
    responses((status = 200, description = "Deregistered"),
        (status = 404, description = "No such service (unknown_service)", body = ErrorBody)))]
async fn deregister(State(shared): State<Arc<RoleState>>, Path(id): Path<String>) -> Response {
    let result = shared.register(|s| {
        s.without(&id)
            .ok_or_else(|| RegisterError::Unknown(id.clone()))
    });
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => refused(e),
    }
}

/// This host's services, keyed by service ID.
#[utoipa::path(get, path = "/v1/agent/services", tag = "consul agent", operation_id = "agent_services",
    responses((status = 200, description = "`{ID: {ID, Service, Tags, Meta, Port, Address, Weights, EnableTagOverride, Datacenter}}`", body = Object)))]
async fn services(State(shared): State<Arc<RoleState>>) -> Json<Map<String, Value>> {
    let services = shared.services();
    Json(
        services
            .defs()
            .iter()
            .map(|s| {
                let entry = json!({
                    "ID": s.id,
                    "Service": s.name,
                    "Tags": s.tags,
                    "Meta": s.meta,
                    "Port": s.port,
                    "Address": s.address.map(|a| a.to_string()).unwrap_or_default(),
                    "TaggedAddresses": {},
                    "Weights": {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": s.enable_tag_override,
                    "Datacenter": CONSUL_DATACENTER,
                });
                (s.id.clone(), entry)
            })
            .collect(),
    )
}

/// This host's checks, keyed by check ID, with their latest output.
#[utoipa::path(get, path = "/v1/agent/checks", tag = "consul agent", operation_id = "agent_checks",
    responses((status = 200, description = "`{CheckID: {Node, CheckID, Name, Status, Notes, Output, ServiceID, ServiceName, ServiceTags, Type}}`", body = Object)))]
async fn checks(State(shared): State<Arc<RoleState>>) -> Json<Map<String, Value>> {
    let services = shared.services();
    Json(
        services
            .checks()
            .map(|(service, check, state)| {
                let mut entry = json!({
                    "Node": shared.node,
                    "CheckID": check.id,
                    "Name": check.name,
                    "Status": state.status().as_str(),
                    "Notes": check.notes,
                    "Output": state.output(),
                    "ServiceID": service.id,
                    "ServiceName": service.name,
                    "ServiceTags": service.tags,
                    "Type": check.kind.type_name(),
                    "Timeout": hivemind_common::duration::format(check.timeout),
                });
                match &check.kind {
                    CheckKind::Ttl { ttl } => {
                        entry["TTL"] = hivemind_common::duration::format(*ttl).into();
                    }
                    kind => {
                        let interval = kind.interval().unwrap_or_default();
                        entry["Interval"] = hivemind_common::duration::format(interval).into();
                    }
                }
                (check.id.clone(), entry)
            })
            .collect(),
    )
}

#[derive(serde::Deserialize)]
struct Note {
    note: Option<String>,
}

fn report(shared: &RoleState, id: &str, status: Health, note: String) -> Response {
    match shared.report(id, status, note) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e @ ReportError::Unknown(_)) => {
            error(StatusCode::BAD_REQUEST, "unknown_check", e.to_string())
        }
        Err(e @ ReportError::NotTtl(_)) => error(StatusCode::BAD_REQUEST, "not_ttl", e.to_string()),
    }
}

/// Marks a TTL check passing (`?note=` becomes its output) and restarts its TTL.
#[utoipa::path(put, path = "/v1/agent/check/pass/{id}", tag = "consul agent", operation_id = "agent_check_pass",
    params(("id" = String, Path, description = "The check ID"), ("note" = Option<String>, Query, description = "Its output")),
    responses((status = 200, description = "Reported"),
        (status = 400, description = "No such check (unknown_check) or not a TTL check (not_ttl)", body = ErrorBody)))]
async fn pass(
    State(shared): State<Arc<RoleState>>,
    Path(id): Path<String>,
    Query(q): Query<Note>,
) -> Response {
    report(&shared, &id, Health::Passing, q.note.unwrap_or_default())
}

/// Marks a TTL check warning.
#[utoipa::path(put, path = "/v1/agent/check/warn/{id}", tag = "consul agent", operation_id = "agent_check_warn",
    params(("id" = String, Path, description = "The check ID"), ("note" = Option<String>, Query, description = "Its output")),
    responses((status = 200, description = "Reported"),
        (status = 400, description = "No such check (unknown_check) or not a TTL check (not_ttl)", body = ErrorBody)))]
async fn warn(
    State(shared): State<Arc<RoleState>>,
    Path(id): Path<String>,
    Query(q): Query<Note>,
) -> Response {
    report(&shared, &id, Health::Warning, q.note.unwrap_or_default())
}

/// Marks a TTL check critical.
#[utoipa::path(put, path = "/v1/agent/check/fail/{id}", tag = "consul agent", operation_id = "agent_check_fail",
    params(("id" = String, Path, description = "The check ID"), ("note" = Option<String>, Query, description = "Its output")),
    responses((status = 200, description = "Reported"),
        (status = 400, description = "No such check (unknown_check) or not a TTL check (not_ttl)", body = ErrorBody)))]
async fn fail(
    State(shared): State<Arc<RoleState>>,
    Path(id): Path<String>,
    Query(q): Query<Note>,
) -> Response {
    report(&shared, &id, Health::Critical, q.note.unwrap_or_default())
}

/// Sets a TTL check's status and output: `{"Status": "passing"|"warning"|"critical", "Output": "..."}`.
#[utoipa::path(put, path = "/v1/agent/check/update/{id}", tag = "consul agent", operation_id = "agent_check_update",
    params(("id" = String, Path, description = "The check ID")),
    request_body(content = Object, description = "`{Status, Output}`"),
    responses((status = 200, description = "Reported"),
        (status = 400, description = "A bad Status (invalid), no such check (unknown_check) or not a TTL check (not_ttl)", body = ErrorBody)))]
async fn update(
    State(shared): State<Arc<RoleState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Map<String, Value>>(&body)
        .map_err(|e| format!("body: {e}"))
        .and_then(|map| {
            let field = |name: &str| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name));
            if let Some((key, _)) = map
                .keys()
                .find(|k| !k.eq_ignore_ascii_case("status") && !k.eq_ignore_ascii_case("output"))
                .map(|k| (k, ()))
            {
                return Err(format!("{key}: unknown field (give Status and Output)"));
            }
            let status = match field("status") {
                Some((_, Value::String(s))) => Health::parse(s).ok_or_else(|| {
                    format!("Status: must be passing, warning or critical, not {s:?}")
                })?,
                Some(_) => return Err("Status: must be a string".into()),
                None => return Err("Status: missing".into()),
            };
            let output = match field("output") {
                Some((_, Value::String(s))) => s.clone(),
                None => String::new(),
                Some(_) => return Err("Output: must be a string".into()),
            };
            Ok((status, output))
        });
    match parsed {
        Ok((status, output)) => report(&shared, &id, status, output),
        Err(m) => error(StatusCode::BAD_REQUEST, "invalid", m),
    }
}
