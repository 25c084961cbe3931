//! The ACL decision (DESIGN.md §6e), sans IO: given the ACL table, `--admin-token`, the token a
//! request presents and what it needs, allow it (with the [`Grant`] its answer is filtered by)
//! or refuse it with a code. Members decide their `/v1` routes with it (`member::acl`), and
//! the control plane decides with it what a member may do for a client (a member forwards the
//! client's token; `crate::authority`), so the rule lives here once.
//!
//! Order: the admin token is management; before `acl bootstrap` a cluster is open (or needs
//! the admin token alone); a management token may do everything; otherwise the token's
//! policies (or the `anonymous` policy) decide through `common::acl::allows`. An expired
//! token (`ExpirationTTL`) is refused as Consul does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use hivemind_common::acl::{allows, Access, Resource, Rules};
use hivemind_common::secret::{constant_time_eq, is_token};

use crate::registry::{AclTable, ANONYMOUS};

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
        Resource::Management => "the whole registry (a management token)".into(),
        Resource::Kv(k) => format!("kv {k:?}"),
        Resource::KvKeys => "kv (some prefix; each key is checked)".into(),
        Resource::Keygroup(k) => format!("keygroup {k:?}"),
        Resource::Role(r) => format!("role {r:?}"),
    }
}

/// Who made a request, for the access log: a token's accessor, `admin-token` or `anonymous`;
/// never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accessor(pub String);

/// The ACL table with its policies parsed, as a member or the control plane enforces it.
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

/// What an allowed request may see: answers that list (KV entries, keygroups, events) keep
/// only what this grants ([`Grant::allows`]).
#[derive(Debug, Clone)]
pub enum Grant {
    /// No ACLs, the admin token or a management token.
    All,
    /// The policies of the token (or `anonymous`), in the table they were decided on.
    Policies {
        acl: Arc<Enforced>,
        names: Vec<String>,
    },
}

impl Grant {
    /// Whether this grant allows `access` on `resource`.
    pub fn allows(&self, resource: &Resource<'_>, access: Access) -> bool {
        match self {
            Grant::All => true,
            Grant::Policies { acl, names } => allows(acl.policies(names), resource, access),
        }
    }
}

/// The decision for one request (sans IO).
#[derive(Debug, Clone)]
pub enum Verdict {
    Allow(Accessor, Grant),
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

impl Verdict {
    pub fn is_unknown_token(&self) -> bool {
        matches!(self, Verdict::UnknownToken)
    }
}

/// Decides a request needing `need` that presented `token` at wall-clock time `now_ms` (sans
/// IO). `admin` is `--admin-token`.
pub fn decide(
    acl: &Arc<Enforced>,
    admin: Option<&str>,
    token: Option<&str>,
    need: &Need<'_>,
    now_ms: u64,
) -> Verdict {
    if let (Some(admin), Some(given)) = (admin, token) {
        if constant_time_eq(admin.as_bytes(), given.as_bytes()) {
            return Verdict::Allow(Accessor("admin-token".into()), Grant::All);
        }
    }
    if !acl.table.bootstrapped {
        // Before ACLs: open, or the admin token alone, as before.
        return match admin {
            None => Verdict::Allow(Accessor("anonymous".into()), Grant::All),
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
            Some(t) if t.expired(now_ms) => {
                return Verdict::Refuse {
                    status: StatusCode::UNAUTHORIZED,
                    code: "token_expired",
                    message: format!("token {} has expired", t.accessor),
                    who: Accessor(t.accessor.clone()),
                }
            }
            Some(t) if t.management => {
                return Verdict::Allow(Accessor(t.accessor.clone()), Grant::All)
            }
            Some(t) => (t.accessor.clone(), t.policies.clone()),
        },
    };
    if allows(acl.policies(&policies), &need.resource, need.access) {
        let grant = Grant::Policies {
            acl: acl.clone(),
            names: policies,
        };
        return Verdict::Allow(Accessor(who), grant);
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

/// Milliseconds since the Unix epoch by this machine's clock (what token expiry is judged by).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
