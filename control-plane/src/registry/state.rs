//! The registry's data: members, node configs, the KV namespace (`kv.rs`), the epoch and its
//! event feed.

use std::collections::{BTreeMap, BTreeSet};

use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};

use super::event::Event;
use super::keygroups::{KeygroupConfig, Responsibility};
use super::kv::{Kv, KvEntry};
use super::member::{MemberInfo, MemberState};

/// Most items in one `Command::Batch`.
pub const MAX_BATCH: usize = 1024;
/// Most value bytes in one `Command::Batch` (keeps log entries and Raft RPCs small).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub info: MemberInfo,
    pub state: MemberState,
    /// Log index of the last change to this record.
    pub updated_index: u64,
}

/// A node's machines and the version the CP assigned to this configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub node: String,
    pub machines: BTreeSet<MemberId>,
    pub version: u64,
}

/// The membership part of the registry, as members outside the control plane see it, at the
/// applied index `index` (a member that bootstraps from it follows the feed after `index`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryDigest {
    pub epoch: u64,
    pub index: u64,
    pub members: Vec<MemberRecord>,
    pub nodes: Vec<NodeConfig>,
    /// With secrets: whole digests go only to control-plane members; a member's view
    /// ([`RegistryDigest::scoped`]) carries its own node's only.
    pub keygroups: Vec<KeygroupConfig>,
    pub responsibilities: Vec<Responsibility>,
    /// The backup ledger: spaces, live reservations, snapshot records (no secrets).
    pub backup: hivemind_common::backup::BackupState,
}

impl RegistryDigest {
    pub fn of(registry: &Registry, index: u64) -> Self {
        Self {
            epoch: registry.epoch,
            index,
            members: registry.members.values().cloned().collect(),
            nodes: registry.nodes.values().cloned().collect(),
            keygroups: registry.keygroups.values().cloned().collect(),
            responsibilities: registry.responsibilities.values().cloned().collect(),
            backup: registry.backup.state(),
        }
    }

    /// The digest as `reader` may see it: the secret of every keygroup it may not see is
    /// left out ([`KeygroupConfig::scoped`]; `None`: every secret is).
    pub fn scoped(mut self, reader: Option<&super::Actor>) -> Self {
        for k in &mut self.keygroups {
            *k = std::mem::take(k).scoped(reader);
        }
        self
    }
}

/// Why the event feed cannot answer a read from where the reader stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedError {
    /// The reader is in another epoch, or behind the start of the feed (the epoch's start, or
    /// where retention trimmed it): re-bootstrap.
    Gone { epoch: u64, first_index: u64 },
}

/// The replicated registry. Equal logs give equal registries on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub(crate) epoch: u64,
    /// The feed holds every event of the current epoch after this index: the index of the
    /// command that started the epoch (0 for the first), or later once retention trimmed the
    /// oldest events (`TrimFeed`).
    pub(crate) feed_start_index: u64,
    pub(crate) members: BTreeMap<MemberId, MemberRecord>,
    pub(crate) nodes: BTreeMap<String, NodeConfig>,
    pub(crate) kv: Kv,
    pub(crate) keygroups: BTreeMap<String, KeygroupConfig>,
    /// Keyed by (node, keygroup): at most one holder each.
    pub(crate) responsibilities: BTreeMap<(String, String), Responsibility>,
    /// The current epoch's events, in index order.
    pub(crate) events: Vec<Event>,
    pub(crate) backup: super::backup::BackupLedger,
    pub(crate) acl: super::acl::AclTable,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            epoch: 1,
            feed_start_index: 0,
            members: BTreeMap::new(),
            nodes: BTreeMap::new(),
            kv: Kv::default(),
            keygroups: BTreeMap::new(),
            responsibilities: BTreeMap::new(),
            events: Vec::new(),
            backup: Default::default(),
            acl: Default::default(),
        }
    }
}

impl Registry {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn feed_start_index(&self) -> u64 {
        self.feed_start_index
    }

    pub fn members(&self) -> &BTreeMap<MemberId, MemberRecord> {
        &self.members
    }

    pub fn member(&self, id: MemberId) -> Option<&MemberRecord> {
        self.members.get(&id)
    }

    pub fn nodes(&self) -> &BTreeMap<String, NodeConfig> {
        &self.nodes
    }

    pub fn kv_get(&self, key: &str) -> Option<&KvEntry> {
        self.kv.get(key)
    }

    /// Keys starting with `prefix`, in order.
    pub fn kv_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a KvEntry)> + 'a {
        self.kv.prefix(prefix)
    }

    /// The KV namespace whole: its change log (watches) and leases.
    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    pub fn backup(&self) -> &super::backup::BackupLedger {
        &self.backup
    }

    pub fn acl(&self) -> &super::acl::AclTable {
        &self.acl
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Number of events in the current epoch's feed (compared with the retention).
    pub fn feed_len(&self) -> usize {
        self.events.len()
    }

    /// The live member holding `name`, if any.
    pub fn live_member_named(&self, name: &str) -> Option<&MemberRecord> {
        self.members
            .values()
            .find(|m| m.state == MemberState::Alive && m.info.name == name)
    }

    /// Where retention trims the feed: once it holds more than `retention` events, through the
    /// index before the newest half of that (at least one event kept), so that the events
    /// sharing an index (one command's) are kept or dropped together. `None` while the feed is
    /// within its retention, or when only part of one command could go.
    ///
    /// Trimming, not a new epoch: a reader at or after the trim point (every caught-up member)
    /// goes on reading; only one further behind re-bootstraps, as after etcd's compaction.
    pub fn retention_trim_point(&self, retention: usize) -> Option<u64> {
        if self.events.len() <= retention {
            return None;
        }
        let keep = (retention / 2).max(1);
        let through = self.events[self.events.len() - keep]
            .index
            .saturating_sub(1);
        (through >= self.events[0].index && through > self.feed_start_index).then_some(through)
    }

    /// Events with index > `after`, at most `limit`. A reader that names another epoch, or whose
    /// position lies before the current epoch's start, must re-bootstrap ([`FeedError::Gone`]).
    pub fn events_after(
        &self,
        after: u64,
        epoch: Option<u64>,
        limit: usize,
    ) -> Result<&[Event], FeedError> {
        let gone = FeedError::Gone {
            epoch: self.epoch,
            first_index: self.feed_start_index,
        };
        if epoch.is_some_and(|e| e != self.epoch) || after < self.feed_start_index {
            return Err(gone);
        }
        let start = self.events.partition_point(|e| e.index <= after);
        let mut end = (start + limit).min(self.events.len());
        // A page never splits the events of one command: the reader continues after the last
        // index it saw, so a split group would lose its tail.
        if end > start {
            let last = self.events[end - 1].index;
            end += self.events[end..].partition_point(|e| e.index == last);
        }
        Ok(&self.events[start..end])
    }
}

/// One answer of the event feed: the events after the reader's position and where to continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPage {
    pub epoch: u64,
    /// The current epoch starts after this index.
    pub first_index: u64,
    /// The answering member's applied index: a reader at `next_after == applied_index` is
    /// caught up with that member.
    pub applied_index: u64,
    /// Every event up to here is in `events` or before the reader's position.
    pub next_after: u64,
    pub events: Vec<Event>,
}
