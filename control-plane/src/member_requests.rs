//! The control plane's request surface for members: everything a member asks of the registry,
//! named by what it wants rather than by the command that does it. The control plane makes
//! every decision these need (a fresh keygroup secret, create-or-join, whether a claim is
//! already held); a member never builds a registry [`Command`]. One enum, served by the same
//! [`crate::ControlPlane::request`] whether the member runs the control plane in process or
//! calls it over the wire (`ops::Request`).
//!
//! [`command`] is the sans-IO half: the one command a request becomes when no registry read is
//! needed to decide.

use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cp_types::Applied;
use crate::registry::{
    new_secret, AclOp, Actor, Command, KeygroupConfig, KeygroupDelta, MemberInfo, MemberState,
    RegistryDigest, DEFAULT_TTL_SECS,
};

/// What a member asks of the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRequest {
    /// Admit this incarnation of the asking member (a control-plane member admits itself this
    /// way; others are admitted by their join).
    Admit { member: MemberInfo },
    /// The member leaves the cluster gracefully.
    Leave { id: MemberId },
    /// SWIM declared `id` down at `generation`.
    ReportFailed { id: MemberId, generation: u64 },
    /// The member's advertised addresses changed; `generation` is its renewed identity.
    MoveAddress {
        id: MemberId,
        generation: u64,
        http_addr: String,
        gossip_addr: String,
    },
    /// Creates keygroup `name` with `node` as its first replica and a fresh secret.
    CreateKeygroup {
        name: String,
        node: String,
        ttl_secs: Option<u32>,
        open: Option<bool>,
    },
    /// Makes `node` a replica of `name`: creates it `open` (with a fresh secret) if it does not
    /// exist, adds the node if the keygroup is open. Answers the keygroup as it then stands,
    /// read from a registry at least as new as `seen`.
    JoinKeygroup {
        name: String,
        node: String,
        seen: u64,
    },
    /// Changes keygroup `name` as `by` (all changes or none).
    UpdateKeygroup {
        name: String,
        by: Actor,
        changes: KeygroupChanges,
    },
    /// Tombstones keygroup `name` as `by`.
    DeleteKeygroup { name: String, by: Actor },
    /// Puts a role's report in the event feed as `member`'s.
    Report {
        member: MemberId,
        report: hivemind_common::role::RoleReport,
    },
    /// Makes `machine` responsible for `keygroup` in `node`, unless it already is or another
    /// live machine of the node is (then nothing is written). Decided on a registry at least as
    /// new as `seen`.
    Claim {
        node: String,
        keygroup: String,
        machine: MemberId,
        seen: u64,
    },
    /// A backup ledger change asked by `member` (the control plane stamps the time).
    Backup {
        member: MemberId,
        op: hivemind_common::backup::BackupOp,
    },
    /// An ACL change (DESIGN.md §6e); `Bootstrap` and `CreateToken` answer a fresh secret.
    Acl(AclRequest),
}

/// A member's request on the wire (`ops::Request`): what it asks and, for a request it makes
/// for a client (an ACL change, the admin's keygroup change), the client's token, with which
/// the control plane decides again (`crate::authority`). Never printed with the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCall {
    pub request: MemberRequest,
    pub client_token: Option<String>,
}

impl std::fmt::Debug for MemberCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberCall")
            .field("request", &self.request)
            .field("client_token", &self.client_token.as_ref().map(|_| ".."))
            .finish()
    }
}

/// An ACL change as a member asks for it: secrets are drawn by the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclRequest {
    Bootstrap,
    SetPolicy {
        name: String,
        rules: String,
    },
    DeletePolicy {
        name: String,
    },
    CreateToken {
        policies: Vec<String>,
        description: String,
        /// How long it works (Consul's `ExpirationTTL`); `None`: until deleted.
        ttl_ms: Option<u64>,
    },
    DeleteToken {
        accessor: String,
    },
}

/// A token just made: the only time its secret is seen outside the holder's hands.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    pub accessor: String,
    pub secret: String,
}

/// Never the secret.
impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("accessor", &self.accessor)
            .finish_non_exhaustive()
    }
}

/// The command an ACL request becomes at wall-clock time `now_ms`, and the token it makes
/// (whose secret only the asker hears; the command carries its hash). Sans IO apart from
/// drawing the secret.
pub fn acl_step(request: AclRequest, now_ms: u64) -> (Command, Option<NewToken>) {
    use hivemind_common::secret::{new_token, token_hash};
    let mut rng = rand::thread_rng();
    let mut fresh = || NewToken {
        accessor: new_token(&mut rng),
        secret: new_token(&mut rng),
    };
    let (op, token) = match request {
        AclRequest::Bootstrap => {
            let token = fresh();
            let op = AclOp::Bootstrap {
                accessor: token.accessor.clone(),
                secret_hash: token_hash(&token.secret),
            };
            (op, Some(token))
        }
        AclRequest::CreateToken {
            policies,
            description,
            ttl_ms,
        } => {
            let token = fresh();
            let op = AclOp::TokenCreate {
                accessor: token.accessor.clone(),
                secret_hash: token_hash(&token.secret),
                policies,
                description,
                expires_at_ms: ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
            };
            (op, Some(token))
        }
        AclRequest::SetPolicy { name, rules } => (AclOp::PolicySet { name, rules }, None),
        AclRequest::DeletePolicy { name } => (AclOp::PolicyDelete { name }, None),
        AclRequest::DeleteToken { accessor } => (AclOp::TokenDelete { accessor }, None),
    };
    (Command::Acl(op), token)
}

/// What the control plane answers a [`MemberRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberAnswer {
    /// The command the request became was committed and applied.
    Applied(Applied),
    /// `JoinKeygroup`: the keygroup as it stands once this node is a replica.
    Keygroup(KeygroupConfig),
    /// `Claim`: the asking machine holds the keygroup in its node, fenced by `fence`.
    Claimed { fence: u64 },
    /// `Claim`: another live machine of the node holds it.
    HeldBy { machine: MemberId },
    /// `Acl(Bootstrap | CreateToken)`: the token made, with its secret.
    Token(NewToken),
}

impl MemberAnswer {
    /// The answer as `reader` may see it (a keygroup's secret only for its replica and
    /// trigger nodes; `None`: no secret).
    pub fn scoped(self, reader: Option<&Actor>) -> Self {
        match self {
            MemberAnswer::Keygroup(k) => MemberAnswer::Keygroup(k.scoped(reader)),
            other => other,
        }
    }
}

/// The changes of one keygroup update (the body of `PATCH /v1/keygroups/...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeygroupChanges {
    #[serde(default)]
    pub add_replicas: Vec<String>,
    #[serde(default)]
    pub remove_replicas: Vec<String>,
    #[serde(default)]
    pub add_triggers: Vec<String>,
    #[serde(default)]
    pub remove_triggers: Vec<String>,
    pub ttl: Option<u32>,
    pub open: Option<bool>,
    /// A fresh secret, drawn by the control plane.
    #[serde(default)]
    pub rotate_secret: bool,
}

impl KeygroupChanges {
    /// The deltas these changes become, in the order the registry applies them.
    pub fn deltas(self) -> Vec<KeygroupDelta> {
        let mut deltas = Vec::new();
        deltas.extend(self.add_replicas.into_iter().map(KeygroupDelta::AddReplica));
        deltas.extend(
            self.remove_replicas
                .into_iter()
                .map(KeygroupDelta::RemoveReplica),
        );
        deltas.extend(self.add_triggers.into_iter().map(KeygroupDelta::AddTrigger));
        deltas.extend(
            self.remove_triggers
                .into_iter()
                .map(KeygroupDelta::RemoveTrigger),
        );
        deltas.extend(self.ttl.map(KeygroupDelta::SetTtl));
        deltas.extend(self.open.map(KeygroupDelta::SetOpen));
        if self.rotate_secret {
            deltas.push(KeygroupDelta::RotateSecret(new_secret()));
        }
        deltas
    }
}

/// The one command `request` becomes when deciding it needs no registry read (`None` for
/// `JoinKeygroup` and `Claim`, which [`crate::ControlPlane::request`] decides on the registry).
pub fn command(request: MemberRequest, now_ms: u64) -> Option<Command> {
    Some(match request {
        MemberRequest::Admit { member } => Command::Join {
            member,
            epoch: None,
        },
        MemberRequest::Leave { id } => Command::Leave { id },
        MemberRequest::ReportFailed { id, generation } => Command::Fail { id, generation },
        MemberRequest::MoveAddress {
            id,
            generation,
            http_addr,
            gossip_addr,
        } => Command::UpdateAddress {
            id,
            generation,
            http_addr,
            gossip_addr,
        },
        MemberRequest::CreateKeygroup {
            name,
            node,
            ttl_secs,
            open,
        } => Command::KeygroupCreate {
            name,
            creator: node,
            ttl_secs: ttl_secs.unwrap_or(DEFAULT_TTL_SECS),
            open: open.unwrap_or(false),
            secret: new_secret(),
        },
        MemberRequest::UpdateKeygroup { name, by, changes } => Command::KeygroupUpdate {
            name,
            by,
            deltas: changes.deltas(),
        },
        MemberRequest::DeleteKeygroup { name, by } => Command::KeygroupDelete { name, by },
        MemberRequest::Report { member, report } => Command::Report { member, report },
        MemberRequest::Backup { member, op } => Command::Backup { member, now_ms, op },
        MemberRequest::JoinKeygroup { .. }
        | MemberRequest::Claim { .. }
        | MemberRequest::Acl(_) => return None,
    })
}

/// What joining keygroup `name` as `node` takes, given the keygroup as it stands (if it
/// exists): nothing (already a replica), a tombstone error, or one command (sans IO apart
/// from a fresh secret).
pub fn join_keygroup_step(name: &str, node: &str, current: Option<&KeygroupConfig>) -> JoinStep {
    match current {
        Some(k) if k.tombstoned => JoinStep::Tombstoned,
        Some(k) if k.replicas.contains(node) => JoinStep::Joined(k.clone()),
        Some(_) => JoinStep::Propose(Command::KeygroupUpdate {
            name: name.to_string(),
            by: Actor::Node(node.to_string()),
            deltas: vec![KeygroupDelta::AddReplica(node.to_string())],
        }),
        None => JoinStep::Propose(Command::KeygroupCreate {
            name: name.to_string(),
            creator: node.to_string(),
            ttl_secs: DEFAULT_TTL_SECS,
            open: true,
            secret: new_secret(),
        }),
    }
}

/// The next step of joining a keygroup (see [`join_keygroup_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStep {
    Joined(KeygroupConfig),
    Tombstoned,
    Propose(Command),
}

/// What claiming `keygroup` in `node` for `machine` takes, given the registry: nothing (this
/// machine holds it, or another live machine of the node does) or one `Claim` (it is free, or
/// its holder is gone). Roles re-claim on every reconcile, so the answer comes from the
/// registry whenever it already decides.
pub fn claim_step(
    registry: &RegistryDigest,
    node: &str,
    keygroup: &str,
    machine: MemberId,
) -> ClaimStep {
    let live_in_node = |id: MemberId| {
        registry
            .members
            .iter()
            .any(|m| m.info.id == id && m.state == MemberState::Alive && m.info.node == node)
    };
    if let Some(held) = registry
        .responsibilities
        .iter()
        .find(|r| r.node == node && r.keygroup == keygroup)
    {
        if held.machine == machine {
            return ClaimStep::Held(MemberAnswer::Claimed { fence: held.fence });
        }
        if live_in_node(held.machine) {
            return ClaimStep::Held(MemberAnswer::HeldBy {
                machine: held.machine,
            });
        }
    }
    ClaimStep::Propose(Command::Claim {
        node: node.to_string(),
        keygroup: keygroup.to_string(),
        machine,
    })
}

/// The next step of a claim (see [`claim_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStep {
    /// The registry already decides: this is the answer.
    Held(MemberAnswer),
    Propose(Command),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keygroup(replicas: &[&str], tombstoned: bool) -> KeygroupConfig {
        KeygroupConfig {
            name: "a/b/c".into(),
            version: 1,
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            triggers: Default::default(),
            ttl_secs: 5,
            open: true,
            secret: vec![1; 32],
            tombstoned,
            updated_index: 1,
        }
    }

    #[test]
    fn joining_a_keygroup_creates_adds_or_answers_it() {
        match join_keygroup_step("a/b/c", "ns", None) {
            JoinStep::Propose(Command::KeygroupCreate {
                creator,
                open,
                secret,
                ..
            }) => {
                assert_eq!(creator, "ns");
                assert!(open, "created open, so other nodes may join it too");
                assert_eq!(secret.len(), 32, "a fresh secret, drawn here");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            join_keygroup_step("a/b/c", "ns", Some(&keygroup(&["web"], false))),
            JoinStep::Propose(Command::KeygroupUpdate { deltas, .. })
                if deltas == vec![KeygroupDelta::AddReplica("ns".into())]
        ));
        assert_eq!(
            join_keygroup_step("a/b/c", "ns", Some(&keygroup(&["ns"], false))),
            JoinStep::Joined(keygroup(&["ns"], false))
        );
        assert_eq!(
            join_keygroup_step("a/b/c", "ns", Some(&keygroup(&["ns"], true))),
            JoinStep::Tombstoned
        );
    }

    #[test]
    fn each_creation_and_rotation_draws_its_own_secret() {
        let create = || {
            command(
                MemberRequest::CreateKeygroup {
                    name: "a/b/c".into(),
                    node: "web".into(),
                    ttl_secs: None,
                    open: None,
                },
                0,
            )
        };
        let (
            Some(Command::KeygroupCreate {
                secret: a,
                ttl_secs,
                open,
                ..
            }),
            Some(Command::KeygroupCreate { secret: b, .. }),
        ) = (create(), create())
        else {
            panic!("a create request is one KeygroupCreate");
        };
        assert_ne!(a, b);
        assert_eq!(
            (ttl_secs, open),
            (DEFAULT_TTL_SECS, false),
            "the API's defaults"
        );
        let rotate = KeygroupChanges {
            rotate_secret: true,
            ..Default::default()
        };
        let (one, two) = (rotate.clone().deltas(), rotate.deltas());
        assert!(matches!(&one[..], [KeygroupDelta::RotateSecret(s)] if s.len() == 32));
        assert_ne!(one, two);
    }

    #[test]
    fn reads_that_need_the_registry_become_no_single_command() {
        let id = MemberId::new(1).unwrap();
        assert_eq!(
            command(
                MemberRequest::Claim {
                    node: "ns".into(),
                    keygroup: "a/b/c".into(),
                    machine: id,
                    seen: 0
                },
                0
            ),
            None
        );
        assert_eq!(
            command(MemberRequest::Leave { id }, 0),
            Some(Command::Leave { id })
        );
    }
}
