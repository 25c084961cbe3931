//! The Raft types: a CP member's id and address, what applying an entry answers, and (with the
//! `raft` feature) the openraft type configuration: entries carry registry commands.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::registry::{CommandOutput, RegistryError};

/// Raft node id: the member's [`hivemind_common::MemberId`] as a raw u64.
pub type NodeId = u64;

/// What the Raft membership knows about a CP member: its name and advertised HTTP address
/// (Raft RPC travels over the member's HTTP port).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpNode {
    pub name: String,
    pub http_addr: String,
}

impl fmt::Display for CpNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.http_addr)
    }
}

/// The answer of applying one log entry: the registry's typed verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse(pub Result<CommandOutput, RegistryError>);

#[cfg(feature = "raft")]
pub use raft::*;

#[cfg(feature = "raft")]
mod raft {
    use std::io::Cursor;

    use super::{CommandResponse, CpNode, NodeId};
    use crate::registry::Command;

    openraft::declare_raft_types!(
        /// hivemind's Raft types: entries carry registry [`Command`]s.
        pub TypeConfig:
            D = Command,
            R = CommandResponse,
            NodeId = NodeId,
            Node = CpNode,
            SnapshotData = Cursor<Vec<u8>>,
    );

    pub type Raft = openraft::Raft<TypeConfig>;
    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, CpNode>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, CpNode>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
}
