//! Who may call which internal operation, and for whom (DESIGN.md §6e-2), sans IO. A
//! certificate says who a process is ([`hivemind_tls::identity`]); the control plane acts on
//! that, never on what a request body claims:
//! - Raft (append, vote, pre-vote, snapshot, the append stream), raw writes and proposals,
//!   voter changes, bootstrap hellos, whole-registry and internal KV reads answer only
//!   control-plane certificates ([`may_call`]): every internal route is control-plane-only
//!   unless [`MEMBER_PATHS`] names it, so a new route is closed until someone opens it here.
//! - A member speaks only for itself ([`may_request`], [`may_join`]): its admission, leave,
//!   address, reports, backup ledger changes, claims and keygroup joins name the
//!   certificate's member and that member's node.
//! - A member reads a node-scoped view ([`secrets_for`]): keygroup secrets only of the
//!   keygroups its node replicates or triggers (`KeygroupConfig::may_see_secret`).
//!
//! Without TLS there is no identity: every member holds the cluster secret and is trusted as
//! one trust domain ([`Caller::SharedSecret`]).

use std::sync::Arc;

use hivemind_common::MemberId;
use hivemind_tls::CertIdentity;

use hivemind_common::acl::{Access, Resource};

use crate::access::{self, Enforced, Need, Verdict};
pub use crate::error::Denied;
use crate::member_requests::{AclRequest, MemberRequest};
use crate::ops::{self, Op};
use crate::registry::{Actor, MemberInfo, MemberState, Registry};

/// Who is calling an internal route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The control-plane member itself, in process.
    InProcess,
    /// No TLS: the cluster secret was presented (or the cluster has none). One trust domain.
    SharedSecret,
    /// A certificate from the cluster CA, and the member it names (`None`: it names none, e.g.
    /// a `--client` certificate).
    Certified(Option<Arc<CertIdentity>>),
}

impl Caller {
    /// A certificate-holding member of the given name (tests, in-process checks).
    pub fn member(name: &str, control_plane: bool) -> Self {
        Caller::Certified(Some(Arc::new(CertIdentity {
            name: name.to_string(),
            control_plane,
        })))
    }

    /// Trusted with everything: the control plane, or a cluster without identities.
    pub fn is_control_plane(&self) -> bool {
        match self {
            Caller::InProcess | Caller::SharedSecret => true,
            Caller::Certified(identity) => identity.as_ref().is_some_and(|i| i.control_plane),
        }
    }

    /// The member a certificate names, when the caller is held to one.
    fn member_name(&self) -> Option<&str> {
        match self {
            Caller::Certified(Some(identity)) => Some(&identity.name),
            _ => None,
        }
    }
}

/// The internal routes a member outside the control plane may call: its requests (checked by
/// [`may_request`]), the feed, status, joins (checked by [`may_join`]), its node-scoped view
/// and keygroup reads, the ACL policies and token hashes it enforces, and the call stream
/// (whose frames are each checked again). Everything else is control-plane-only.
pub const MEMBER_PATHS: &[&str] = &[
    ops::Request::PATH,
    ops::Feed::PATH,
    ops::Status::PATH,
    ops::Join::PATH,
    ops::View::PATH,
    ops::KeygroupRead::PATH,
    ops::AclTable::PATH,
    ops::CALL_STREAM,
];

/// Whether `caller` may call internal route `path` at all.
pub fn may_call(path: &str, caller: &Caller) -> Result<(), Denied> {
    if caller.is_control_plane() {
        return Ok(());
    }
    if caller.member_name().is_none() {
        return Err(Denied::NoIdentity);
    }
    if MEMBER_PATHS.contains(&path) {
        Ok(())
    } else {
        Err(Denied::NotControlPlane {
            path: path.to_string(),
        })
    }
}

/// The live member the caller's certificate names, in `registry`.
fn live<'a>(registry: &'a Registry, name: &str) -> Option<&'a MemberInfo> {
    registry
        .members()
        .values()
        .find(|m| m.state == MemberState::Alive && m.info.name == name)
        .map(|m| &m.info)
}

fn not_yours(caller: &str, detail: String) -> Denied {
    Denied::NotYourIdentity {
        caller: caller.to_string(),
        detail,
    }
}

/// Whether a join names the caller: its own name, and a control-plane member only with a
/// control-plane certificate.
pub fn may_join(member: &MemberInfo, caller: &Caller) -> Result<(), Denied> {
    if matches!(caller, Caller::InProcess | Caller::SharedSecret) {
        return Ok(());
    }
    let Caller::Certified(Some(identity)) = caller else {
        return Err(Denied::NoIdentity);
    };
    if member.name != identity.name {
        return Err(not_yours(
            &identity.name,
            format!("a join for member {:?}", member.name),
        ));
    }
    if member.control_plane && !identity.control_plane {
        return Err(Denied::NotControlPlane {
            path: ops::Join::PATH.to_string(),
        });
    }
    Ok(())
}

/// For whom a member asks beyond itself: the client whose token it forwards, judged with the
/// control plane's own `--admin-token` at wall-clock `now_ms`.
#[derive(Clone, Copy)]
pub struct ForClient<'a> {
    pub token: Option<&'a str>,
    pub admin_token: Option<&'a str>,
    pub now_ms: u64,
}

impl ForClient<'_> {
    /// Whether the client's token allows `need` (the rule members apply on `/v1`,
    /// [`access::decide`], on the control plane's table).
    fn allows(&self, need: Need<'_>, registry: &Registry) -> Result<(), Denied> {
        let acl = std::sync::Arc::new(Enforced::new(registry.acl().clone()));
        match access::decide(&acl, self.admin_token, self.token, &need, self.now_ms) {
            Verdict::Allow(..) => Ok(()),
            Verdict::Refuse { code, message, .. } => Err(Denied::ClientNotAllowed {
                detail: format!("{code}: {message}"),
            }),
            Verdict::UnknownToken => Err(Denied::ClientNotAllowed {
                detail: "acl_not_found: no ACL token has this secret".into(),
            }),
        }
    }
}

/// Whether `caller` may ask `request`, judged on `registry` (sans IO). What a member asks for
/// a client (ACL changes, the admin's keygroup changes) needs the client's token to allow it
/// (`client`).
pub fn may_request(
    request: &MemberRequest,
    caller: &Caller,
    registry: &Registry,
    client: ForClient<'_>,
) -> Result<(), Denied> {
    if caller.is_control_plane() {
        return Ok(());
    }
    let Some(name) = caller.member_name() else {
        return Err(Denied::NoIdentity);
    };
    let is_me = |id: &MemberId| -> Result<(), Denied> {
        match registry.member(*id) {
            Some(m) if m.info.name == name => Ok(()),
            Some(m) => Err(not_yours(name, format!("member {id} is {:?}", m.info.name))),
            None => Err(not_yours(name, format!("member {id} is not known"))),
        }
    };
    let my_node = |node: &str| -> Result<(), Denied> {
        match live(registry, name) {
            Some(me) if me.node == node => Ok(()),
            Some(me) => Err(not_yours(
                name,
                format!("node {node:?} is not its node {:?}", me.node),
            )),
            None => Err(not_yours(name, "it is not a live member".into())),
        }
    };
    match request {
        MemberRequest::Admit { member } => may_join(member, caller),
        MemberRequest::Leave { id }
        | MemberRequest::MoveAddress { id, .. }
        | MemberRequest::Report { member: id, .. }
        | MemberRequest::Backup { member: id, .. } => is_me(id),
        // SWIM's verdicts are about other members by nature (a wrong one is refuted by the
        // member's renewal, as in SWIM itself).
        MemberRequest::ReportFailed { .. } => Ok(()),
        MemberRequest::CreateKeygroup { node, .. } | MemberRequest::JoinKeygroup { node, .. } => {
            my_node(node)
        }
        MemberRequest::UpdateKeygroup { name: k, by, .. }
        | MemberRequest::DeleteKeygroup { name: k, by } => match by {
            Actor::Node(node) => my_node(node),
            Actor::Admin => client.allows(
                Need {
                    resource: Resource::Keygroup(k),
                    access: Access::Write,
                },
                registry,
            ),
        },
        MemberRequest::Claim { node, machine, .. } => {
            is_me(machine)?;
            my_node(node)
        }
        // Bootstrap is open to anyone once (as the public route is); every other ACL change
        // needs the client's token to allow it.
        MemberRequest::Acl(AclRequest::Bootstrap) => Ok(()),
        MemberRequest::Acl(_) => client.allows(
            Need {
                resource: Resource::Acl,
                access: Access::Write,
            },
            registry,
        ),
    }
}

/// Whose keygroup secrets a read may carry: those of the node the caller names in its request,
/// which a certified member must name as its own (a control-plane certificate may read any
/// node's). A member not admitted yet reads a view without any secret (`None`).
pub fn secrets_for(
    asked: &str,
    caller: &Caller,
    registry: &Registry,
) -> Result<Option<Actor>, Denied> {
    if caller.is_control_plane() {
        return Ok(Some(Actor::Node(asked.to_string())));
    }
    let Some(name) = caller.member_name() else {
        return Err(Denied::NoIdentity);
    };
    match live(registry, name) {
        Some(me) if me.node == asked => Ok(Some(Actor::Node(asked.to_string()))),
        Some(me) => Err(not_yours(
            name,
            format!("node {asked:?} is not its node {:?}", me.node),
        )),
        None => Ok(None),
    }
}

/// How the answers to a member's requests are scoped: `None` for a caller trusted with
/// everything, else `Some(its live node as the reader)` (`Some(None)`: not admitted, no
/// secret at all).
pub fn answer_scope(caller: &Caller, registry: &Registry) -> Option<Option<Actor>> {
    if caller.is_control_plane() {
        return None;
    }
    let name = caller.member_name()?;
    Some(live(registry, name).map(|me| Actor::Node(me.node.clone())))
}

#[cfg(test)]
mod tests;
