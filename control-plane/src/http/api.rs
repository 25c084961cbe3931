//! Public CP routes: `/v1/cp/*`, `/v1/kv/*`, `/v1/events`. Linearizable by default; `?stale=true`
//! answers from this member's applied state and says which index that is.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hivemind_common::acl::{Access, Resource};
use hivemind_common::MemberId;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::views::{
    self, EpochStarted, ErrorBody, EventView, EventsPage, KvDeleted, KvView, KvWritten,
    RegistryView,
};
use super::{ApiError, JsonBody, QueryParams};
use crate::access::Grant;
use crate::bootstrap::Hello;
use crate::control::{ControlPlane, CpStatus, VoterChange};
use crate::ops;
use crate::registry::{Command, CommandOutput, EventKind, FeedError};
use crate::types::CpNode;

type Cp = State<Arc<ControlPlane>>;

/// The modify index of a KV value (GET) or the index a read was served at.
pub const INDEX_HEADER: HeaderName = HeaderName::from_static("x-hivemind-index");
/// Longest long-poll wait accepted on `/v1/events`.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
pub use crate::ops::MAX_EVENTS_PER_PAGE;

pub fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/v1/cp/status", get(cp_status))
        .route("/v1/cp/voters", post(add_voter).delete(remove_voter))
        .route("/v1/cp/epoch", post(epoch_bump))
        .route("/v1/cp/snapshot", get(snapshot))
        .route("/v1/kv", get(kv_list))
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/events", get(events))
}

/// The control plane's public routes, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(cp_status, add_voter, remove_voter, epoch_bump, snapshot, kv_list, kv_get, kv_put, kv_delete, events),
    components(schemas(ErrorBody, CpStatus, RegistryView, KvView, EventView, KvWritten, KvDeleted, EpochStarted, EventsPage, AddVoter, EpochBody)),
    tags((name = "control plane", description = "Raft status, voters, epochs, snapshots"), (name = "kv", description = "The replicated KV namespace"), (name = "events", description = "The registry's event feed"))
)]
pub struct CpApi;

/// Query of reads: unknown parameters are refused (400).
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReadQuery {
    /// Answer from this member's applied state instead of a linearizable read.
    #[serde(default)]
    stale: bool,
    /// `GET /v1/kv/{key}`: the entry as JSON (`KvView`) instead of the raw value.
    #[serde(default)]
    meta: bool,
    /// `GET /v1/kv`: only keys with this prefix.
    #[serde(default)]
    prefix: Option<String>,
    /// `GET /v1/kv`: block until a key under the prefix changes after `after`, and answer the
    /// changes (`WatchPage`) instead of the keys.
    #[serde(default)]
    watch: bool,
    /// A watch's starting point: changes with a higher index (default 0).
    after: Option<u64>,
    /// How long a watch waits for a change (`30s`, `500ms`; default and most 300s).
    wait: Option<String>,
    /// The epoch the watcher saw (410 gone when it ended).
    epoch: Option<u64>,
    /// A watch: one answer that goes on, a line of JSON per batch of changes (NDJSON), and an
    /// empty page every `wait` (default 30s) to say how far it looked.
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WriteQuery {
    /// Compare-and-set: `0` only if absent, `i` only if the key's modify index is `i`.
    cas: Option<u64>,
    /// `PUT`: tie the key to this lease (it is deleted when the lease ends).
    lease: Option<u64>,
}

/// Waits for a linearizable read point unless `stale`; returns the index the read is served at.
async fn read_point(cp: &ControlPlane, stale: bool) -> Result<u64, ApiError> {
    if stale {
        Ok(cp.state().applied_index())
    } else {
        Ok(cp.read_barrier().await?)
    }
}

/// This member's view of the control plane.
#[utoipa::path(get, path = "/v1/cp/status", tag = "control plane",
    responses((status = 200, description = "Raft state, leader, voters, indexes, health", body = CpStatus)))]
async fn cp_status(State(cp): Cp) -> Json<CpStatus> {
    Json(cp.status().await)
}

/// The body of `POST /v1/cp/voters`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddVoter {
    /// `HOST:HTTP_PORT` of a started, not yet initialized CP member.
    pub addr: String,
    /// Promote to voter after it caught up as a learner (default true).
    #[serde(default = "yes")]
    pub voter: bool,
    /// When given, must match the id the member reports.
    pub id: Option<String>,
}

fn yes() -> bool {
    true
}

/// Adds a started, uninitialized CP member as a learner, then promotes it.
#[utoipa::path(post, path = "/v1/cp/voters", tag = "control plane", request_body = AddVoter,
    responses(
        (status = 200, description = "The control plane after the change", body = CpStatus),
        (status = 400, description = "Bad body or unreachable member", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody)))]
async fn add_voter(
    State(cp): Cp,
    JsonBody(body): JsonBody<Option<AddVoter>>,
) -> Result<Json<CpStatus>, ApiError> {
    let body = body.ok_or_else(|| {
        ApiError::bad_request("body must be {\"addr\": \"HOST:PORT\", \"voter\": true}")
    })?;
    let hello: Hello = cp
        .client()
        .op::<ops::HelloOp>(&body.addr, &None, Duration::from_secs(2))
        .await
        .map_err(|e| {
            ApiError::bad_request(format!("cannot reach a CP member at {}: {e}", body.addr))
        })?;
    if let Some(id) = &body.id {
        let id: MemberId = id
            .parse()
            .map_err(|e| ApiError::bad_request(format!("id: {e}")))?;
        if id.get() != hello.me.id {
            return Err(ApiError::bad_request(format!(
                "{} reports id {:016x}, not {id}",
                body.addr, hello.me.id
            )));
        }
    }
    let change = VoterChange::Add {
        id: hello.me.id,
        node: CpNode {
            name: hello.me.name,
            http_addr: body.addr,
        },
        voter: body.voter,
    };
    Ok(Json(cp.change_voters(change).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RemoveVoter {
    /// The member id (16 hex digits).
    id: String,
}

/// Removes a voter or learner.
#[utoipa::path(delete, path = "/v1/cp/voters", tag = "control plane", params(RemoveVoter),
    responses(
        (status = 200, description = "The control plane after the change", body = CpStatus),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody)))]
async fn remove_voter(
    State(cp): Cp,
    QueryParams(q): QueryParams<RemoveVoter>,
) -> Result<Json<CpStatus>, ApiError> {
    let id: MemberId =
        q.id.parse()
            .map_err(|e| ApiError::bad_request(format!("id: {e}")))?;
    let status = cp
        .change_voters(VoterChange::Remove { id: id.get() })
        .await?;
    Ok(Json(status))
}

/// The body of `POST /v1/cp/epoch`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EpochBody {
    pub reason: Option<String>,
}

/// Starts a new epoch: members re-bootstrap from a snapshot.
#[utoipa::path(post, path = "/v1/cp/epoch", tag = "control plane",
    request_body(content = Option<EpochBody>, description = "Optional reason"),
    responses(
        (status = 200, description = "The new epoch", body = EpochStarted),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody)))]
async fn epoch_bump(
    State(cp): Cp,
    JsonBody(body): JsonBody<Option<EpochBody>>,
) -> Result<Json<EpochStarted>, ApiError> {
    let reason = body
        .and_then(|b| b.reason)
        .unwrap_or_else(|| "operator".to_string());
    let applied = cp.write(Command::EpochBump { reason }).await?;
    match applied.output {
        CommandOutput::EpochStarted { epoch, index } => Ok(Json(EpochStarted { epoch, index })),
        other => Err(ApiError::bad_request(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

/// The whole registry (members, nodes, keygroups without secrets, responsibilities, KV,
/// events) at one index.
#[utoipa::path(get, path = "/v1/cp/snapshot", tag = "control plane", params(ReadQuery),
    responses(
        (status = 200, description = "The registry", body = RegistryView),
        (status = 400, description = "Unknown query parameter", body = ErrorBody),
        (status = 503, description = "No quorum (linearizable read)", body = ErrorBody)))]
async fn snapshot(
    State(cp): Cp,
    QueryParams(q): QueryParams<ReadQuery>,
) -> Result<Json<RegistryView>, ApiError> {
    read_point(&cp, q.stale).await?;
    let state = cp.state().read();
    let index = state.applied_index();
    Ok(Json(views::registry(&state.registry, index)))
}

/// One key: the raw value, or with `?meta=true` the entry as JSON.
#[utoipa::path(get, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key (may contain /)"), ReadQuery),
    responses(
        (status = 200, description = "The value (raw) or the entry (meta=true)",
            headers(("x-hivemind-index" = u64, description = "The modify index")),
            content((Vec<u8> = "application/octet-stream"), (KvView = "application/json"))),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "No quorum (linearizable read)", body = ErrorBody)))]
async fn kv_get(
    State(cp): Cp,
    Path(key): Path<String>,
    QueryParams(q): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    read_point(&cp, q.stale).await?;
    let state = cp.state().read();
    let entry = state
        .registry
        .kv_get(&key)
        .ok_or_else(|| ApiError::not_found(format!("no key {key:?}")))?;
    let index = [(INDEX_HEADER, entry.modify_index.to_string())];
    if q.meta {
        Ok((index, Json(views::kv(&key, entry))).into_response())
    } else {
        Ok((
            index,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            entry.value.clone(),
        )
            .into_response())
    }
}

/// Every key (with `?prefix=`, those under it), values in base64; with ACLs, only the keys
/// the token may read.
#[utoipa::path(get, path = "/v1/kv", tag = "kv", params(ReadQuery),
    responses(
        (status = 200, description = "The entries", body = [KvView],
            headers(("x-hivemind-index" = u64, description = "The index the read was served at"))),
        (status = 400, description = "Unknown query parameter", body = ErrorBody),
        (status = 503, description = "No quorum (linearizable read)", body = ErrorBody)))]
async fn kv_list(
    State(cp): Cp,
    grant: Option<Extension<Grant>>,
    QueryParams(q): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    let prefix = q.prefix.unwrap_or_default();
    if q.watch && q.stream {
        let progress = match q.wait.as_deref() {
            None => Duration::from_secs(30),
            Some(w) => parse_wait(w).map_err(ApiError::bad_request)?,
        };
        return super::coordination::watch_stream(
            cp,
            grant,
            prefix,
            q.after.unwrap_or(0),
            progress,
            q.epoch,
        )
        .await;
    }
    if q.watch {
        let wait = match q.wait.as_deref() {
            None => MAX_WAIT,
            Some(w) => parse_wait(w).map_err(ApiError::bad_request)?,
        };
        return super::coordination::watch(
            &cp,
            &grant,
            &prefix,
            q.after.unwrap_or(0),
            wait,
            q.epoch,
        )
        .await;
    }
    if q.after.is_some() || q.wait.is_some() || q.epoch.is_some() {
        return Err(ApiError::bad_request(
            "after, wait and epoch belong to a watch (watch=true)",
        ));
    }
    let at = read_point(&cp, q.stale).await?;
    let state = cp.state().read();
    let entries: Vec<KvView> = state
        .registry
        .kv_prefix(&prefix)
        .filter(|(k, _)| allowed(&grant, &Resource::Kv(k)))
        .map(|(k, e)| views::kv(k, e))
        .collect();
    Ok(([(INDEX_HEADER, at.to_string())], Json(entries)).into_response())
}

/// Writes the request body as the key's value.
#[utoipa::path(put, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key"), WriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value"),
    responses(
        (status = 200, description = "Written", body = KvWritten),
        (status = 409, description = "Compare-and-set failed (cas_failed)", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody)))]
async fn kv_put(
    State(cp): Cp,
    Path(key): Path<String>,
    QueryParams(q): QueryParams<WriteQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(lease) = q.lease {
        return put_on_lease(&cp, key, body.to_vec(), q.cas, lease).await;
    }
    let applied = cp
        .write(Command::KvPut {
            key,
            value: body.to_vec(),
            cas: q.cas,
        })
        .await?;
    let CommandOutput::KvWritten { modify_index } = applied.output else {
        return Err(ApiError::bad_request(format!(
            "unexpected outcome {:?}",
            applied.output
        )));
    };
    Ok((
        [(INDEX_HEADER, modify_index.to_string())],
        Json(KvWritten {
            index: modify_index,
        }),
    )
        .into_response())
}

/// A put tied to a lease: a transaction of one put, its compare the `cas` if any (a failed
/// compare is 409 `cas_failed`, as a plain put's).
async fn put_on_lease(
    cp: &ControlPlane,
    key: String,
    value: Vec<u8>,
    cas: Option<u64>,
    lease: u64,
) -> Result<Response, ApiError> {
    use crate::registry::{Compare, Txn, TxnOp, TxnResult};
    let compare = cas
        .map(|index| Compare::ModifyIndex {
            key: key.clone(),
            index,
        })
        .into_iter()
        .collect();
    let txn = Txn {
        compare,
        success: vec![TxnOp::Put {
            key: key.clone(),
            value,
            lease: Some(lease),
        }],
        failure: Vec::new(),
    };
    let applied = cp.write(Command::Txn(txn)).await?;
    match applied.output {
        CommandOutput::Txn {
            succeeded: true,
            results,
        } => {
            let Some(TxnResult::Put { modify_index }) = results.first() else {
                return Err(ApiError::bad_request("the put has no result"));
            };
            Ok((
                [(INDEX_HEADER, modify_index.to_string())],
                Json(KvWritten {
                    index: *modify_index,
                }),
            )
                .into_response())
        }
        CommandOutput::Txn { .. } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "cas_failed",
            format!(
                "compare-and-set failed on {key:?}: expected index {}",
                cas.unwrap_or(0)
            ),
        )),
        other => Err(ApiError::bad_request(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

/// Deletes a key (no error if absent: `deleted` says whether it existed).
#[utoipa::path(delete, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key"), WriteQuery),
    responses(
        (status = 200, description = "Done", body = KvDeleted),
        (status = 409, description = "Compare-and-set failed (cas_failed)", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody)))]
async fn kv_delete(
    State(cp): Cp,
    Path(key): Path<String>,
    QueryParams(q): QueryParams<WriteQuery>,
) -> Result<Json<KvDeleted>, ApiError> {
    let applied = cp.write(Command::KvDelete { key, cas: q.cas }).await?;
    let CommandOutput::KvDeleted { deleted } = applied.output else {
        return Err(ApiError::bad_request(format!(
            "unexpected outcome {:?}",
            applied.output
        )));
    };
    Ok(Json(KvDeleted {
        deleted,
        index: applied.index,
    }))
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Events after this index.
    #[serde(default)]
    after: u64,
    /// Long-poll: wait up to this long for an event (`30s`, `500ms`, `2m`; at most 300 s).
    wait: Option<String>,
    /// The epoch the caller follows (410 gone if it ended).
    epoch: Option<u64>,
    /// At most this many events (1..1000).
    limit: Option<usize>,
}

/// The `wait` of a long-poll: `30s`, `500ms`, `2m`, at most [`MAX_WAIT`].
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    hivemind_common::duration::parse_wait(text, MAX_WAIT)
}

/// Long-poll of the event feed from this member's applied state.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 410, description = "The epoch or position is gone: re-bootstrap from /v1/cp/snapshot", body = ErrorBody)))]
async fn events(
    State(cp): Cp,
    grant: Option<Extension<Grant>>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let wait = match &q.wait {
        Some(w) => parse_wait(w).map_err(ApiError::bad_request)?,
        None => Duration::ZERO,
    };
    let limit = q
        .limit
        .unwrap_or(MAX_EVENTS_PER_PAGE)
        .clamp(1, MAX_EVENTS_PER_PAGE);
    match cp.feed(q.after, q.epoch, limit, wait).await {
        Err(FeedError::Gone { epoch, first_index }) => Err(ApiError::new(
            StatusCode::GONE,
            "gone",
            format!("the feed is at epoch {epoch} starting after index {first_index}; re-bootstrap from /v1/cp/snapshot"),
        )
        .with("epoch", epoch)
        .with("first_index", first_index)),
        Ok(page) => Ok(Json(EventsPage {
            epoch: page.epoch,
            first_index: page.first_index,
            applied_index: page.applied_index,
            next_after: page.next_after,
            events: page
                .events
                .iter()
                .filter(|e| event_allowed(&grant, &e.kind))
                .map(views::event)
                .collect(),
        })),
    }
}

/// Whether the request's grant (set by the member's ACL layer; none: no ACLs) may read
/// `resource`: listings keep only what it may.
fn allowed(grant: &Option<Extension<Grant>>, resource: &Resource<'_>) -> bool {
    grant
        .as_ref()
        .is_none_or(|g| g.allows(resource, Access::Read))
}

/// Whether an event may be shown to the request's grant: keygroup and responsibility events
/// need the keygroup, ACL events `acl`, besides `events` itself.
fn event_allowed(grant: &Option<Extension<Grant>>, kind: &EventKind) -> bool {
    match kind {
        EventKind::KeygroupCreated { name, .. }
        | EventKind::KeygroupUpdated { name, .. }
        | EventKind::KeygroupDeleted { name, .. } => allowed(grant, &Resource::Keygroup(name)),
        EventKind::ResponsibilityClaimed { keygroup, .. }
        | EventKind::ResponsibilityReleased { keygroup, .. } => {
            allowed(grant, &Resource::Keygroup(keygroup))
        }
        EventKind::AclChanged { .. } => allowed(grant, &Resource::Acl),
        _ => true,
    }
}
