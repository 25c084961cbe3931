//! The backup ledger on every member (DESIGN.md §6d): `GET /v1/backup/spaces` and
//! `GET /v1/backup/snapshots?owner=NAME`, so that `hivemind backup restore --key FILE --owner
//! NAME` on a fresh machine finds a snapshot's manifest through any member, also one without
//! the backup role. Records carry no secret: chunk ids and sealed bytes only.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use hivemind_backup_role::SpaceView;
use hivemind_common::api::ErrorBody;
use hivemind_control_plane::http::extract::QueryParams;
use hivemind_control_plane::http::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::Agent;

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(spaces, snapshots),
    components(schemas(SnapshotRecordView, SpaceView)),
    tags((name = "backup", description = "The backup ledger, on every member"))
)]
pub struct BackupLedgerApi;

pub(crate) fn routes(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/backup/spaces", get(spaces))
        .route("/v1/backup/snapshots", get(snapshots))
        .with_state(agent)
}

/// A snapshot record as the registry holds it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotRecordView {
    pub id: String,
    pub owner: String,
    pub time_ms: u64,
    pub files: u64,
    pub bytes: u64,
    /// The sealed manifest's chunk ids (hex), in order.
    pub manifest: Vec<String>,
    /// The backed-up paths, sealed with the owner key (base64).
    pub sealed_paths: String,
}

/// Every space: capacity, stored and reserved bytes, and its member's state as this member sees
/// it (`alive`, `suspect`, `failed`, `left`).
#[utoipa::path(get, path = "/v1/backup/spaces", tag = "backup", operation_id = "backup_ledger_spaces",
    responses((status = 200, body = [SpaceView]), (status = 503, body = ErrorBody)))]
async fn spaces(State(agent): State<Arc<Agent>>) -> Result<Json<Vec<SpaceView>>, ApiError> {
    let registry = crate::http::member_api::registry(&agent).await?;
    let swim_view = agent.gossip.view.borrow().clone();
    let record = |id| registry.members.iter().find(|m| m.info.id == id);
    Ok(Json(
        registry
            .backup
            .spaces
            .iter()
            .map(|(id, r)| SpaceView {
                member: id.to_string(),
                name: record(*id).map(|m| m.info.name.clone()).unwrap_or_default(),
                state: record(*id)
                    .map_or("left", |m| {
                        crate::http::member_api::seen_state(&agent, &swim_view, m)
                    })
                    .to_string(),
                capacity: r.capacity,
                stored: r.stored,
                reserved: r.reserved,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerQuery {
    owner: Option<String>,
}

/// The snapshot records (of one owner with `?owner=`), oldest first.
#[utoipa::path(get, path = "/v1/backup/snapshots", tag = "backup", operation_id = "backup_ledger_snapshots",
    params(("owner" = Option<String>, Query, description = "Only this owner's (its member name)")),
    responses((status = 200, body = [SnapshotRecordView]), (status = 503, body = ErrorBody)))]
async fn snapshots(
    State(agent): State<Arc<Agent>>,
    QueryParams(q): QueryParams<OwnerQuery>,
) -> Result<Json<Vec<SnapshotRecordView>>, ApiError> {
    let registry = crate::http::member_api::registry(&agent).await?;
    let mut records: Vec<SnapshotRecordView> = registry
        .backup
        .snapshots
        .iter()
        .filter(|r| q.owner.as_ref().is_none_or(|o| *o == r.owner))
        .map(|r| SnapshotRecordView {
            id: r.id.clone(),
            owner: r.owner.clone(),
            time_ms: r.time_ms,
            files: r.files,
            bytes: r.bytes,
            manifest: r.manifest.iter().map(|c| c.hex()).collect(),
            sealed_paths: base64::engine::general_purpose::STANDARD.encode(&r.sealed_paths),
        })
        .collect();
    records.sort_by_key(|r| r.time_ms);
    Ok(Json(records))
}
