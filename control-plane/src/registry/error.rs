//! Why the registry rejects a command ([`RegistryError`]): typed, with a stable code for the
//! HTTP API and the CLI. A leaf of the registry: every rule file returns it.

use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};

/// Why the registry rejected a command. A rejected command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RegistryError {
    #[error("stale epoch: the cluster is at epoch {current}, the request saw {given}")]
    StaleEpoch { current: u64, given: u64 },
    #[error("name {name:?} is held by live member {holder}")]
    NameTaken { name: String, holder: MemberId },
    #[error("unknown member {id}")]
    UnknownMember { id: MemberId },
    #[error("stale generation for {id}: recorded {recorded}, given {given}")]
    StaleGeneration {
        id: MemberId,
        recorded: u64,
        given: u64,
    },
    #[error("member {id} is not alive")]
    NotAlive { id: MemberId },
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("compare-and-set failed on {key:?}: expected index {expected}, found {actual:?}")]
    CasFailed {
        key: String,
        expected: u64,
        actual: Option<u64>,
    },
    #[error("no keygroup {name}")]
    UnknownKeygroup { name: String },
    #[error("keygroup {name} exists")]
    KeygroupExists { name: String },
    #[error("keygroup {name} is deleted (tombstoned); it cannot be changed or created again")]
    Tombstoned { name: String },
    #[error("node {node:?} is not a replica of {keygroup}")]
    NotAReplica { node: String, keygroup: String },
    #[error("the last replica of {keygroup} cannot be removed (delete the keygroup instead)")]
    LastReplica { keygroup: String },
    #[error("space {space} has {free} bytes free, {asked} were asked")]
    NoSpace {
        space: MemberId,
        asked: u64,
        free: u64,
    },
    #[error("member {space} offers no backup space")]
    UnknownSpace { space: MemberId },
    #[error("no live reservation {id} (consumed, expired or released)")]
    UnknownReservation { id: u64 },
    #[error("{owner} has no snapshot {id}")]
    UnknownSnapshot { owner: String, id: String },
    #[error("ACLs are already bootstrapped")]
    AclBootstrapped,
    #[error("no ACL policy {name:?}")]
    UnknownPolicy { name: String },
    #[error("no ACL token with accessor {accessor:?}")]
    UnknownToken { accessor: String },
    #[error("no lease {id} (revoked, expired or never granted)")]
    UnknownLease { id: u64 },
    #[error(
        "the expiry of lease {id} was decided in term {decided}, not in this entry's term {entry}"
    )]
    StaleExpiry { id: u64, decided: u64, entry: u64 },
    #[error("{keygroup} in node {node:?} is held by live machine {holder}")]
    Held {
        node: String,
        keygroup: String,
        holder: MemberId,
    },
}

impl RegistryError {
    /// The stable error code shown in the HTTP API and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::StaleEpoch { .. } => "stale_epoch",
            RegistryError::NameTaken { .. } => "name_taken",
            RegistryError::UnknownMember { .. } => "unknown_member",
            RegistryError::StaleGeneration { .. } => "stale_generation",
            RegistryError::NotAlive { .. } => "not_alive",
            RegistryError::Invalid { .. } => "invalid",
            RegistryError::CasFailed { .. } => "cas_failed",
            RegistryError::UnknownKeygroup { .. } => "unknown_keygroup",
            RegistryError::KeygroupExists { .. } => "keygroup_exists",
            RegistryError::Tombstoned { .. } => "tombstoned",
            RegistryError::NotAReplica { .. } => "not_a_replica",
            RegistryError::LastReplica { .. } => "last_replica",
            RegistryError::Held { .. } => "held",
            RegistryError::NoSpace { .. } => "no_space",
            RegistryError::UnknownSpace { .. } => "unknown_space",
            RegistryError::UnknownReservation { .. } => "unknown_reservation",
            RegistryError::UnknownSnapshot { .. } => "unknown_snapshot",
            RegistryError::AclBootstrapped => "acl_bootstrapped",
            RegistryError::UnknownPolicy { .. } => "unknown_policy",
            RegistryError::UnknownToken { .. } => "unknown_token",
            RegistryError::UnknownLease { .. } => "unknown_lease",
            RegistryError::StaleExpiry { .. } => "stale_expiry",
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        RegistryError::Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}
