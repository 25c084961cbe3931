//! Public CP routes: `/v1/cp/*`, `/v1/kv/*`, `/v1/events`. Linearizable by default; `?stale=true`
//! answers from this member's applied state and says which index that is.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hivemind_common::MemberId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{views, ApiError, JsonBody, QueryParams};
use crate::bootstrap::Hello;
use crate::control::{ControlPlane, VoterChange};
use crate::network::paths;
use crate::registry::{Command, CommandOutput, FeedError};
use crate::types::CpNode;

type Cp = State<Arc<ControlPlane>>;

/// The modify index of a KV value (GET) or the index a read was served at.
pub const INDEX_HEADER: HeaderName = HeaderName::from_static("x-hivemind-index");
/// Longest long-poll wait accepted on `/v1/events`.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
pub const MAX_EVENTS_PER_PAGE: usize = 1000;

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    #[serde(default)]
    stale: bool,
    #[serde(default)]
    meta: bool,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WriteQuery {
    cas: Option<u64>,
}

/// Waits for a linearizable read point unless `stale`; returns the index the read is served at.
async fn read_point(cp: &ControlPlane, stale: bool) -> Result<u64, ApiError> {
    if stale {
        Ok(cp.state().applied_index())
    } else {
        Ok(cp.read_barrier().await?)
    }
}

async fn cp_status(State(cp): Cp) -> Json<Value> {
    Json(json!(cp.status().await))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddVoter {
    /// `HOST:HTTP_PORT` of a started, not yet initialized CP member.
    addr: String,
    /// Promote to voter after it caught up as a learner (default true).
    #[serde(default = "yes")]
    voter: bool,
    /// When given, must match the id the member reports.
    id: Option<String>,
}

fn yes() -> bool {
    true
}

async fn add_voter(
    State(cp): Cp,
    JsonBody(body): JsonBody<Option<AddVoter>>,
) -> Result<Response, ApiError> {
    let body = body.ok_or_else(|| {
        ApiError::bad_request("body must be {\"addr\": \"HOST:PORT\", \"voter\": true}")
    })?;
    let hello: Hello = cp
        .client()
        .call(
            &body.addr,
            paths::HELLO,
            &None::<crate::bootstrap::Candidate>,
            Duration::from_secs(2),
        )
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
    Ok(Json(json!(cp.change_voters(change).await?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveVoter {
    id: String,
}

async fn remove_voter(
    State(cp): Cp,
    QueryParams(q): QueryParams<RemoveVoter>,
) -> Result<Response, ApiError> {
    let id: MemberId =
        q.id.parse()
            .map_err(|e| ApiError::bad_request(format!("id: {e}")))?;
    let status = cp
        .change_voters(VoterChange::Remove { id: id.get() })
        .await?;
    Ok(Json(json!(status)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EpochBody {
    reason: Option<String>,
}

async fn epoch_bump(
    State(cp): Cp,
    JsonBody(body): JsonBody<Option<EpochBody>>,
) -> Result<Json<Value>, ApiError> {
    let reason = body
        .and_then(|b| b.reason)
        .unwrap_or_else(|| "operator".to_string());
    let applied = cp.write(Command::EpochBump { reason }).await?;
    match applied.output {
        CommandOutput::EpochStarted { epoch, index } => {
            Ok(Json(json!({ "epoch": epoch, "index": index })))
        }
        other => Err(ApiError::bad_request(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

async fn snapshot(
    State(cp): Cp,
    QueryParams(q): QueryParams<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    read_point(&cp, q.stale).await?;
    let state = cp.state().read();
    let index = state.last_applied.map_or(0, |l| l.index);
    Ok(Json(views::registry(&state.registry, index)))
}

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

async fn kv_list(
    State(cp): Cp,
    QueryParams(q): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    let at = read_point(&cp, q.stale).await?;
    let state = cp.state().read();
    let prefix = q.prefix.unwrap_or_default();
    let entries: Vec<Value> = state
        .registry
        .kv_prefix(&prefix)
        .map(|(k, e)| views::kv(k, e))
        .collect();
    Ok((
        [(INDEX_HEADER, at.to_string())],
        Json(Value::Array(entries)),
    )
        .into_response())
}

async fn kv_put(
    State(cp): Cp,
    Path(key): Path<String>,
    QueryParams(q): QueryParams<WriteQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
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
        Json(json!({ "index": modify_index })),
    )
        .into_response())
}

async fn kv_delete(
    State(cp): Cp,
    Path(key): Path<String>,
    QueryParams(q): QueryParams<WriteQuery>,
) -> Result<Json<Value>, ApiError> {
    let applied = cp.write(Command::KvDelete { key, cas: q.cas }).await?;
    let CommandOutput::KvDeleted { deleted } = applied.output else {
        return Err(ApiError::bad_request(format!(
            "unexpected outcome {:?}",
            applied.output
        )));
    };
    Ok(Json(json!({ "deleted": deleted, "index": applied.index })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    wait: Option<String>,
    epoch: Option<u64>,
    limit: Option<usize>,
}

/// Parses `30s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("wait: {text:?} is not a duration like 30s or 500ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("wait: unknown unit in {text:?} (use ms, s or m)")),
    };
    if d > MAX_WAIT {
        return Err(format!("wait: at most {}s", MAX_WAIT.as_secs()));
    }
    Ok(d)
}

/// Long-poll of the event feed from this member's applied state.
async fn events(
    State(cp): Cp,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
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
        Ok(page) => Ok(Json(json!({
            "epoch": page.epoch,
            "first_index": page.first_index,
            "applied_index": page.applied_index,
            "next_after": page.next_after,
            "events": page.events.iter().map(views::event).collect::<Vec<_>>(),
        }))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_wait;
    use std::time::Duration;

    #[test]
    fn wait_durations() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_wait("7"), Ok(Duration::from_secs(7)));
        assert!(parse_wait("10h").is_err());
        assert!(parse_wait("abc").is_err());
        assert!(parse_wait("301s").is_err());
    }
}
