//! Events of the committed feed: what members and roles consume, in index order.

use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};

use super::member::MemberInfo;

/// One entry of the event feed. `index` is the Raft log index of the command that produced it;
/// one command may produce several events with the same index (they keep their order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub index: u64,
    pub epoch: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    MemberJoined {
        member: MemberInfo,
    },
    MemberLeft {
        id: MemberId,
        name: String,
    },
    MemberFailed {
        id: MemberId,
        name: String,
        generation: u64,
    },
    MemberAddressChanged {
        id: MemberId,
        generation: u64,
        http_addr: String,
        gossip_addr: String,
    },
    /// The node's whole new config (so a follower of the feed needs nothing else).
    NodeConfigUpdated {
        node: String,
        version: u64,
        machines: std::collections::BTreeSet<MemberId>,
    },
    EpochStarted {
        epoch: u64,
        reason: String,
    },
    KeygroupCreated {
        name: String,
        version: u64,
    },
    KeygroupUpdated {
        name: String,
        version: u64,
    },
    /// Tombstoned: its records must go everywhere.
    KeygroupDeleted {
        name: String,
        version: u64,
    },
    ResponsibilityClaimed {
        node: String,
        keygroup: String,
        machine: MemberId,
        fence: u64,
    },
    ResponsibilityReleased {
        node: String,
        keygroup: String,
        machine: MemberId,
    },
    /// A role of `member` reported something (its `kind` is the report's name, e.g.
    /// `nginx_render_failed`).
    RoleReported {
        member: MemberId,
        name: String,
        report: hivemind_common::role::RoleReport,
    },
    /// The ACL table changed (`what`: e.g. `policy app-read set`); members re-read it. No
    /// secret, no hash.
    AclChanged {
        what: String,
    },
}

impl EventKind {
    /// The snake_case name shown as `kind` in the HTTP API.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::MemberJoined { .. } => "member_joined",
            EventKind::MemberLeft { .. } => "member_left",
            EventKind::MemberFailed { .. } => "member_failed",
            EventKind::MemberAddressChanged { .. } => "member_address_changed",
            EventKind::NodeConfigUpdated { .. } => "node_config_updated",
            EventKind::EpochStarted { .. } => "epoch_started",
            EventKind::KeygroupCreated { .. } => "keygroup_created",
            EventKind::KeygroupUpdated { .. } => "keygroup_updated",
            EventKind::KeygroupDeleted { .. } => "keygroup_deleted",
            EventKind::ResponsibilityClaimed { .. } => "responsibility_claimed",
            EventKind::ResponsibilityReleased { .. } => "responsibility_released",
            EventKind::RoleReported { report, .. } => report.name(),
            EventKind::AclChanged { .. } => "acl_changed",
        }
    }
}
