//! The dns role's routes: `GET /v1/roles/dns/records` (the intake's records view and the
//! queries answered) and `/status` (the intake's status view), and their OpenAPI document.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use hivemind_subscriptions::routes::{records_view, status_view};
use hivemind_subscriptions::{
    ClaimState, HeldRecordView, IntakeRecordsView, IntakeStatusView, Position,
};

use crate::RoleState;

/// The dns role's routes, for the OpenAPI document (mounted only on members running it).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(records_route, status_route),
    components(schemas(DnsRecordsView, IntakeRecordsView, HeldRecordView, IntakeStatusView, Position, ClaimState, hivemind_common::records::Service)),
    tags((name = "dns role", description = "On members with --roles dns"))
)]
pub struct DnsApi;

/// The dns role's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <DnsApi as utoipa::OpenApi>::openapi()
}

/// `GET /v1/roles/dns/records`: the records held, the intake's counters, and the queries
/// answered.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DnsRecordsView {
    #[serde(flatten)]
    pub held: IntakeRecordsView,
    /// Queries answered, by response code.
    pub queries: BTreeMap<String, u64>,
}

/// The records this machine holds, its intake counters and the queries it answered.
#[utoipa::path(get, path = "/v1/roles/dns/records", tag = "dns role",
    operation_id = "dns_records",
    responses((status = 200, description = "The records held", body = DnsRecordsView)))]
pub(crate) async fn records_route(State(state): State<RoleState>) -> Json<DnsRecordsView> {
    Json(DnsRecordsView {
        held: records_view(&state.intake),
        queries: state.zone.queries.snapshot(),
    })
}

/// Per served keygroup: whether this machine holds it (and its fence), which machine does
/// otherwise, and how many streams it holds for it.
#[utoipa::path(get, path = "/v1/roles/dns/status", tag = "dns role",
    operation_id = "dns_status",
    responses((status = 200, description = "Where this machine stands per keygroup", body = IntakeStatusView)))]
pub(crate) async fn status_route(State(state): State<RoleState>) -> Json<IntakeStatusView> {
    Json(status_view(&state.intake))
}
