//! Internal routes between members: bincode bodies in and out. Raft RPC (append, vote,
//! snapshot), writes and read-index requests forwarded to the leader, voter changes, bootstrap
//! hello, members' requests and node-scoped reads. When a cluster secret is configured every
//! internal request must carry it; who may call which route, and for whom, is
//! [`crate::authority`]'s, checked here before a body is decoded ([`authorize`]). The caller
//! comes as a request extension ([`Caller`], set by the member's listener middleware from the
//! TLS peer; without one the cluster has no identities: [`Caller::SharedSecret`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};

use super::ApiError;
use crate::authority::{self, Caller};
use crate::control::ControlPlane;
use crate::error::CpError;
use crate::network::{FramedAnswer, FramedCall, CLUSTER_SECRET_HEADER};
use crate::ops::{self, Op};
use crate::serve::Serve;
use crate::types::{NodeId, TypeConfig};
use tower::ServiceExt;

type Cp = State<Arc<ControlPlane>>;

pub fn routes(secret: Option<String>) -> Router<Arc<ControlPlane>> {
    Router::new()
        .route(ops::Append::PATH, post(append))
        .route(ops::APPEND_STREAM, get(append_stream))
        .route(ops::CALL_STREAM, get(call_stream))
        .route(ops::Vote::PATH, post(vote))
        .route(ops::PreVote::PATH, post(pre_vote))
        .route(ops::Snapshot::PATH, post(snapshot))
        .route(ops::Write::PATH, post(write))
        .route(ops::ReadIndex::PATH, post(read_index))
        .route(ops::Admin::PATH, post(admin))
        .route(ops::HelloOp::PATH, post(hello))
        .route(ops::Propose::PATH, post(propose))
        .route(ops::Request::PATH, post(served::<ops::Request>))
        .route(ops::View::PATH, post(served::<ops::View>))
        .route(ops::KeygroupRead::PATH, post(served::<ops::KeygroupRead>))
        .route(ops::Registry::PATH, post(registry))
        .route(ops::RegistryNow::PATH, post(registry_now))
        .route(ops::Feed::PATH, post(feed))
        .route(ops::Status::PATH, post(served::<ops::Status>))
        .route(ops::KvGet::PATH, post(kv_get))
        .route(ops::LeaseKeepAlive::PATH, post(lease_keep_alive))
        .route(ops::AclTable::PATH, post(served::<ops::AclTable>))
        // Raft RPCs (AppendEntries with many entries, snapshot chunks) exceed axum's 2 MB
        // default; the codec bounds what a body may decode into.
        .layer(DefaultBodyLimit::max(
            hivemind_common::codec::MAX_DECODE_BYTES,
        ))
        .layer(axum::middleware::from_fn(authorize))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let secret = secret.clone();
                async move {
                    if let Some(secret) = secret {
                        let given = req
                            .headers()
                            .get(CLUSTER_SECRET_HEADER)
                            .map(|v| v.as_bytes());
                        if !hivemind_common::secret::satisfies(Some(secret.as_bytes()), given) {
                            return ApiError::new(
                                StatusCode::UNAUTHORIZED,
                                "bad_cluster_secret",
                                "internal route needs the cluster secret",
                            )
                            .into_response();
                        }
                    }
                    next.run(req).await
                }
            },
        ))
}

/// Refuses a caller the route is not for (403, before the body is decoded), and leaves the
/// caller in the request for the handlers that act on its identity.
async fn authorize(mut req: Request, next: Next) -> Response {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::SharedSecret);
    if let Err(denied) = authority::may_call(req.uri().path(), &caller) {
        return ApiError::from(denied).into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The request of operation `O` from a body.
fn decode<O: Op>(body: &Bytes) -> Result<O::Request, ApiError> {
    hivemind_common::decode(body)
        .map_err(|e| ApiError::bad_request(format!("malformed internal request: {e}")))
}

/// The answer of operation `O` as a body.
fn reply<O: Op>(value: &O::Answer) -> Response {
    encoded(hivemind_common::encode(value))
}

/// An answer already encoded (bincode) as a body.
fn encoded(body: impl Into<axum::body::Body>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body.into(),
    )
        .into_response()
}

async fn bounded<T>(
    cp: &ControlPlane,
    wait: Duration,
    f: impl std::future::Future<Output = Result<T, CpError>>,
) -> Result<T, CpError> {
    tokio::time::timeout(wait, f).await.unwrap_or_else(|_| {
        Err(CpError::NoQuorum {
            waited_ms: wait.as_millis() as u64,
            detail: format!("leader {} could not commit in time", cp.config().name),
        })
    })
}

async fn append(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let request = decode::<ops::Append>(&body)?;
    Ok(reply::<ops::Append>(&append_entries(&cp, request).await))
}

/// The leader's replication stream to this member: AppendEntries frames in, answers out.
async fn append_stream(State(cp): Cp, request: Request) -> Response {
    crate::stream::accept(request, move |frame| {
        let cp = cp.clone();
        async move {
            match hivemind_common::decode::<<ops::Append as Op>::Request>(&frame) {
                Ok(request) => {
                    let answer = append_entries(&cp, request).await;
                    Some(hivemind_common::encode(&answer).into())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "malformed AppendEntries frame: closing the stream");
                    None
                }
            }
        }
    })
}

/// Internal calls as frames: each names a route of this router and carries its body; it is
/// served by the same handler a plain request would reach, as the caller who opened the stream
/// (its cluster secret was checked then; who it is, per frame, by [`authorize`]).
async fn call_stream(
    State(cp): Cp,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Response {
    let router: Router = routes(None).with_state(cp);
    crate::stream::accept(request, move |frame| {
        let (router, caller) = (router.clone(), caller.clone());
        async move {
            let call: FramedCall = match hivemind_common::decode(&frame) {
                Ok(call) => call,
                Err(e) => {
                    tracing::warn!(error = %e, "malformed call frame: closing the stream");
                    return None;
                }
            };
            let request = match Request::post(&call.path)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .extension(caller.clone())
                .body(axum::body::Body::from(call.body))
            {
                Ok(request) => request,
                Err(e) => {
                    tracing::warn!(path = %call.path, error = %e, "bad route in a call frame: closing the stream");
                    return None;
                }
            };
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(
                response.into_body(),
                hivemind_common::codec::MAX_DECODE_BYTES,
            )
            .await
            .ok()?;
            let answer = FramedAnswer {
                status,
                body: body.to_vec(),
            };
            Some(hivemind_common::encode(&answer).into())
        }
    })
}

async fn append_entries(
    cp: &ControlPlane,
    request: AppendEntriesRequest<TypeConfig>,
) -> Result<AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>> {
    let result = cp.raft().append_entries(request).await;
    if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
        cp.note_leader_contact();
    }
    result
}

async fn vote(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let request = decode::<ops::Vote>(&body)?;
    let answer = cp.raft().vote(request).await;
    // As in Raft: granting a vote restarts the election timer, so a voter neither campaigns
    // nor grants a pre-vote while the candidate it voted for may be taking office.
    if matches!(&answer, Ok(a) if a.vote_granted) {
        cp.note_leader_contact();
    }
    Ok(reply::<ops::Vote>(&answer))
}

async fn pre_vote(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let request = decode::<ops::PreVote>(&body)?;
    Ok(reply::<ops::PreVote>(&crate::control::elections::answer(
        &cp, &request,
    )))
}

async fn snapshot(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let request = decode::<ops::Snapshot>(&body)?;
    let result = cp.raft().install_snapshot(request).await;
    if result.is_ok() {
        cp.note_leader_contact();
    }
    Ok(reply::<ops::Snapshot>(&result))
}

async fn write(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let command = decode::<ops::Write>(&body)?;
    let wait = cp.config().request_timeout;
    Ok(reply::<ops::Write>(
        &bounded(&cp, wait, cp.forwarded_write(command)).await,
    ))
}

async fn lease_keep_alive(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let id = decode::<ops::LeaseKeepAlive>(&body)?;
    let wait = cp.config().request_timeout;
    Ok(reply::<ops::LeaseKeepAlive>(
        &bounded(&cp, wait, cp.local_keep_alive(id)).await,
    ))
}

async fn read_index(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    decode::<ops::ReadIndex>(&body)?;
    let wait = cp.config().request_timeout;
    Ok(reply::<ops::ReadIndex>(
        &bounded(&cp, wait, cp.local_read_index()).await,
    ))
}

async fn admin(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let change = decode::<ops::Admin>(&body)?;
    // Adding a learner waits until it caught up: allow more than a plain write.
    let wait = cp.config().request_timeout * 6;
    Ok(reply::<ops::Admin>(
        &bounded(&cp, wait, cp.local_change_voters(change)).await,
    ))
}

/// A member outside the control plane proposes through any CP member (the full write path:
/// batched, forwarded to the leader, bounded).
async fn propose(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let command = decode::<ops::Propose>(&body)?;
    Ok(reply::<ops::Propose>(&cp.write(command).await))
}

/// An operation members ask ([`Serve`]): decoded, answered by the one function that also
/// serves it in process, as the caller (403 when it is not the caller's to ask).
async fn served<O: Serve>(
    State(cp): Cp,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = decode::<O>(&body)?;
    let answer = O::serve(&cp, &caller, request).await?;
    Ok(reply::<O>(&answer))
}

/// The registry digest once this member applied the requested index (0: as it stands);
/// answers `Result<RegistryDigest, CpError>`.
async fn registry(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let index = decode::<ops::Registry>(&body)?;
    Ok(reply::<ops::Registry>(&cp.digest_at(index).await))
}

/// A linearizable read of the registry: after the leader's read index is applied here.
async fn registry_now(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    decode::<ops::RegistryNow>(&body)?;
    Ok(reply::<ops::RegistryNow>(&cp.digest_now().await))
}

/// A linearizable read of one key (answers `Result<Option<KvEntry>, CpError>`).
async fn kv_get(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let key = decode::<ops::KvGet>(&body)?;
    Ok(reply::<ops::KvGet>(&cp.kv_get(&key).await))
}

/// The event feed for members outside the control plane (bincode; answers
/// `Result<FeedPage, FeedError>`, one encoding shared by the long-polls that ask for the same
/// page).
async fn feed(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let request = decode::<ops::Feed>(&body)?;
    let wait = Duration::from_millis(request.wait_ms).min(super::api::MAX_WAIT);
    let _waiting = (!wait.is_zero()).then(|| cp.feed_follower());
    let page = cp
        .feed_encoded(
            request.after,
            request.epoch,
            super::api::MAX_EVENTS_PER_PAGE,
            wait,
        )
        .await;
    Ok(encoded(page))
}

async fn hello(State(cp): Cp, body: Bytes) -> Result<Response, ApiError> {
    let caller = decode::<ops::HelloOp>(&body)?;
    Ok(reply::<ops::HelloOp>(&cp.hello(caller).await))
}
