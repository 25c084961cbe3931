//! ACL enforcement on every `/v1` route (DESIGN.md §6e): what a request needs ([`need`], sans
//! IO), who is asking (the token in `Authorization: Bearer`, `X-Hivemind-Token`,
//! `X-Consul-Token` or Consul's `?token=`, else anonymous), and the decision
//! (`hivemind_control_plane::access::decide`, the one rule the control plane also applies to
//! what a member asks for a client). `--admin-token` stays a management token, and before
//! `acl bootstrap` a cluster behaves as it always did (open, or the admin token alone). An
//! allowed request carries its [`Grant`] (answers that list filter by it) and the
//! [`ClientToken`] (forwarded when a member asks the control plane to act for the client).
//!
//! Every member enforces from its own copy of the ACL table ([`AclCache`]): re-read from the
//! control plane on every `acl_changed` event its feed brings, every [`REFRESH`] while its feed
//! is behind, and at once when a token it does not know is presented (a token made a moment
//! ago on another member works right away; a deleted one may keep working until the member's
//! feed brings the change, as in Consul's token cache).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hivemind_common::acl::{Access, Resource};
use hivemind_common::backoff::Backoff;
pub use hivemind_control_plane::access::{decide, Accessor, Enforced, Grant, Need, Verdict};
use hivemind_control_plane::http::ApiError;
use tokio_util::sync::CancellationToken;

pub use crate::cp::cp_access::ClientToken;
pub use crate::http::acl_cache::AclCache;
use crate::http::auth::{CONSUL_TOKEN_HEADER, TOKEN_HEADER};
use crate::state::Agent;

/// How often a member re-reads the ACL table.
pub const REFRESH: Duration = Duration::from_secs(5);

/// What a `/v1` request needs (sans IO): reads are GET/HEAD, everything else writes. Routes
/// nobody names (and the cluster's own state: status, members, nodes) fall under `cp`; the
/// whole registry (`/v1/cp/snapshot`) needs a management token; a KV listing needs its
/// `prefix` (`list_prefix`, from the query), and its answer keeps only the keys the token
/// may read.
pub fn need<'a>(method: &Method, path: &'a str, list_prefix: Option<&'a str>) -> Need<'a> {
    let access = if matches!(*method, Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    };
    let rest = path.strip_prefix("/v1/").unwrap_or(path);
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let resource = match first {
        "kv" if tail.is_empty() => Resource::Kv(list_prefix.unwrap_or("")),
        "kv" => Resource::Kv(tail),
        // A transaction's keys and a lease's are checked one by one by the route.
        "txn" | "leases" | "locks" => Resource::KvKeys,
        "cp" if tail == "snapshot" => Resource::Management,
        "keygroups" => Resource::Keygroup(tail),
        "events" => Resource::Events,
        "backup" => Resource::Backup,
        "acl" => Resource::Acl,
        "roles" => Resource::Role(tail.split('/').next().unwrap_or("")),
        // The dashboard's view of every nginx member (`crate::http::dashboard`).
        "nginx" => Resource::Role("nginx"),
        // Consul's catalog and health routes serve the host role's records, and its agent API
        // registers them (`/v1/agent/self` is the member's own, under `cp`).
        "catalog" | "health" => Resource::Role("host"),
        "agent" if tail != "self" => Resource::Role("host"),
        _ => Resource::Cp,
    };
    Need { resource, access }
}

/// The token a request presents, if any: a header, else `?token=` (`query_token`).
pub fn presented<'a>(headers: &'a HeaderMap, query_token: Option<&'a str>) -> Option<&'a str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let direct = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let consul = headers
        .get(CONSUL_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    bearer.or(direct).or(consul).or(query_token).map(str::trim)
}

/// `uri` without its `token` query parameter: routes never see the secret (and strict query
/// parsers do not refuse it).
fn without_token(uri: &axum::http::Uri) -> axum::http::Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some("token"))
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    axum::http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// The query parameters `token` and `prefix`, decoded.
fn query_params(uri: &axum::http::Uri) -> (Option<String>, Option<String>) {
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let find = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    (find("token"), find("prefix"))
}

/// Keeps this member's ACL table fresh: on every `acl_changed` event of the feed and when a
/// request asks, and every [`REFRESH`] while the feed is behind ([`timed_read_due`]).
pub(crate) async fn refresh(agent: Arc<Agent>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), REFRESH);
    loop {
        match agent.cp.acl_table().await {
            Ok(table) => {
                let changed = agent
                    .acl
                    .current
                    .borrow()
                    .as_ref()
                    .is_none_or(|old| old.table != table);
                if changed {
                    agent
                        .acl
                        .current
                        .send_replace(Some(Arc::new(Enforced::new(table))));
                } else {
                    // Still wake the requests waiting for a look.
                    agent.acl.current.send_modify(|_| {});
                }
                backoff.reset();
            }
            Err(e) => {
                agent.acl.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "cannot read the ACL table; keeping the last one");
            }
        }
        loop {
            let have_table = agent.acl.current.borrow().is_some();
            let wait = if have_table {
                REFRESH
            } else {
                backoff.next_wait()
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {
                    let caught_up = agent.membership.caught_up();
                    if timed_read_due(have_table, caught_up) {
                        break;
                    }
                }
                _ = agent.acl.wake.notified() => break,
            }
        }
    }
}

/// Whether the [`REFRESH`] timer should re-read the ACL table (sans IO). Every ACL change is
/// an `acl_changed` event in the feed, which wakes the read at once; so while this member's
/// feed is caught up the timer has nothing to add, and skipping it keeps a member to one
/// connection to its CP member (its feed long-poll) instead of a second one kept open by a
/// read every 5 s. Without a table yet, or with the feed behind (a failed feed read counts as
/// behind: `feed::follow` clears `caught_up`), the timer reads.
pub(crate) fn timed_read_due(have_table: bool, feed_caught_up: bool) -> bool {
    !have_table || !feed_caught_up
}

/// Middleware enforcing ACLs on `/v1/*` (internal routes have the cluster secret and mutual
/// TLS; `/metrics` and the dashboard page are outside `/v1`).
pub(crate) async fn enforce(
    State(agent): State<Arc<Agent>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    if !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    // A change of the ACL table itself: answered only once this member enforces it.
    let acl_write = path.starts_with("/v1/acl/") && request.method() != Method::GET;
    let (query_token, prefix) = query_params(request.uri());
    if query_token.is_some() {
        *request.uri_mut() = without_token(request.uri());
    }
    let need = need(request.method(), &path, prefix.as_deref());
    let token = presented(request.headers(), query_token.as_deref()).map(str::to_string);
    let token = token.as_deref();
    let admin = agent.config.admin_token.as_deref();
    let Some(mut table) = agent.acl.table().await else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "acl_unavailable",
            "this member has not read the ACL table from the control plane yet",
        )
        .into_response();
    };
    // (Before bootstrap and without an admin token everything is allowed, `acl bootstrap`
    // included.)
    let now = hivemind_control_plane::access::now_ms();
    let mut verdict = decide(&table, admin, token, &need, now);
    if verdict.is_unknown_token() {
        if let Some(fresher) = agent.acl.fresher(Some(&table)).await {
            table = fresher;
            verdict = decide(&table, admin, token, &need, now);
        }
    }
    match verdict {
        Verdict::Allow(accessor, grant) => {
            request.extensions_mut().insert(grant);
            request
                .extensions_mut()
                .insert(ClientToken(token.map(str::to_string)));
            let mut response = next.run(request).await;
            if acl_write && response.status().is_success() {
                // This member enforces its own ACL changes before it answers them.
                let _ = agent.acl.fresher(Some(&table)).await;
            }
            response.extensions_mut().insert(accessor);
            response
        }
        Verdict::Refuse {
            status,
            code,
            message,
            who,
        } => {
            let mut response = ApiError::new(status, code, message).into_response();
            response.extensions_mut().insert(who);
            response
        }
        Verdict::UnknownToken => {
            let mut response = ApiError::new(
                StatusCode::FORBIDDEN,
                "acl_not_found",
                "no ACL token has this secret",
            )
            .into_response();
            response
                .extensions_mut()
                .insert(Accessor("unknown-token".into()));
            response
        }
    }
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
