//! The backup role's routes (DESIGN.md §6d), public under `/v1/roles/backup/` (admin token):
//! `POST /run`, `GET /snapshots`, `DELETE /snapshots/{id}`, `POST /restore`, `POST /check`, `GET /status`, and a space's `GET /chunks/{owner}[/{id}]`; internal under
//! `/internal/v1/roles/backup/` (cluster secret): `POST /upload`, `POST /heartbeat` and the
//! same chunk reads.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hivemind_common::api::ErrorBody;
use hivemind_common::backup::ChunkId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::owner::{CheckView, OwnerError, RunView};
use crate::restore::{rfc3339, RestoreError, RestoreView};
use crate::space::SpaceError;
use crate::wire::{parse_upload, Heartbeat, HeartbeatAnswer, UploadAnswer};
use crate::RoleState;

/// The backup role's routes, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(run_route, snapshots_route, forget_route, restore_route, check_route, status_route),
    components(schemas(ErrorBody, crate::progress::ProgressView, RunView, RunRequest, SnapshotView, RestoreRequest, RestoreView, SpaceView, CheckRequest, CheckView, BackupStatusView)),
    tags((name = "backup role", description = "On members with --roles backup"))
)]
pub struct BackupApi;

pub fn openapi() -> utoipa::openapi::OpenApi {
    <BackupApi as utoipa::OpenApi>::openapi()
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

fn owner_error(e: OwnerError) -> Response {
    let (status, code) = match &e {
        OwnerError::BadPath(_) | OwnerError::NoPaths => (StatusCode::BAD_REQUEST, "bad_path"),
        OwnerError::Failed(_) => (StatusCode::CONFLICT, "backup_failed"),
        OwnerError::NoSnapshot(_) => (StatusCode::NOT_FOUND, "unknown_snapshot"),
        OwnerError::Restore(RestoreError::WrongKey(_)) => (StatusCode::BAD_REQUEST, "wrong_key"),
        OwnerError::Restore(RestoreError::NoSuchPath { .. }) => {
            (StatusCode::NOT_FOUND, "unknown_path")
        }
        OwnerError::Restore(RestoreError::Io { .. }) => (StatusCode::BAD_REQUEST, "bad_target"),
        OwnerError::Restore(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        OwnerError::Cp(e) if e.code == "no_quorum" => {
            (StatusCode::SERVICE_UNAVAILABLE, "no_quorum")
        }
        OwnerError::Cp(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    error_response(status, code, &e.to_string())
}

/// A JSON body with or without `Content-Type` (the CLI sends none); empty means `T::default()`.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, Box<Response>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("body: {e}"),
        ))
    })
}

fn no_owner() -> Response {
    error_response(
        StatusCode::CONFLICT,
        "not_an_owner",
        "this member has no owner key loaded (see the member's log)",
    )
}

fn space_error(e: SpaceError) -> Response {
    let (status, code) = match &e {
        SpaceError::BadOwner(_) => (StatusCode::BAD_REQUEST, "invalid"),
        SpaceError::Refused(_) => (StatusCode::CONFLICT, "reservation_refused"),
        SpaceError::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
        SpaceError::NoChunk(_) => (StatusCode::NOT_FOUND, "unknown_chunk"),
        SpaceError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
    };
    error_response(status, code, &e.to_string())
}

fn no_space() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no_space",
        "this member offers no backup space (--backup-space)",
    )
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Directories to back up instead of the member's `--backup-path`.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub paths: Vec<PathBuf>,
}

/// Takes a snapshot now.
#[utoipa::path(post, path = "/v1/roles/backup/run", tag = "backup role", operation_id = "backup_run",
    request_body = RunRequest,
    responses((status = 200, body = RunView), (status = 400, description = "bad_path", body = ErrorBody),
              (status = 409, description = "backup_failed (also in the feed), not_an_owner", body = ErrorBody),
              (status = 503, description = "no control plane", body = ErrorBody)))]
pub(crate) async fn run_route(State(s): State<RoleState>, bytes: Bytes) -> Response {
    let Some(owner) = s.owner.clone() else {
        return no_owner();
    };
    let req: RunRequest = match body(&bytes) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let paths = Some(req.paths).filter(|p| !p.is_empty());
    match owner.run(paths).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => owner_error(e),
    }
}

/// A snapshot as `backup snapshots` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotView {
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub paths: Vec<String>,
    pub files: u64,
    pub bytes: u64,
}

/// This owner's snapshots, newest last.
#[utoipa::path(get, path = "/v1/roles/backup/snapshots", tag = "backup role",
    operation_id = "backup_snapshots", responses((status = 200, body = [SnapshotView]),
        (status = 409, description = "not_an_owner", body = ErrorBody),
        (status = 503, description = "no control plane", body = ErrorBody)))]
pub(crate) async fn snapshots_route(State(s): State<RoleState>) -> Response {
    let Some(owner) = s.owner.clone() else {
        return no_owner();
    };
    match owner.records().await {
        Ok(records) => Json(
            records
                .iter()
                .map(|r| SnapshotView {
                    id: r.id.clone(),
                    time: rfc3339(r.time_ms),
                    paths: crate::owner::Owner::paths_of(&owner.key, r).unwrap_or_default(),
                    files: r.files,
                    bytes: r.bytes,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => owner_error(e),
    }
}

/// Forgets a snapshot; chunks no other snapshot references are dropped at the next heartbeat.
#[utoipa::path(delete, path = "/v1/roles/backup/snapshots/{id}", tag = "backup role",
    operation_id = "backup_forget", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "unknown_snapshot", body = ErrorBody),
        (status = 409, description = "not_an_owner", body = ErrorBody),
        (status = 503, description = "no control plane", body = ErrorBody)))]
pub(crate) async fn forget_route(State(s): State<RoleState>, Path(id): Path<String>) -> Response {
    let Some(owner) = s.owner.clone() else {
        return no_owner();
    };
    match owner.forget(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => owner_error(e),
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub snapshot: String,
    /// The directory to restore into (on this member's machine).
    #[schema(value_type = String)]
    pub to: PathBuf,
    /// Only what lies at or below this original path.
    #[schema(value_type = Option<String>)]
    pub path: Option<PathBuf>,
}

/// Restores a snapshot under `to` (the original absolute paths below it).
#[utoipa::path(post, path = "/v1/roles/backup/restore", tag = "backup role",
    operation_id = "backup_restore", request_body = RestoreRequest,
    responses((status = 200, body = RestoreView),
        (status = 400, description = "invalid, wrong_key, bad_target", body = ErrorBody),
        (status = 404, description = "unknown_snapshot or unknown_path", body = ErrorBody),
        (status = 409, description = "not_an_owner", body = ErrorBody),
        (status = 503, description = "a chunk on no reachable space, no control plane", body = ErrorBody)))]
pub(crate) async fn restore_route(State(s): State<RoleState>, bytes: Bytes) -> Response {
    let Some(owner) = s.owner.clone() else {
        return no_owner();
    };
    let req: RestoreRequest = match body(&bytes) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    if req.snapshot.is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "invalid", "snapshot: required");
    }
    if !req.to.is_absolute() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_target",
            "to: must be an absolute path",
        );
    }
    match owner
        .restore(&req.snapshot, &req.to, req.path.as_deref())
        .await
    {
        Ok(view) => Json(view).into_response(),
        Err(e) => owner_error(e),
    }
}

/// A space as `backup spaces` lists it (bytes).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SpaceView {
    /// 16 hex digits.
    pub member: String,
    pub name: String,
    /// The member's state: `alive`, `suspect`, `failed` or `left` (copies on a failed or
    /// departed space do not count toward R).
    pub state: String,
    pub capacity: u64,
    pub stored: u64,
    pub reserved: u64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Share of the chunks to read back and verify (0–100).
    #[serde(default)]
    pub read_data: u8,
}

/// Heartbeats every space, repairs to R copies, and reads back a share of the chunks.
#[utoipa::path(post, path = "/v1/roles/backup/check", tag = "backup role",
    operation_id = "backup_check", request_body = CheckRequest,
    responses((status = 200, body = CheckView), (status = 400, description = "invalid", body = ErrorBody),
        (status = 409, description = "not_an_owner, backup_failed", body = ErrorBody),
        (status = 503, description = "no control plane", body = ErrorBody)))]
pub(crate) async fn check_route(State(s): State<RoleState>, bytes: Bytes) -> Response {
    let Some(owner) = s.owner.clone() else {
        return no_owner();
    };
    let percent = match body::<CheckRequest>(&bytes) {
        Ok(r) => r.read_data,
        Err(e) => return *e,
    };
    if percent > 100 {
        return error_response(StatusCode::BAD_REQUEST, "invalid", "read_data: 0 to 100");
    }
    match owner.check(percent).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => owner_error(e),
    }
}

/// The role on this member: as an owner and as a space.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupStatusView {
    pub owner: bool,
    pub paths: Vec<String>,
    pub replicas: usize,
    pub runs_ok: u64,
    pub runs_failed: u64,
    pub chunks_sent: u64,
    pub bytes_sent: u64,
    pub last_run: Option<RunView>,
    pub lost_chunks: u64,
    /// Bytes offered (`null`: no space).
    pub space_capacity: Option<u64>,
    pub space_stored: u64,
    /// Owners with chunks here and how many.
    pub space_owners: Vec<(String, usize)>,
    /// The run under way or last run.
    pub run_progress: Option<crate::progress::ProgressView>,
    /// The restore under way or last restore on this member.
    pub restore_progress: Option<crate::progress::ProgressView>,
}

/// The backup role's status on this member.
#[utoipa::path(get, path = "/v1/roles/backup/status", tag = "backup role",
    operation_id = "backup_status", responses((status = 200, body = BackupStatusView)))]
pub(crate) async fn status_route(State(s): State<RoleState>) -> Json<BackupStatusView> {
    let owner = s.owner.as_deref();
    let c = owner.map(|o| &o.counters);
    let load = |f: fn(&crate::owner::OwnerCounters) -> &std::sync::atomic::AtomicU64| {
        c.map_or(0, |c| f(c).load(Ordering::Relaxed))
    };
    Json(BackupStatusView {
        owner: owner.is_some(),
        paths: owner
            .map(|o| o.paths.iter().map(|p| p.display().to_string()).collect())
            .unwrap_or_default(),
        replicas: owner.map_or(0, |o| o.replicas),
        runs_ok: load(|c| &c.runs_ok),
        runs_failed: load(|c| &c.runs_failed),
        chunks_sent: load(|c| &c.chunks_sent),
        bytes_sent: load(|c| &c.bytes_sent),
        last_run: owner.and_then(|o| o.last_run.lock().expect("last run").clone()),
        lost_chunks: load(|c| &c.lost_chunks),
        space_capacity: s.space.as_ref().map(|sp| sp.capacity),
        space_stored: s.space.as_ref().map_or(0, |sp| sp.stored()),
        space_owners: s.space.as_ref().map(|sp| sp.owners()).unwrap_or_default(),
        run_progress: owner.map(|o| o.run_progress.view()),
        restore_progress: owner.map(|o| o.restore_progress.view()),
    })
}

// Space routes.

pub(crate) async fn upload_route(State(s): State<RoleState>, body: Bytes) -> Response {
    let Some(space) = s.space.clone() else {
        return no_space();
    };
    let (header, chunks) = match parse_upload(&body) {
        Ok(u) => u,
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, "invalid", &format!("upload: {e}"))
        }
    };
    match space
        .upload(&*s.cp, &header.owner, header.reservation, chunks)
        .await
    {
        Ok(stored_bytes) => hivemind_common::encode(&UploadAnswer { stored_bytes }).into_response(),
        Err(e) => space_error(e),
    }
}

pub(crate) async fn heartbeat_route(
    State(s): State<RoleState>,
    Json(beat): Json<Heartbeat>,
) -> Response {
    let Some(space) = s.space.clone() else {
        return no_space();
    };
    let mut listed = Vec::with_capacity(beat.chunks.len());
    for hex in &beat.chunks {
        match ChunkId::from_hex(hex) {
            Some(id) => listed.push(id),
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    &format!("chunks: {hex:?} is not a chunk id"),
                )
            }
        }
    }
    match space.heartbeat(&beat.owner, listed).await {
        Ok(b) => Json(HeartbeatAnswer {
            missing: b.missing.iter().map(ChunkId::hex).collect(),
            dropped: b.dropped.len(),
        })
        .into_response(),
        Err(e) => space_error(e),
    }
}

pub(crate) async fn list_route(State(s): State<RoleState>, Path(owner): Path<String>) -> Response {
    let Some(space) = s.space.clone() else {
        return no_space();
    };
    match space.list(&owner) {
        Ok(ids) => Json(ids.iter().map(ChunkId::hex).collect::<Vec<_>>()).into_response(),
        Err(e) => space_error(e),
    }
}

pub(crate) async fn chunk_route(
    State(s): State<RoleState>,
    Path((owner, id)): Path<(String, String)>,
) -> Response {
    let Some(space) = s.space.clone() else {
        return no_space();
    };
    let Some(id) = ChunkId::from_hex(&id) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            "id: not a chunk id (64 hex digits)",
        );
    };
    match space.read(&owner, id).await {
        Ok(bytes) => bytes.into_response(),
        Err(e) => space_error(e),
    }
}

/// `POST /chunks/{owner}/read`: the sealed chunks of those asked (bincode ids) held intact here.
pub(crate) async fn read_many_route(
    State(s): State<RoleState>,
    Path(owner): Path<String>,
    body: Bytes,
) -> Response {
    let Some(space) = s.space.clone() else {
        return no_space();
    };
    let ids: Vec<ChunkId> = match hivemind_common::decode(&body) {
        Ok(ids) => ids,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid", &format!("ids: {e}")),
    };
    match space.read_many(&owner, ids).await {
        Ok(found) => {
            let found: Vec<(ChunkId, crate::tree::ByteBuf)> = found
                .into_iter()
                .map(|(id, b)| (id, crate::tree::ByteBuf(b)))
                .collect();
            hivemind_common::encode(&found).into_response()
        }
        Err(e) => space_error(e),
    }
}

pub(crate) type SpaceRef = Option<Arc<crate::space::SpaceStore>>;
