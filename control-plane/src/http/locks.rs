//! Locks over HTTP for clients in other languages (DESIGN.md §6h), the same recipe as
//! `hivemind lock`: `POST /v1/locks/{name} {"ttl", "wait"}` grants a lease, puts the caller's
//! key `_locks/NAME/<lease>` on it in line, and answers once no key in line has a lower create
//! index: `{lease, key, fence}` (the fence is the key's create index and only grows). The caller
//! keeps the lease alive (`PUT /v1/leases/{lease}/keepalive`) and releases with
//! `DELETE /v1/locks/{name}?lease=ID`. A wait that runs out revokes the lease and answers 409
//! `lock_busy`.
//!
//! The turn is read from this member's applied state: what it applied was committed, and a
//! waiter that comes later always has a higher create index, so a turn seen here holds.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hivemind_common::acl::{Access, Resource};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::ErrorBody;
use super::{ApiError, JsonBody, QueryParams};
use crate::access::Grant;
use crate::control::ControlPlane;
use crate::registry::{
    Command, CommandOutput, Txn, TxnOp, TxnResult, MAX_LEASE_TTL_MS, MIN_LEASE_TTL_MS,
};

type Cp = State<Arc<ControlPlane>>;

pub fn routes() -> Router<Arc<ControlPlane>> {
    Router::new().route("/v1/locks/{name}", post(acquire).delete(release))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(acquire, release),
    components(schemas(LockBody, LockHeld, ErrorBody))
)]
pub struct LocksApi;

/// `{"ttl": "10s", "wait": "30s"}`: the lease's TTL (1s to 24h) and how long to wait in line
/// (at most 300s).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockBody {
    #[serde(default = "default_ttl")]
    pub ttl: String,
    #[serde(default = "default_wait")]
    pub wait: String,
}

fn default_ttl() -> String {
    "10s".into()
}

fn default_wait() -> String {
    "30s".into()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LockHeld {
    pub lease: u64,
    pub key: String,
    /// The key's create index: a fencing token that only grows.
    pub fence: u64,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReleaseQuery {
    /// The lease the lock was taken with.
    pub lease: u64,
}

fn prefix(name: &str) -> Result<String, ApiError> {
    if name.is_empty()
        || name.len() > 128
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "name: {name:?} must be 1-128 characters without / or control characters"
        )));
    }
    Ok(format!("_locks/{name}/"))
}

fn check_access(grant: &Option<Extension<Grant>>, prefix: &str) -> Result<(), ApiError> {
    let allowed = grant
        .as_ref()
        .is_none_or(|g| g.allows(&Resource::Kv(prefix), Access::Write));
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            format!("the token may not write {prefix:?}"),
        ))
    }
}

/// Takes lock `name`, waiting in line up to `wait`.
#[utoipa::path(post, path = "/v1/locks/{name}", tag = "coordination", operation_id = "lock_acquire",
    params(("name" = String, Path, description = "The lock")), request_body = LockBody,
    responses((status = 200, description = "Held", body = LockHeld),
        (status = 400, description = "A bad name, TTL or wait (bad_request)", body = ErrorBody),
        (status = 409, description = "Still in line when the wait ran out (lock_busy; the lease is revoked)", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody)))]
async fn acquire(
    State(cp): Cp,
    grant: Option<Extension<Grant>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<LockBody>,
) -> Result<Json<LockHeld>, ApiError> {
    let prefix = prefix(&name)?;
    check_access(&grant, &prefix)?;
    let ttl = hivemind_common::duration::parse(&body.ttl)
        .map_err(|e| ApiError::bad_request(format!("ttl: {e}")))?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if !(MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&ttl_ms) {
        return Err(ApiError::bad_request(format!(
            "ttl: {} must be from 1s to 24h",
            body.ttl
        )));
    }
    let wait = super::api::parse_wait(&body.wait).map_err(ApiError::bad_request)?;
    let granted = cp.write(Command::LeaseGrant { ttl_ms }).await?;
    let CommandOutput::LeaseGranted { id: lease, .. } = granted.output else {
        return Err(ApiError::bad_request(format!(
            "unexpected outcome {:?}",
            granted.output
        )));
    };
    let key = format!("{prefix}{lease:016x}");
    let put = Txn {
        success: vec![TxnOp::Put {
            key: key.clone(),
            value: Vec::new(),
            lease: Some(lease),
        }],
        ..Default::default()
    };
    let applied = cp.write(Command::Txn(put)).await?;
    let fence = match applied.output {
        CommandOutput::Txn { results, .. } => match results.first() {
            Some(TxnResult::Put { modify_index }) => *modify_index,
            _ => return Err(ApiError::bad_request("the put has no result")),
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "unexpected outcome {other:?}"
            )))
        }
    };
    let keep = Duration::from_millis(ttl_ms / 3);
    match wait_turn(
        &cp,
        (&prefix, &key, lease),
        fence,
        applied.index,
        (wait, keep),
    )
    .await
    {
        Ok(()) => Ok(Json(LockHeld { lease, key, fence })),
        Err(e) => {
            let _ = cp.write(Command::LeaseRevoke { id: lease }).await;
            Err(e)
        }
    }
}

/// Waits until this member applied `index` and no key under `prefix` has a create index
/// below `fence`, keeping `lease` alive every `keep` meanwhile (the caller learns its id only
/// with the answer); fails when `key` is gone (the lease ended) or `wait` ran out.
async fn wait_turn(
    cp: &ControlPlane,
    (prefix, key, lease): (&str, &str, u64),
    fence: u64,
    index: u64,
    (wait, keep): (Duration, Duration),
) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut applied = cp.state().subscribe_applied();
    let mut next_keep = tokio::time::Instant::now() + keep;
    loop {
        {
            let state = cp.state().read();
            if state.applied_index() >= index {
                let mut keys = state.registry.kv_prefix(prefix);
                if state.registry.kv_get(key).is_none() {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "lock_lost",
                        format!("{key} is gone: its lease ended while it waited"),
                    ));
                }
                if keys.all(|(_, e)| e.create_index >= fence) {
                    return Ok(());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_keep) => {
                next_keep = tokio::time::Instant::now() + keep;
                cp.keep_alive(lease).await?;
            }
            changed = applied.changed() => {
                if changed.is_err() {
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopped", "the control plane is stopping"));
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(ApiError::new(StatusCode::CONFLICT, "lock_busy", format!("still in line for {prefix} after the wait")));
            }
        }
    }
}

/// Releases the lock taken with `lease` (revokes the lease; its key goes with it).
#[utoipa::path(delete, path = "/v1/locks/{name}", tag = "coordination", operation_id = "lock_release",
    params(("name" = String, Path, description = "The lock"), ReleaseQuery),
    responses((status = 200, description = "Released", body = Object),
        (status = 400, description = "A bad name or no lease (bad_request)", body = ErrorBody),
        (status = 403, description = "The token may not write the lock's keys", body = ErrorBody),
        (status = 404, description = "No such lease (unknown_lease)", body = ErrorBody)))]
async fn release(
    State(cp): Cp,
    grant: Option<Extension<Grant>>,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<ReleaseQuery>,
) -> Result<Response, ApiError> {
    let prefix = prefix(&name)?;
    check_access(&grant, &prefix)?;
    let applied = cp.write(Command::LeaseRevoke { id: q.lease }).await?;
    Ok(Json(serde_json::json!({"released": true, "index": applied.index})).into_response())
}
