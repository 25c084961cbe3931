//! The trigger role's routes: `GET /v1/roles/trigger/events` (a long-poll of the changes),
//! `/records` and `/status` (the intake's views), and the OpenAPI document of all three.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hivemind_subscriptions::routes::{records_view, status_view};
use hivemind_subscriptions::{IntakeRecordsView, IntakeStatusView};
use serde::Serialize;
use serde_json::json;

use crate::changes::{Change, Page};
use crate::RoleState;
use crate::MAX_PAGE;

const MAX_WAIT: Duration = Duration::from_secs(300);

/// The trigger role's routes, for the OpenAPI document (mounted only on members with
/// `--roles trigger`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(events_route, records_route, status_route),
    components(schemas(Change, ChangesPage, IntakeRecordsView, IntakeStatusView, hivemind_common::api::ErrorBody)),
    tags((name = "trigger role", description = "On members with --roles trigger"))
)]
pub struct TriggerApi;

/// The trigger role's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <TriggerApi as utoipa::OpenApi>::openapi()
}

/// A page of changes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangesPage {
    pub changes: Vec<Change>,
    /// Pass as `after` to continue.
    pub next_after: u64,
}

/// The records this machine holds for the keygroups it triggers on, and its intake counters.
#[utoipa::path(get, path = "/v1/roles/trigger/records", tag = "trigger role",
    operation_id = "trigger_records",
    responses((status = 200, description = "The records held", body = IntakeRecordsView)))]
pub(crate) async fn records_route(State(state): State<RoleState>) -> Json<IntakeRecordsView> {
    Json(records_view(&state.intake))
}

/// Per keygroup triggered on: whether this machine holds it (and its fence), which machine
/// does otherwise, and how many streams it holds for it.
#[utoipa::path(get, path = "/v1/roles/trigger/status", tag = "trigger role",
    operation_id = "trigger_status",
    responses((status = 200, description = "Where this machine stands per keygroup", body = IntakeStatusView)))]
pub(crate) async fn status_route(State(state): State<RoleState>) -> Json<IntakeStatusView> {
    Json(status_view(&state.intake))
}

#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Changes after this index.
    #[serde(default)]
    after: u64,
    /// Long-poll: wait up to this long for a change (`30s`, `500ms`; at most 300 s).
    wait: Option<String>,
    /// At most this many changes (1..1000).
    limit: Option<usize>,
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(hivemind_common::api::ErrorBody::new("bad_request", message)),
    )
        .into_response()
}

/// The record changes this machine received, numbered; a long-poll.
#[utoipa::path(get, path = "/v1/roles/trigger/events", tag = "trigger role", params(EventsQuery),
    operation_id = "trigger_events",
    responses((status = 200, description = "A page of changes", body = ChangesPage),
        (status = 400, description = "Bad query", body = hivemind_common::api::ErrorBody),
        (status = 410, description = "The cursor is older than the changes kept (gone)", body = hivemind_common::api::ErrorBody)))]
pub(crate) async fn events_route(
    State(state): State<RoleState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return bad_request("query: expected after=N, wait=D, limit=L".into());
    };
    let wait = match q
        .wait
        .as_deref()
        .map(|w| hivemind_common::duration::parse_wait(w, MAX_WAIT))
        .transpose()
    {
        Ok(w) => w.unwrap_or(Duration::ZERO),
        Err(e) => return bad_request(e),
    };
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let mut changed = state.trigger.change_tx.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let page = state
            .trigger
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .after(q.after, limit);
        match page {
            Page::Gone { first_index } => {
                return (
                    StatusCode::GONE,
                    Json(json!({"error": {"code": "gone", "first_index": first_index,
                        "message": format!("changes before {first_index} are no longer kept")}})),
                )
                    .into_response()
            }
            Page::Changes {
                changes,
                next_after,
            } if !changes.is_empty() || tokio::time::Instant::now() >= deadline => {
                return Json(ChangesPage {
                    changes,
                    next_after,
                })
                .into_response()
            }
            Page::Changes { .. } => {}
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = changed.changed() => {}
        }
    }
}
