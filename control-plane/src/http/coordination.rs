//! The coordination routes (DESIGN.md §6h): KV watches (`GET /v1/kv?prefix=P&watch=true`),
//! leases (`/v1/leases`) and transactions (`POST /v1/txn`). Locks and elections are built on
//! these by clients (`hivemind lock`, `hivemind elect`), as etcd's recipes are.
//!
//! With ACLs, a watch answers only the keys the token may read; a transaction needs read on
//! every key it compares or gets and write on every key it puts or deletes, checked before it
//! is proposed.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use base64::Engine;
use hivemind_common::acl::{Access, Resource};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{self, ErrorBody, KvView, LeaseView, WatchEvent, WatchPage};
use super::{ApiError, JsonBody};
use crate::access::Grant;
use crate::control::ControlPlane;
use crate::registry::{
    ChangeKind, Command, CommandOutput, Compacted, Compare, Txn, TxnOp, TxnResult,
    MAX_LEASE_TTL_MS, MIN_LEASE_TTL_MS,
};

type Cp = State<Arc<ControlPlane>>;

pub fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/v1/leases", post(grant).get(list))
        .route("/v1/leases/{id}", axum::routing::delete(revoke))
        .route("/v1/leases/{id}/keepalive", put(keep_alive))
        .route("/v1/leases/keepalive", put(keep_alive_many))
        .route("/v1/txn", post(txn))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(grant, list, revoke, keep_alive, keep_alive_many, txn),
    components(schemas(GrantBody, LeaseView, KeepAliveBody, TxnBody, CompareBody, OpBody, PutBody, KeyBody, TxnAnswer, WatchPage, WatchEvent, ErrorBody)),
    tags((name = "coordination", description = "Leases and transactions (DESIGN.md §6h)"))
)]
pub struct CoordinationApi;

fn denied(key: &str, access: Access) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "permission_denied",
        format!("the token may not {access:?} key {key:?}").to_lowercase(),
    )
}

fn may(grant: &Option<Extension<Grant>>, key: &str, access: Access) -> bool {
    grant
        .as_ref()
        .is_none_or(|g| g.allows(&Resource::Kv(key), access))
}

// ---- watches ----

/// The changes under `prefix` after `after` as this member applied them now (a page with no
/// events says how far it looked); `410` when the epoch is not `epoch` or the log no longer
/// holds what followed `after`.
fn watch_page(
    cp: &ControlPlane,
    grant: &Option<Extension<Grant>>,
    prefix: &str,
    after: u64,
    epoch: Option<u64>,
) -> Result<WatchPage, ApiError> {
    let state = cp.state().read();
    let registry = &state.registry;
    if let Some(epoch) = epoch.filter(|e| *e != registry.epoch()) {
        return Err(ApiError::new(
            StatusCode::GONE,
            "gone",
            format!(
                "epoch: the cluster is at epoch {}, not {epoch}",
                registry.epoch()
            ),
        )
        .with("epoch", registry.epoch()));
    }
    match registry.kv().changes_after(prefix, after) {
        Err(Compacted { first_index }) => Err(ApiError::new(
            StatusCode::GONE,
            "compacted",
            format!("after: changes up to index {first_index} are compacted; list the keys, then watch after that index"),
        )
        .with("first_index", first_index)),
        Ok(changes) => Ok(WatchPage {
            next_after: state.applied_index().max(after),
            events: changes
                .into_iter()
                .filter(|c| may(grant, &c.key, Access::Read))
                .map(|c| WatchEvent {
                    kind: match c.kind {
                        ChangeKind::Put => "put".into(),
                        ChangeKind::Delete => "delete".into(),
                    },
                    key: c.key.clone(),
                    value_base64: base64::engine::general_purpose::STANDARD.encode(&c.value),
                    create_index: c.create_index,
                    modify_index: c.modify_index,
                })
                .collect(),
        }),
    }
}

/// The watch of `GET /v1/kv?prefix=P&watch=true&after=N&wait=D`: blocks until a key under P
/// changes after N (at most `wait`), then answers those changes; `410 compacted` with
/// `first_index` when N is older than the change log keeps. All watchers wait on the one
/// applied-index signal of this member.
pub async fn watch(
    cp: &ControlPlane,
    grant: &Option<Extension<Grant>>,
    prefix: &str,
    after: u64,
    wait: Duration,
    epoch: Option<u64>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut applied = cp.state().subscribe_applied();
    loop {
        let page = watch_page(cp, grant, prefix, after, epoch)?;
        if !page.events.is_empty() {
            return Ok(Json(page).into_response());
        }
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    return Ok(Json(page).into_response());
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(page).into_response()),
        }
    }
}

/// The streaming watch (`&stream=true`): one answer that goes on, a line of JSON (a
/// [`WatchPage`]) for every batch of changes as it is applied, and an empty page every
/// `progress` to say how far the watch looked; a `{"error": ...}` line ends it (compacted, or
/// the epoch ended).
pub async fn watch_stream(
    cp: Arc<ControlPlane>,
    grant: Option<Extension<Grant>>,
    prefix: String,
    after: u64,
    progress: Duration,
    epoch: Option<u64>,
) -> Result<Response, ApiError> {
    // A watch that cannot start is an error answer, not a stream.
    watch_page(&cp, &grant, &prefix, after, epoch)?;
    let applied = cp.state().subscribe_applied();
    let state = (cp, grant, prefix, after, applied, false);
    let lines = futures::stream::unfold(
        state,
        move |(cp, grant, prefix, mut after, mut applied, done)| async move {
            if done {
                return None;
            }
            let deadline = tokio::time::Instant::now() + progress;
            loop {
                let page = match watch_page(&cp, &grant, &prefix, after, epoch) {
                    Ok(page) => page,
                    Err(e) => {
                        let line =
                            serde_json::json!({"error": {"code": e.code, "message": e.message}});
                        let bytes = axum::body::Bytes::from(format!("{line}\n"));
                        return Some((
                            Ok::<_, std::convert::Infallible>(bytes),
                            (cp, grant, prefix, after, applied, true),
                        ));
                    }
                };
                if page.events.is_empty() {
                    // Some(true): something was applied; Some(false): the member is stopping;
                    // None: time for a progress line.
                    let woke = tokio::select! {
                        changed = applied.changed() => Some(changed.is_ok()),
                        _ = tokio::time::sleep_until(deadline) => None,
                    };
                    match woke {
                        Some(true) => continue,
                        Some(false) => return None,
                        None => {}
                    }
                }
                after = page.next_after;
                let line = serde_json::to_string(&page).unwrap_or_default();
                let bytes = axum::body::Bytes::from(format!("{line}\n"));
                return Some((Ok(bytes), (cp, grant, prefix, after, applied, false)));
            }
        },
    );
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

// ---- leases ----

/// `POST /v1/leases`: `{"ttl": "10s"}` (1s to 24h).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub ttl: String,
}

fn lease_id(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("id: {text:?} is not a lease id (a number)")))
}

fn ttl_text(ttl_ms: u64) -> String {
    hivemind_common::duration::format(Duration::from_millis(ttl_ms))
}

/// Grants a lease.
#[utoipa::path(post, path = "/v1/leases", tag = "coordination", operation_id = "lease_grant", request_body = GrantBody,
    responses((status = 200, description = "Granted", body = LeaseView),
        (status = 400, description = "A TTL below 1s, above 24h or unparsable (invalid)", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody)))]
async fn grant(
    State(cp): Cp,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<Json<LeaseView>, ApiError> {
    let ttl = hivemind_common::duration::parse(&body.ttl)
        .map_err(|e| ApiError::bad_request(format!("ttl: {e}")))?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if !(MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&ttl_ms) {
        return Err(ApiError::bad_request(format!(
            "ttl: {} must be from 1s to 24h",
            body.ttl
        )));
    }
    let applied = cp.write(Command::LeaseGrant { ttl_ms }).await?;
    let CommandOutput::LeaseGranted { id, ttl_ms } = applied.output else {
        return Err(ApiError::bad_request(format!(
            "unexpected outcome {:?}",
            applied.output
        )));
    };
    Ok(Json(LeaseView {
        id,
        ttl: ttl_text(ttl_ms),
        keys: Vec::new(),
        remaining_ms: None,
    }))
}

/// Every lease with its keys (linearizable; with ACLs, the keys the token may read).
#[utoipa::path(get, path = "/v1/leases", tag = "coordination", operation_id = "lease_list",
    responses((status = 200, description = "The leases", body = [LeaseView])))]
async fn list(
    State(cp): Cp,
    grant: Option<Extension<Grant>>,
) -> Result<Json<Vec<LeaseView>>, ApiError> {
    cp.read_barrier().await?;
    let state = cp.state().read();
    Ok(Json(
        state
            .registry
            .kv()
            .leases()
            .iter()
            .map(|(id, lease)| LeaseView {
                id: *id,
                ttl: ttl_text(lease.ttl_ms),
                // With ACLs, only the keys the token may read.
                keys: lease
                    .keys
                    .iter()
                    .filter(|k| may(&grant, k, Access::Read))
                    .cloned()
                    .collect(),
                remaining_ms: cp.lease_remaining(*id).map(|d| d.as_millis() as u64),
            })
            .collect(),
    ))
}

/// Revokes a lease: its keys are deleted in the same entry.
#[utoipa::path(delete, path = "/v1/leases/{id}", tag = "coordination", operation_id = "lease_revoke",
    params(("id" = u64, Path, description = "The lease")),
    responses((status = 200, description = "Revoked: how many keys went", body = Object),
        (status = 400, description = "Not a lease id (bad_request)", body = ErrorBody),
        (status = 403, description = "A key of the lease the token may not delete", body = ErrorBody),
        (status = 404, description = "No such lease (unknown_lease)", body = ErrorBody)))]
async fn revoke(
    State(cp): Cp,
    grant: Option<Extension<Grant>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = lease_id(&id)?;
    // Revoking deletes the lease's keys: the token must be able to delete each.
    let keys: Vec<String> = {
        let state = cp.state().read();
        state
            .registry
            .kv()
            .lease(id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    };
    if let Some(key) = keys.iter().find(|k| !may(&grant, k, Access::Write)) {
        return Err(denied(key, Access::Write));
    }
    let applied = cp.write(Command::LeaseRevoke { id }).await?;
    let CommandOutput::LeaseEnded { keys } = applied.output else {
        return Err(ApiError::bad_request(format!(
            "unexpected outcome {:?}",
            applied.output
        )));
    };
    Ok(Json(serde_json::json!({"id": id, "keys": keys, "index": applied.index})).into_response())
}

/// Restarts a lease's TTL (taken by the leader; other CP members forward it).
#[utoipa::path(put, path = "/v1/leases/{id}/keepalive", tag = "coordination", operation_id = "lease_keep_alive",
    params(("id" = u64, Path, description = "The lease")),
    responses((status = 200, description = "Kept alive for its TTL", body = LeaseView),
        (status = 400, description = "Not a lease id (bad_request)", body = ErrorBody),
        (status = 404, description = "No such lease: revoked or expired (unknown_lease)", body = ErrorBody),
        (status = 503, description = "No leader confirmed within the request timeout", body = ErrorBody)))]
async fn keep_alive(State(cp): Cp, Path(id): Path<String>) -> Result<Json<LeaseView>, ApiError> {
    let id = lease_id(&id)?;
    let ttl_ms = cp.keep_alive(id).await?;
    Ok(Json(LeaseView {
        id,
        ttl: ttl_text(ttl_ms),
        keys: Vec::new(),
        remaining_ms: Some(ttl_ms),
    }))
}

/// `PUT /v1/leases/keepalive`: `{"ids": [...]}` (at most 10,000).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeepAliveBody {
    pub ids: Vec<u64>,
}

/// Most leases one batched keep-alive carries.
pub const MAX_KEEPALIVE_BATCH: usize = 10_000;

/// Restarts the TTL of many leases in one request (one leadership confirmation for all):
/// `{"leases": [{"id", "ttl"} or {"id", "error": "unknown_lease"}]}`, in the order asked.
#[utoipa::path(put, path = "/v1/leases/keepalive", tag = "coordination", operation_id = "lease_keep_alive_many",
    request_body = KeepAliveBody,
    responses((status = 200, description = "Each lease's TTL, or unknown_lease", body = Object),
        (status = 400, description = "More than 10,000 ids (bad_request)", body = ErrorBody),
        (status = 503, description = "No leader confirmed within the request timeout", body = ErrorBody)))]
async fn keep_alive_many(
    State(cp): Cp,
    JsonBody(body): JsonBody<KeepAliveBody>,
) -> Result<Response, ApiError> {
    if body.ids.len() > MAX_KEEPALIVE_BATCH {
        return Err(ApiError::bad_request(format!(
            "ids: at most {MAX_KEEPALIVE_BATCH}, not {}",
            body.ids.len()
        )));
    }
    let answers = cp.keep_alive_many(body.ids.clone()).await?;
    let leases: Vec<serde_json::Value> = body
        .ids
        .iter()
        .zip(answers)
        .map(|(id, ttl)| match ttl {
            Some(ttl_ms) => serde_json::json!({"id": id, "ttl": ttl_text(ttl_ms)}),
            None => serde_json::json!({"id": id, "error": "unknown_lease"}),
        })
        .collect();
    Ok(Json(serde_json::json!({ "leases": leases })).into_response())
}

// ---- transactions ----

/// `{"key": K, "exists": true|false}`, `{"key": K, "modify_index": N}` (0: absent) or
/// `{"key": K, "value_base64": V}`: exactly one test.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareBody {
    pub key: String,
    pub exists: Option<bool>,
    pub modify_index: Option<u64>,
    pub value_base64: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    pub key: String,
    #[serde(default)]
    pub value_base64: String,
    pub lease: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    pub key: String,
}

/// Exactly one of `put`, `delete`, `get`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpBody {
    pub put: Option<PutBody>,
    pub delete: Option<KeyBody>,
    pub get: Option<KeyBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnBody {
    #[serde(default)]
    pub compare: Vec<CompareBody>,
    #[serde(default)]
    pub success: Vec<OpBody>,
    #[serde(default)]
    pub failure: Vec<OpBody>,
}

/// `{succeeded, index, results}`: one result per operation of the branch that ran: `{"put":
/// {"modify_index"}}`, `{"delete": {"deleted"}}`, `{"get": KvView | null}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TxnAnswer {
    pub succeeded: bool,
    pub index: u64,
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<serde_json::Value>,
}

fn decode_value(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ApiError::bad_request(format!("{field}: not base64: {e}")))
}

/// The body as a [`Txn`], with the access it needs per key; errors name the field.
pub fn parse_txn(body: TxnBody) -> Result<(Txn, Vec<(String, Access)>), ApiError> {
    let mut needs = Vec::new();
    let mut compare = Vec::new();
    for (i, c) in body.compare.into_iter().enumerate() {
        let field = format!("compare[{i}]");
        needs.push((c.key.clone(), Access::Read));
        compare.push(match (c.exists, c.modify_index, c.value_base64) {
            (Some(exists), None, None) => Compare::Exists { key: c.key, exists },
            (None, Some(index), None) => Compare::ModifyIndex { key: c.key, index },
            (None, None, Some(v)) => Compare::Value {
                key: c.key,
                value: decode_value(&format!("{field}.value_base64"), &v)?,
            },
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{field}: give exactly one of exists, modify_index and value_base64"
                )))
            }
        });
    }
    let mut branch = |name: &str, ops: Vec<OpBody>| -> Result<Vec<TxnOp>, ApiError> {
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| {
                let field = format!("{name}[{i}]");
                match (op.put, op.delete, op.get) {
                    (Some(p), None, None) => {
                        needs.push((p.key.clone(), Access::Write));
                        Ok(TxnOp::Put {
                            value: decode_value(
                                &format!("{field}.put.value_base64"),
                                &p.value_base64,
                            )?,
                            key: p.key,
                            lease: p.lease,
                        })
                    }
                    (None, Some(d), None) => {
                        needs.push((d.key.clone(), Access::Write));
                        Ok(TxnOp::Delete { key: d.key })
                    }
                    (None, None, Some(g)) => {
                        needs.push((g.key.clone(), Access::Read));
                        Ok(TxnOp::Get { key: g.key })
                    }
                    _ => Err(ApiError::bad_request(format!(
                        "{field}: give exactly one of put, delete and get"
                    ))),
                }
            })
            .collect()
    };
    let success = branch("success", body.success)?;
    let failure = branch("failure", body.failure)?;
    Ok((
        Txn {
            compare,
            success,
            failure,
        },
        needs,
    ))
}

/// What a transaction's results look like in JSON.
pub fn results_json(results: &[TxnResult]) -> Vec<serde_json::Value> {
    results
        .iter()
        .map(|r| match r {
            TxnResult::Put { modify_index } => {
                serde_json::json!({"put": {"modify_index": modify_index}})
            }
            TxnResult::Delete { deleted } => serde_json::json!({"delete": {"deleted": deleted}}),
            TxnResult::Get { entry } => {
                let view: Option<KvView> = entry.as_ref().map(|(k, e)| views::kv(k, e));
                serde_json::json!({"get": view})
            }
        })
        .collect()
}

/// Runs a transaction: all compares hold → the success ops, else the failure ops, all or
/// nothing in one entry.
#[utoipa::path(post, path = "/v1/txn", tag = "coordination", operation_id = "txn", request_body = TxnBody,
    responses((status = 200, description = "Which branch ran and its results", body = TxnAnswer),
        (status = 400, description = "A malformed transaction (invalid; nothing applied)", body = ErrorBody),
        (status = 403, description = "A key the token may not read or write", body = ErrorBody),
        (status = 404, description = "A put on an unknown lease (unknown_lease; nothing applied)", body = ErrorBody)))]
async fn txn(
    State(cp): Cp,
    grant: Option<Extension<Grant>>,
    JsonBody(body): JsonBody<TxnBody>,
) -> Result<Json<TxnAnswer>, ApiError> {
    let (txn, needs) = parse_txn(body)?;
    if let Some((key, access)) = needs.iter().find(|(k, a)| !may(&grant, k, *a)) {
        return Err(denied(key, *access));
    }
    let applied = cp.write(Command::Txn(txn)).await?;
    let CommandOutput::Txn { succeeded, results } = applied.output else {
        return Err(ApiError::bad_request(format!(
            "unexpected outcome {:?}",
            applied.output
        )));
    };
    Ok(Json(TxnAnswer {
        succeeded,
        index: applied.index,
        results: results_json(&results),
    }))
}
