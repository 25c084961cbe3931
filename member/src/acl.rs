//! ACL enforcement on every `/v1` route (DESIGN.md §6e): what a request needs ([`need`], sans
//! IO), who is asking (the token in `Authorization: Bearer`, `X-Hivemind-Token` or
//! `X-Consul-Token`, else anonymous), and the decision, made by `common::acl::allows` over the
//! token's policies. `--admin-token` stays a management token, and before `acl bootstrap` a
//! cluster behaves as it always did (open, or the admin token alone).
//!
//! Every member enforces from its own copy of the ACL table ([`AclCache`]): re-read from the
//! control plane on every `acl_changed` event its feed brings, every [`REFRESH`] while its feed
//! is behind, and at once when a token it does not know is presented (a token made a moment
//! ago on another member works right away; a deleted one may keep working until the member's
//! feed brings the change, as in Consul's token cache).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hivemind_common::acl::{allows, Access, Resource, Rules};
use hivemind_common::backoff::Backoff;
use hivemind_common::secret::{constant_time_eq, is_token};
use hivemind_control_plane::http::ApiError;
use hivemind_control_plane::registry::{AclTable, ANONYMOUS};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::auth::{CONSUL_TOKEN_HEADER, TOKEN_HEADER};
use crate::state::Agent;

/// How often a member re-reads the ACL table.
pub const REFRESH: Duration = Duration::from_secs(5);
/// How long a request waits for a fresher table (an unknown token, or none read yet).
const WAIT_FOR_TABLE: Duration = Duration::from_secs(3);

/// What a request touches and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need<'a> {
    pub resource: Resource<'a>,
    pub access: Access,
}

/// How a refusal names the resource.
fn describe(resource: &Resource<'_>) -> String {
    match resource {
        Resource::Cp => "cp".into(),
        Resource::Events => "events".into(),
        Resource::Backup => "backup".into(),
        Resource::Acl => "acl".into(),
        Resource::Kv(k) => format!("kv {k:?}"),
        Resource::Keygroup(k) => format!("keygroup {k:?}"),
        Resource::Role(r) => format!("role {r:?}"),
    }
}

/// What a `/v1` request needs (sans IO): reads are GET/HEAD, everything else writes. Routes
/// nobody names (and the cluster's own state: status, members, nodes) fall under `cp`.
pub fn need<'a>(method: &Method, path: &'a str) -> Need<'a> {
    let access = if matches!(*method, Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    };
    let rest = path.strip_prefix("/v1/").unwrap_or(path);
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let resource = match first {
        "kv" => Resource::Kv(tail),
        "keygroups" => Resource::Keygroup(tail),
        "events" => Resource::Events,
        "backup" => Resource::Backup,
        "acl" => Resource::Acl,
        "roles" => Resource::Role(tail.split('/').next().unwrap_or("")),
        // Consul's catalog and health routes serve the host role's records.
        "catalog" | "health" => Resource::Role("host"),
        _ => Resource::Cp,
    };
    Need { resource, access }
}

/// The token a request presents, if any.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let direct = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let consul = headers
        .get(CONSUL_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    bearer.or(direct).or(consul).map(str::trim)
}

/// Who made a request, for the access log: a token's accessor, `admin-token` or `anonymous`;
/// never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accessor(pub String);

/// The ACL table with its policies parsed, as this member enforces it.
#[derive(Debug, Default)]
pub struct Enforced {
    pub table: AclTable,
    rules: BTreeMap<String, Rules>,
}

impl Enforced {
    pub fn new(table: AclTable) -> Self {
        // Rules were checked when written; one that no longer parses grants nothing.
        let rules = table
            .policies
            .iter()
            .filter_map(|(name, p)| Some((name.clone(), Rules::parse(&p.rules).ok()?)))
            .collect();
        Self { table, rules }
    }

    fn policies<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = &'a Rules> + 'a {
        names.iter().filter_map(|n| self.rules.get(n))
    }
}

/// The decision for one request (sans IO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Accessor),
    /// 401/403 with a code and a message naming what is missing; `who` for the access log.
    Refuse {
        status: StatusCode,
        code: &'static str,
        message: String,
        who: Accessor,
    },
    /// The secret is well formed but not in this table: look again in a fresher one.
    UnknownToken,
}

/// Decides a request needing `need` that presented `token` (sans IO). `admin` is
/// `--admin-token`.
pub fn decide(
    acl: &Enforced,
    admin: Option<&str>,
    token: Option<&str>,
    need: &Need<'_>,
) -> Verdict {
    if let (Some(admin), Some(given)) = (admin, token) {
        if constant_time_eq(admin.as_bytes(), given.as_bytes()) {
            return Verdict::Allow(Accessor("admin-token".into()));
        }
    }
    if !acl.table.bootstrapped {
        // Before ACLs: open, or the admin token alone, as before.
        return match admin {
            None => Verdict::Allow(Accessor("anonymous".into())),
            Some(_) => Verdict::Refuse {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "this member requires the admin token (Authorization: Bearer T or X-Hivemind-Token)".into(),
                who: Accessor(if token.is_some() { "wrong-token" } else { "anonymous" }.into()),
            },
        };
    }
    let (who, policies): (String, Vec<String>) = match token {
        None => ("anonymous".into(), vec![ANONYMOUS.to_string()]),
        Some(secret) if !is_token(secret) => {
            return Verdict::Refuse {
                status: StatusCode::UNAUTHORIZED,
                code: "malformed_token",
                message: "the token is not an ACL secret (a UUID such as 0b6a1c52-6f7e-4d2b-9a3c-1f2e3d4c5b6a)".into(),
                who: Accessor("malformed-token".into()),
            }
        }
        Some(secret) => match acl.table.token_by_secret(secret) {
            None => return Verdict::UnknownToken,
            Some(t) if t.management => return Verdict::Allow(Accessor(t.accessor.clone())),
            Some(t) => (t.accessor.clone(), t.policies.clone()),
        },
    };
    if allows(acl.policies(&policies), &need.resource, need.access) {
        return Verdict::Allow(Accessor(who));
    }
    let wanted = match need.access {
        Access::Read => "read",
        _ => "write",
    };
    let message = format!(
        "{} may not {wanted} {}",
        if who == "anonymous" {
            "an anonymous request".to_string()
        } else {
            format!("token {who}")
        },
        describe(&need.resource)
    );
    Verdict::Refuse {
        status: StatusCode::FORBIDDEN,
        code: "permission_denied",
        message,
        who: Accessor(who),
    }
}

/// This member's copy of the ACL table: `None` until first read.
pub struct AclCache {
    current: watch::Sender<Option<Arc<Enforced>>>,
    /// Asks the refresh loop for a read now.
    wake: Notify,
    /// Reads of the table that failed (`/metrics`).
    pub failures: AtomicU64,
}

impl Default for AclCache {
    fn default() -> Self {
        Self {
            current: watch::channel(None).0,
            wake: Notify::new(),
            failures: AtomicU64::new(0),
        }
    }
}

impl AclCache {
    /// The control plane's table changed: read it again now.
    pub(crate) fn changed(&self) {
        self.wake.notify_one();
    }

    /// The table, waiting for a first read (bounded) when none was made yet.
    async fn table(&self) -> Option<Arc<Enforced>> {
        if let Some(table) = self.current.borrow().clone() {
            return Some(table);
        }
        self.fresher(None).await
    }

    /// A table newer than `than` (another `Arc`), waiting at most [`WAIT_FOR_TABLE`].
    async fn fresher(&self, than: Option<&Arc<Enforced>>) -> Option<Arc<Enforced>> {
        let mut rx = self.current.subscribe();
        rx.mark_unchanged();
        self.wake.notify_one();
        let _ = tokio::time::timeout(WAIT_FOR_TABLE, rx.changed()).await;
        let now = rx.borrow().clone();
        match (now, than) {
            (Some(now), Some(than)) if Arc::ptr_eq(&now, than) => None,
            (now, _) => now,
        }
    }
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
                    let caught_up = agent.caught_up.load(Ordering::Relaxed);
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
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    // A change of the ACL table itself: answered only once this member enforces it.
    let acl_write = path.starts_with("/v1/acl/") && request.method() != Method::GET;
    let need = need(request.method(), path);
    let token = presented(request.headers());
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
    let mut verdict = decide(&table, admin, token, &need);
    if verdict == Verdict::UnknownToken {
        if let Some(fresher) = agent.acl.fresher(Some(&table)).await {
            table = fresher;
            verdict = decide(&table, admin, token, &need);
        }
    }
    match verdict {
        Verdict::Allow(accessor) => {
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
