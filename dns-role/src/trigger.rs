//! The `trigger` role (FBase's trigger nodes): a member of a node listed in a keygroup's
//! `triggers` receives the keygroup's record changes without serving them. It takes records
//! the way a dns machine does (one machine of the node holds the keygroup and subscribes to the
//! hosts, the others stream from it), and turns every change into an event:
//! - `GET /v1/roles/trigger/events?after=N&wait=30s`: a long-poll of the changes (on every
//!   machine of the node);
//! - `--trigger-webhook URL`: each change POSTed as JSON, in order, by the machine responsible
//!   for the keygroup, retried with backoff.
//!
//! [`ChangeLog`] (sans IO) numbers and keeps the last changes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hivemind_common::records::HostRecord;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Changes kept for readers that fall behind (older ones answer `gone`).
pub const KEPT: usize = 10_000;
const MAX_WAIT: Duration = Duration::from_secs(300);
const MAX_PAGE: usize = 1000;

/// The trigger role's own route, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(events_route),
    components(schemas(Change, ChangesPage, hivemind_common::api::ErrorBody)),
    tags((name = "trigger role", description = "On members with --roles trigger"))
)]
pub struct TriggerApi;

/// A page of changes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangesPage {
    pub changes: Vec<Change>,
    /// Pass as `after` to continue.
    pub next_after: u64,
}

/// One change of a keygroup's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// Numbers changes on this machine, from 1; `after` cursors use it.
    pub index: u64,
    /// `updated` (a newer record) or `removed` (the host failed or left, or the keygroup was
    /// deleted).
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub keygroup: String,
    pub host: String,
    pub member: String,
    pub seq: u64,
    #[schema(value_type = Vec<String>)]
    pub addrs: Vec<std::net::IpAddr>,
    pub services: Vec<hivemind_common::records::Service>,
}

impl Change {
    pub fn of(kind: &'static str, record: &HostRecord) -> Self {
        Self {
            index: 0,
            kind,
            keygroup: record.keygroup.clone(),
            host: record.host.clone(),
            member: record.member.to_string(),
            seq: record.seq,
            addrs: record.addrs.clone(),
            services: record.services.clone(),
        }
    }
}

/// The numbered, bounded log of changes.
#[derive(Debug, Default)]
pub struct ChangeLog {
    changes: VecDeque<Change>,
    last: u64,
}

/// A page of the log after a cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum Page {
    Changes {
        changes: Vec<Change>,
        next_after: u64,
    },
    /// The cursor points before the oldest change kept.
    Gone { first_index: u64 },
}

impl ChangeLog {
    pub fn push(&mut self, mut change: Change) -> u64 {
        self.last += 1;
        change.index = self.last;
        self.changes.push_back(change);
        while self.changes.len() > KEPT {
            self.changes.pop_front();
        }
        self.last
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    /// Up to `limit` changes after `after`.
    pub fn after(&self, after: u64, limit: usize) -> Page {
        let first = self.changes.front().map_or(self.last + 1, |c| c.index);
        if after + 1 < first {
            return Page::Gone { first_index: first };
        }
        let changes: Vec<Change> = self
            .changes
            .iter()
            .filter(|c| c.index > after)
            .take(limit)
            .cloned()
            .collect();
        let next_after = changes.last().map_or(after.max(first - 1), |c| c.index);
        Page::Changes {
            changes,
            next_after,
        }
    }
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
    responses((status = 200, description = "A page of changes", body = ChangesPage),
        (status = 400, description = "Bad query", body = hivemind_common::api::ErrorBody),
        (status = 410, description = "The cursor is older than the changes kept (gone)", body = hivemind_common::api::ErrorBody)))]
pub(crate) async fn events_route(
    State(shared): State<Arc<super::Shared>>,
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
    let mut changed = shared.change_tx.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let page = shared
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

/// Delivers every change of the keygroups this machine is responsible for to `url`, in
/// order; a failed POST is retried with backoff (counted), never skipped unless the log
/// dropped it meanwhile (counted too).
pub(crate) async fn webhook(shared: Arc<super::Shared>, url: String, shutdown: CancellationToken) {
    let mut changed = shared.change_tx.subscribe();
    let mut after = shared
        .changes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last();
    loop {
        let page = shared
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .after(after, MAX_PAGE);
        let changes = match page {
            Page::Gone { first_index } => {
                let lost = first_index - after - 1;
                shared
                    .counters
                    .webhook_dropped
                    .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(lost, "webhook fell behind the change log; changes skipped");
                after = first_index - 1;
                continue;
            }
            Page::Changes { changes, .. } => changes,
        };
        if changes.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.changed() => continue,
            }
        }
        for change in changes {
            after = change.index;
            if !shared.holds(&change.keygroup) {
                continue; // the machine responsible for it delivers it
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                let sent = shared
                    .http
                    .post(&url)
                    .json(&change)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        shared
                            .counters
                            .webhook_delivered
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                    outcome => {
                        shared
                            .counters
                            .webhook_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let error = match outcome {
                            Ok(r) => format!("answered {}", r.status()),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(%url, %error, index = change.index, "webhook delivery failed; retrying");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::MemberId;

    fn record(seq: u64) -> HostRecord {
        HostRecord {
            member: MemberId::new(1).unwrap(),
            host: "web-1".into(),
            keygroup: "a/b/c".into(),
            addrs: vec![],
            services: vec![],
            seq,
            generation: 1,
            keygroup_version: 1,
        }
    }

    fn indexes(page: Page) -> (Vec<u64>, u64) {
        match page {
            Page::Changes {
                changes,
                next_after,
            } => (changes.iter().map(|c| c.index).collect(), next_after),
            Page::Gone { .. } => panic!("gone"),
        }
    }

    #[test]
    fn changes_are_numbered_and_paged_after_a_cursor() {
        let mut log = ChangeLog::default();
        assert_eq!(indexes(log.after(0, 10)), (vec![], 0));
        for seq in 1..=5 {
            log.push(Change::of("updated", &record(seq)));
        }
        assert_eq!(indexes(log.after(0, 2)), (vec![1, 2], 2));
        assert_eq!(indexes(log.after(2, 10)), (vec![3, 4, 5], 5));
        assert_eq!(indexes(log.after(5, 10)), (vec![], 5));
    }

    #[test]
    fn a_cursor_before_the_kept_changes_is_gone() {
        let mut log = ChangeLog::default();
        for seq in 0..(KEPT as u64 + 3) {
            log.push(Change::of("updated", &record(seq)));
        }
        assert_eq!(log.after(0, 10), Page::Gone { first_index: 4 });
        assert_eq!(log.after(2, 10), Page::Gone { first_index: 4 });
        assert_eq!(indexes(log.after(3, 1)), (vec![4], 4));
    }
}
