//! Commands proposed to the registry, their outputs, and why a command can be rejected.

use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::keygroups::{Actor, KeygroupDelta};
use super::member::MemberInfo;

/// A change proposed through Raft. Secrets never appear here: the join token is checked by the
/// CP member that receives the request, before it proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Admit a member. `epoch` is the epoch the joiner last saw (`None` for a fresh member).
    Join {
        member: MemberInfo,
        epoch: Option<u64>,
    },
    /// Graceful leave, committed before the member leaves the gossip.
    Leave { id: MemberId },
    /// SWIM declared the member down at `generation`.
    Fail { id: MemberId, generation: u64 },
    /// The member's advertised addresses changed; `generation` is its renewed identity.
    UpdateAddress {
        id: MemberId,
        generation: u64,
        http_addr: String,
        gossip_addr: String,
    },
    /// Write a key. `cas`: `Some(0)` = only if absent, `Some(i)` = only if its modify index is i.
    KvPut {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        cas: Option<u64>,
    },
    /// Delete a key, with the same compare-and-set rule as `KvPut`.
    KvDelete { key: String, cas: Option<u64> },
    /// Start a new epoch: the event feed before it is dropped.
    EpochBump { reason: String },
    /// Several KV writes proposed as one log entry (group commit at the proposal layer). Every
    /// item is a `KvPut` or `KvDelete` and no key appears twice, so the items share the entry's
    /// index without ambiguity: each key's modify index still names exactly one value.
    Batch(Vec<Command>),
    /// Create keygroup `name` with `creator` as its first replica node.
    KeygroupCreate {
        name: String,
        creator: String,
        ttl_secs: u32,
        open: bool,
        #[serde(with = "serde_bytes")]
        secret: Vec<u8>,
    },
    /// Change a keygroup (all deltas or none).
    KeygroupUpdate {
        name: String,
        by: Actor,
        deltas: Vec<KeygroupDelta>,
    },
    /// Tombstone a keygroup, irreversibly.
    KeygroupDelete { name: String, by: Actor },
    /// `machine` becomes responsible for `keygroup` in `node`.
    Claim {
        node: String,
        keygroup: String,
        machine: MemberId,
    },
    /// `machine` gives up its responsibility.
    Release {
        node: String,
        keygroup: String,
        machine: MemberId,
    },
    /// A role of `member` reports something for the event feed.
    Report {
        member: MemberId,
        report: hivemind_common::role::RoleReport,
    },
    /// A backup ledger change asked by `member` (DESIGN.md §6d); `now_ms` is the time the
    /// receiving CP member stamped (the ledger's clock never runs backwards).
    Backup {
        member: MemberId,
        now_ms: u64,
        op: hivemind_common::backup::BackupOp,
    },
    /// An ACL change (DESIGN.md §6e); secrets appear only as hashes.
    Acl(super::acl::AclOp),
    /// Retention: drop the feed's events through index `through` (proposed by the leader when
    /// the feed outgrows its retention; see `Registry::retention_trim_point`).
    TrimFeed { through: u64 },
    /// Grant a lease of `ttl_ms` (its id is the entry's index).
    LeaseGrant { ttl_ms: u64 },
    /// Revoke a lease: its keys are deleted in this entry.
    LeaseRevoke { id: u64 },
    /// The leader of `term` found the lease expired (its deadline passed without a
    /// keep-alive): the same effect as a revoke, but only in an entry of that term
    /// ([`Registry::apply_entry`](super::state::Registry::apply_entry)).
    LeaseExpire { id: u64, term: u64 },
    /// A transaction on the KV namespace (all or nothing).
    Txn(super::kv::Txn),
}

impl Command {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Join { .. } => "join",
            Command::Leave { .. } => "leave",
            Command::Fail { .. } => "fail",
            Command::UpdateAddress { .. } => "update_address",
            Command::KvPut { .. } => "kv_put",
            Command::KvDelete { .. } => "kv_delete",
            Command::EpochBump { .. } => "epoch_bump",
            Command::Batch(_) => "batch",
            Command::KeygroupCreate { .. } => "keygroup_create",
            Command::KeygroupUpdate { .. } => "keygroup_update",
            Command::KeygroupDelete { .. } => "keygroup_delete",
            Command::Claim { .. } => "claim",
            Command::Release { .. } => "release",
            Command::Report { .. } => "report",
            Command::Backup { .. } => "backup",
            Command::Acl(_) => "acl",
            Command::TrimFeed { .. } => "trim_feed",
            Command::LeaseGrant { .. } => "lease_grant",
            Command::LeaseRevoke { .. } => "lease_revoke",
            Command::LeaseExpire { .. } => "lease_expire",
            Command::Txn(_) => "txn",
        }
    }

    /// Value bytes a KV write carries (0 for every other command).
    pub fn value_len(&self) -> usize {
        match self {
            Command::KvPut { value, .. } => value.len(),
            _ => 0,
        }
    }

    /// The key a KV write touches; `None` for every other command.
    pub fn kv_key(&self) -> Option<&str> {
        match self {
            Command::KvPut { key, .. } | Command::KvDelete { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// What an accepted command did. `index` is the log index it was applied at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutput {
    /// Raft-internal entries (blank, membership) have no registry effect.
    Nothing,
    Joined {
        epoch: u64,
        index: u64,
    },
    /// `changed` is false when the member had already left.
    Left {
        changed: bool,
    },
    /// `changed` is false for a stale or repeated report.
    Failed {
        changed: bool,
    },
    AddressUpdated,
    KvWritten {
        modify_index: u64,
    },
    KvDeleted {
        deleted: bool,
    },
    EpochStarted {
        epoch: u64,
        index: u64,
    },
    /// One verdict per item of a `Batch`, in order; a rejected item changed nothing.
    Batch(Vec<Result<CommandOutput, RegistryError>>),
    /// A keygroup's version after the command; `changed` is false for a retried or redundant one.
    Keygroup {
        version: u64,
        changed: bool,
    },
    Claimed {
        fence: u64,
    },
    Released {
        changed: bool,
    },
    /// A role's report is in the feed.
    Reported,
    Backup(hivemind_common::backup::BackupOutcome),
    /// The ACL table changed.
    AclChanged,
    /// The feed now starts after `feed_start_index`; `dropped` events went.
    FeedTrimmed {
        feed_start_index: u64,
        dropped: u64,
    },
    LeaseGranted {
        id: u64,
        ttl_ms: u64,
    },
    /// A lease ended (revoked or expired) and `keys` keys with it.
    LeaseEnded {
        keys: usize,
    },
    /// Which branch ran, and what each of its operations did.
    Txn {
        succeeded: bool,
        results: Vec<super::kv::TxnResult>,
    },
}
