//! [`CpError`]: every way a control-plane request can fail, serializable so that a forwarded
//! request carries the leader's verdict back unchanged, and [`Denied`], a caller refused for who
//! it is.

use serde::{Deserialize, Serialize};

use crate::registry::RegistryError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CpError {
    /// No leader with a quorum answered in time. For a write this is ambiguous: it may still
    /// commit later (like etcd's and Consul's timeouts).
    #[error(
        "no quorum: the control plane could not commit or confirm within {waited_ms} ms ({detail})"
    )]
    NoQuorum { waited_ms: u64, detail: String },
    /// The registry rejected the command; nothing changed.
    #[error(transparent)]
    Rejected(#[from] RegistryError),
    /// This member is not the leader; `leader` is the leader's HTTP address when known.
    /// Used between CP members; clients see `NoQuorum` if no leader is found in time.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<String> },
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("Raft membership change failed: {0}")]
    Membership(String),
    #[error("control plane stopped: {0}")]
    Fatal(String),
    /// A join presented no or a wrong join token; nothing was proposed.
    #[error("the join token is missing or wrong")]
    BadToken,
    /// A joiner holds no or another gossip key than the cluster; nothing was proposed.
    #[error("the joiner's gossip key is missing or differs from the cluster's")]
    BadGossipKey,
    /// A member outside the control plane does not speak for a joiner with certificates
    /// (DESIGN.md §6e-2): the joiner asks one of these control-plane members itself.
    #[error("join through a control-plane member: {control_plane:?}")]
    JoinElsewhere { control_plane: Vec<String> },
    /// The caller's certificate does not allow this (DESIGN.md §6e-2); nothing changed.
    #[error(transparent)]
    Forbidden(#[from] Denied),
}

impl CpError {
    /// The stable error code shown in the HTTP API.
    pub fn code(&self) -> &'static str {
        match self {
            CpError::NoQuorum { .. } => "no_quorum",
            CpError::Rejected(e) => e.code(),
            CpError::NotLeader { .. } => "not_leader",
            CpError::BadRequest(_) => "bad_request",
            CpError::NotFound(_) => "not_found",
            CpError::Membership(_) => "membership_change_failed",
            CpError::Fatal(_) => "stopped",
            CpError::BadToken => "bad_token",
            CpError::BadGossipKey => "bad_gossip_key",
            CpError::JoinElsewhere { .. } => "join_elsewhere",
            CpError::Forbidden(denied) => denied.code(),
        }
    }
}

/// Why `crate::authority` refused a caller: 403 with [`Denied::code`]; nothing was decoded into
/// a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Denied {
    #[error("{path} answers only control-plane members' certificates")]
    NotControlPlane { path: String },
    #[error("the certificate names no member")]
    NoIdentity,
    #[error("member {caller:?} may act only for itself: {detail}")]
    NotYourIdentity { caller: String, detail: String },
    /// A member asked for a client whose token does not allow it.
    #[error("the client's token does not allow this: {detail}")]
    ClientNotAllowed { detail: String },
    /// A refusal another member answered over the wire (its code and message).
    #[error("{message}")]
    Heard { code: String, message: String },
}

impl Denied {
    pub fn code(&self) -> &'static str {
        match self {
            Denied::NotControlPlane { .. } => "not_control_plane",
            Denied::NoIdentity => "no_identity",
            Denied::NotYourIdentity { .. } => "not_your_identity",
            Denied::ClientNotAllowed { .. } => "permission_denied",
            Denied::Heard { code, .. } => match code.as_str() {
                "not_control_plane" => "not_control_plane",
                "no_identity" => "no_identity",
                "not_your_identity" => "not_your_identity",
                "permission_denied" => "permission_denied",
                _ => "forbidden",
            },
        }
    }
}
