//! The nginx role's routes: `GET /v1/roles/nginx/config` (the running render, its hash, the
//! last reload and its result, the last failure), `/records` and `/status` (the intake's
//! views), and their OpenAPI document.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::extract::State;
use axum::Json;
use hivemind_subscriptions::routes::{records_view, status_view};
use hivemind_subscriptions::{IntakeRecordsView, IntakeStatusView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::RoleState;

/// A time as the API shows it: milliseconds since the Unix epoch.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The nginx role's routes, for the OpenAPI document (mounted only on members running it).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(config_route, records_route, status_route),
    components(schemas(NginxConfigView, ReloadView, FailureView, IntakeRecordsView, IntakeStatusView)),
    tags((name = "nginx role", description = "On members with --roles nginx"))
)]
pub struct NginxApi;

/// The nginx role's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <NginxApi as utoipa::OpenApi>::openapi()
}

/// The render nginx serves now.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) text: String,
    pub(crate) hash: String,
    pub(crate) services: usize,
    pub(crate) at: SystemTime,
}

/// The last reload: when, whether nginx serves it (`error`: why not, in nginx's words where
/// its error log has them), how long from the render to nginx serving it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReloadView {
    pub at_unix_ms: u64,
    pub ok: bool,
    pub error: Option<String>,
    pub duration_ms: f64,
}

/// The last render that was not applied (template error with its line, `nginx -t`'s
/// complaint, a failed reload).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailureView {
    pub at_unix_ms: u64,
    pub error: String,
}

/// `GET /v1/roles/nginx/config`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NginxConfigView {
    /// The render nginx serves, confirmed (`null` before the first one).
    pub render: Option<String>,
    /// SHA-256 of `render` without its status block, hex: what the status listener answers.
    pub hash: Option<String>,
    pub services: usize,
    pub rendered_at_unix_ms: Option<u64>,
    pub last_reload: Option<ReloadView>,
    pub last_failure: Option<FailureView>,
    /// The managed nginx master's pid (`null` when none runs or nginx is not managed).
    pub nginx_pid: Option<u32>,
    pub renders: u64,
    pub reloads: u64,
    pub render_failures: u64,
    /// Reloads nginx did not carry out (also counted in `render_failures`).
    pub reload_failures: u64,
    /// The loopback status listener each render carries (`GET /hivemind-render` answers the
    /// hash nginx serves).
    pub status_listen: String,
}

/// The running render, its hash, the last reload and its result, the last failure.
#[utoipa::path(get, path = "/v1/roles/nginx/config", tag = "nginx role",
    operation_id = "nginx_config",
    responses((status = 200, description = "The running nginx config", body = NginxConfigView)))]
pub(crate) async fn config_route(State(shared): State<RoleState>) -> Json<NginxConfigView> {
    let s = &shared.state;
    let running = s.running.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let pid = s.pid.load(Ordering::Relaxed);
    Json(NginxConfigView {
        services: running.as_ref().map_or(0, |r| r.services),
        rendered_at_unix_ms: running.as_ref().map(|r| unix_ms(r.at)),
        hash: running.as_ref().map(|r| r.hash.clone()),
        render: running.map(|r| r.text),
        last_reload: s
            .last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        last_failure: s
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        nginx_pid: (pid != 0).then_some(pid),
        renders: s.renders.load(Ordering::Relaxed),
        reloads: s.reloads.load(Ordering::Relaxed),
        render_failures: s.failures.load(Ordering::Relaxed),
        reload_failures: s.reload_failures.load(Ordering::Relaxed),
        status_listen: shared.status.to_string(),
    })
}

/// The records this machine holds for the keygroups it serves, and its intake counters.
#[utoipa::path(get, path = "/v1/roles/nginx/records", tag = "nginx role",
    operation_id = "nginx_records",
    responses((status = 200, description = "The records held", body = IntakeRecordsView)))]
pub(crate) async fn records_route(State(shared): State<RoleState>) -> Json<IntakeRecordsView> {
    Json(records_view(&shared.intake))
}

/// Per served keygroup: whether this machine holds it (and its fence), which machine does
/// otherwise, and how many streams it holds for it.
#[utoipa::path(get, path = "/v1/roles/nginx/status", tag = "nginx role",
    operation_id = "nginx_status",
    responses((status = 200, description = "Where this machine stands per keygroup", body = IntakeStatusView)))]
pub(crate) async fn status_route(State(shared): State<RoleState>) -> Json<IntakeStatusView> {
    Json(status_view(&shared.intake))
}
