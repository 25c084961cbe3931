//! What the control plane's operations answer, besides registry outputs: the types its wire
//! ([`crate::ops`]) carries and its status routes serialize. Plain data, no behaviour: the wire
//! modules and the client depend on these, never on the running [`crate::ControlPlane`].

use serde::{Deserialize, Serialize};

use crate::registry::CommandOutput;
use crate::types::{CpNode, NodeId};

/// A committed and applied command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub output: CommandOutput,
}

/// A change of the Raft voter set, executed on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoterChange {
    /// Add as learner (waits until it caught up), then promote when `voter`.
    Add {
        id: NodeId,
        node: CpNode,
        voter: bool,
    },
    /// Remove a voter or learner.
    Remove { id: NodeId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VoterView {
    pub id: String,
    pub name: String,
    pub addr: String,
}

/// `GET /v1/cp/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CpStatus {
    pub id: String,
    pub state: String,
    pub leader: Option<NodeRef>,
    pub term: u64,
    pub voters: Vec<VoterView>,
    pub learners: Vec<VoterView>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub health: Health,
    pub initialized: bool,
}
