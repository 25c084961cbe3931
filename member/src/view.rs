//! [`MembershipView`]: a member's local copy of the registry's membership (members and node
//! configs), built from a snapshot and kept current by applying the event feed in index order.
//! Sans IO: the feed follower ([`crate::cp::feed`]) fetches, this decides.
//!
//! Invariant: applying the feed from a snapshot at index `i` yields the registry's membership at
//! every later index the follower reaches; events at or below the view's index are ignored, so a
//! page applied twice changes nothing.

use std::collections::BTreeMap;

use hivemind_common::MemberId;
use hivemind_control_plane::registry::{
    Event, EventKind, FeedPage, MemberRecord, MemberState, NodeConfig, RegistryDigest,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    pub epoch: u64,
    /// The feed position: every event up to here is applied.
    pub index: u64,
    pub members: BTreeMap<MemberId, MemberRecord>,
    pub nodes: BTreeMap<String, NodeConfig>,
}

/// What applying a feed page did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageOutcome {
    /// The events that were new to the view, in order.
    Applied(Vec<Event>),
    /// The page belongs to another epoch: re-bootstrap from a snapshot.
    EpochChanged { epoch: u64 },
}

impl MembershipView {
    /// The view of a member that never followed the feed: epoch 0 is no epoch, so the feed
    /// answers `gone` and the member bootstraps from a snapshot.
    pub fn empty() -> Self {
        Self {
            epoch: 0,
            index: 0,
            members: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    pub fn from_digest(digest: RegistryDigest) -> Self {
        Self {
            epoch: digest.epoch,
            index: digest.index,
            members: digest.members.into_iter().map(|m| (m.info.id, m)).collect(),
            nodes: digest
                .nodes
                .into_iter()
                .map(|n| (n.node.clone(), n))
                .collect(),
        }
    }

    /// Whether `config` is newer than the view's config of its node (or the view has none).
    pub fn is_newer(&self, config: &NodeConfig) -> bool {
        self.nodes
            .get(&config.node)
            .is_none_or(|held| config.version > held.version)
    }

    /// Seed event [6] for node configs: takes every config of `nodes` (read from the registry
    /// by the periodic re-read) newer than the one held, or not held at all, and answers them
    /// as `NodeConfigUpdated` events at the view's index for the roles. A config the view
    /// holds at the same or a newer version is left as it is (the feed may be ahead of the
    /// read).
    pub fn take_newer_nodes(&mut self, nodes: &[NodeConfig]) -> Vec<Event> {
        let mut taken = Vec::new();
        for config in nodes {
            if self.is_newer(config) {
                self.nodes.insert(config.node.clone(), config.clone());
                taken.push(Event {
                    index: self.index,
                    epoch: self.epoch,
                    kind: EventKind::NodeConfigUpdated {
                        node: config.node.clone(),
                        version: config.version,
                        machines: config.machines.clone(),
                    },
                });
            }
        }
        taken
    }

    /// Applies a page of the feed: its new events in order, then moves to `next_after`.
    pub fn apply_page(&mut self, page: &FeedPage) -> PageOutcome {
        if page.epoch != self.epoch {
            return PageOutcome::EpochChanged { epoch: page.epoch };
        }
        let mut applied = Vec::new();
        for event in &page.events {
            if event.index > self.index {
                self.apply(event);
                applied.push(event.clone());
            }
        }
        // Events of one command share an index and arrive together, so moving the position
        // only after the whole page never skips half a command.
        self.index = self
            .index
            .max(page.next_after)
            .max(applied.last().map_or(0, |e| e.index));
        PageOutcome::Applied(applied)
    }

    fn apply(&mut self, event: &Event) {
        match &event.kind {
            EventKind::MemberJoined { member } => {
                self.members.insert(
                    member.id,
                    MemberRecord {
                        info: member.clone(),
                        state: MemberState::Alive,
                        updated_index: event.index,
                    },
                );
            }
            EventKind::MemberLeft { id, .. } => self.set_state(*id, MemberState::Left, event),
            EventKind::MemberFailed { id, .. } => self.set_state(*id, MemberState::Failed, event),
            EventKind::MemberAddressChanged {
                id,
                generation,
                http_addr,
                gossip_addr,
            } => {
                if let Some(record) = self.members.get_mut(id) {
                    record.info.generation = *generation;
                    record.info.http_addr = http_addr.clone();
                    record.info.gossip_addr = gossip_addr.clone();
                    record.updated_index = event.index;
                }
            }
            EventKind::NodeConfigUpdated {
                node,
                version,
                machines,
            } => {
                self.nodes.insert(
                    node.clone(),
                    NodeConfig {
                        node: node.clone(),
                        machines: machines.clone(),
                        version: *version,
                    },
                );
            }
            EventKind::EpochStarted { epoch, .. } => self.epoch = *epoch,
            // A report changes no membership.
            EventKind::RoleReported { .. } => {}
            // The ACL table is read from the CP (`acl::refresh`); the event only wakes it.
            EventKind::AclChanged { .. } => {}
            // Keygroups and responsibilities are not membership: roles read them from the CP.
            EventKind::KeygroupCreated { .. }
            | EventKind::KeygroupUpdated { .. }
            | EventKind::KeygroupDeleted { .. }
            | EventKind::ResponsibilityClaimed { .. }
            | EventKind::ResponsibilityReleased { .. } => {}
        }
    }

    fn set_state(&mut self, id: MemberId, state: MemberState, event: &Event) {
        if let Some(record) = self.members.get_mut(&id) {
            record.state = state;
            record.updated_index = event.index;
        }
    }

    pub fn live_members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members
            .values()
            .filter(|m| m.state == MemberState::Alive)
    }

    /// Whether the registry lists `id` alive at `generation` or later.
    pub fn admits(&self, id: MemberId, generation: u64) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| m.state == MemberState::Alive && m.info.generation >= generation)
    }

    pub fn digest(&self) -> RegistryDigest {
        RegistryDigest {
            epoch: self.epoch,
            index: self.index,
            members: self.members.values().cloned().collect(),
            nodes: self.nodes.values().cloned().collect(),
            keygroups: Vec::new(),
            responsibilities: Vec::new(),
            backup: Default::default(),
        }
    }
}

#[cfg(test)]
mod node_reread_tests {
    use super::*;

    fn node(name: &str, version: u64, machines: &[u64]) -> NodeConfig {
        NodeConfig {
            node: name.into(),
            machines: machines
                .iter()
                .map(|m| hivemind_common::MemberId::new(*m).unwrap())
                .collect(),
            version,
        }
    }

    #[test]
    fn a_reread_takes_only_node_configs_newer_than_the_view_holds() {
        let mut view = MembershipView::empty();
        view.epoch = 1;
        view.index = 40;
        view.nodes.insert("dns-a".into(), node("dns-a", 3, &[1]));
        view.nodes.insert("dns-b".into(), node("dns-b", 5, &[2]));
        let read = [
            node("dns-a", 4, &[1, 3]), // newer: taken
            node("dns-b", 5, &[9]),    // same version: the view's stays
            node("dns-c", 1, &[4]),    // not held: taken
        ];
        let events = view.take_newer_nodes(&read);
        let taken: Vec<(&str, u64)> = events
            .iter()
            .map(|e| match &e.kind {
                EventKind::NodeConfigUpdated { node, version, .. } => (node.as_str(), *version),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(taken, [("dns-a", 4), ("dns-c", 1)]);
        assert!(events.iter().all(|e| e.index == 40 && e.epoch == 1));
        assert_eq!(view.nodes["dns-a"], node("dns-a", 4, &[1, 3]));
        assert_eq!(view.nodes["dns-b"], node("dns-b", 5, &[2]));
        // An older read changes nothing.
        assert!(view.take_newer_nodes(&[node("dns-a", 2, &[])]).is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_control_plane::member_requests::{self, MemberRequest};
    use hivemind_control_plane::registry::{MemberInfo, Registry};
    use proptest::prelude::*;

    fn info(id: u64, node: &str, generation: u64) -> MemberInfo {
        MemberInfo {
            id: MemberId::new(id).unwrap(),
            name: format!("m{id}"),
            node: node.to_string(),
            roles: vec![],
            http_addr: format!("127.0.0.1:{}", 7000 + id),
            gossip_addr: format!("127.0.0.1:{}", 8000 + id),
            generation,
            control_plane: false,
        }
    }

    /// What members ask of the control plane (the registry then gets the command each
    /// becomes, as the control plane would propose it).
    fn request() -> impl Strategy<Value = MemberRequest> {
        let id = 1u64..6;
        prop_oneof![
            (id.clone(), 0usize..2, 1u64..4).prop_map(|(id, node, generation)| {
                MemberRequest::Admit {
                    member: info(id, ["a", "b"][node], generation),
                }
            }),
            id.clone().prop_map(|id| MemberRequest::Leave {
                id: MemberId::new(id).unwrap()
            }),
            (id.clone(), 1u64..4).prop_map(|(id, generation)| MemberRequest::ReportFailed {
                id: MemberId::new(id).unwrap(),
                generation
            }),
            (id, 1u64..4, 0u16..3).prop_map(|(id, generation, port)| MemberRequest::MoveAddress {
                id: MemberId::new(id).unwrap(),
                generation,
                http_addr: format!("127.0.0.2:{}", 9000 + port),
                gossip_addr: format!("127.0.0.2:{}", 9100 + port),
            }),
        ]
    }

    /// The feed from `after` as the CP would page it (one page per `page` events).
    fn pages(registry: &Registry, mut after: u64, applied: u64, page: usize) -> Vec<FeedPage> {
        let mut out = Vec::new();
        loop {
            let events = registry.events_after(after, None, page).unwrap();
            let next_after = if events.len() >= page {
                events.last().unwrap().index
            } else {
                applied
            };
            out.push(FeedPage {
                epoch: registry.epoch(),
                first_index: registry.feed_start_index(),
                applied_index: applied,
                next_after,
                events: events.to_vec(),
            });
            if next_after >= applied {
                return out;
            }
            after = next_after;
        }
    }

    proptest! {
        /// A view bootstrapped at any index and fed the rest of the feed, in pages of any
        /// size and with pages replayed, equals the registry's own membership at the end.
        #[test]
        fn the_feed_applied_to_a_snapshot_tracks_the_registry(
            commands in proptest::collection::vec(request(), 1..40),
            split in 0usize..40,
            page in 1usize..5,
            replay in any::<bool>(),
        ) {
            let mut registry = Registry::default();
            let mut snapshot = None;
            for (i, command) in commands.iter().enumerate() {
                if i == split.min(commands.len()) {
                    snapshot = Some(RegistryDigest::of(&registry, i as u64));
                }
                let command = member_requests::command(command.clone(), 0).expect("one command");
                let _ = registry.apply(i as u64 + 1, &command);
            }
            let applied = commands.len() as u64;
            let snapshot = snapshot.unwrap_or_else(|| RegistryDigest::of(&registry, applied));
            let mut view = MembershipView::from_digest(snapshot.clone());
            for p in pages(&registry, snapshot.index, applied, page) {
                prop_assert!(matches!(view.apply_page(&p), PageOutcome::Applied(_)));
                if replay {
                    prop_assert_eq!(view.apply_page(&p), PageOutcome::Applied(vec![]));
                }
            }
            let expected = MembershipView::from_digest(RegistryDigest::of(&registry, applied));
            prop_assert_eq!(view, expected);
        }
    }

    #[test]
    fn a_page_of_another_epoch_asks_for_a_rebootstrap() {
        let mut view = MembershipView::from_digest(RegistryDigest::of(&Registry::default(), 0));
        let page = FeedPage {
            epoch: 2,
            first_index: 10,
            applied_index: 12,
            next_after: 12,
            events: vec![],
        };
        assert_eq!(
            view.apply_page(&page),
            PageOutcome::EpochChanged { epoch: 2 }
        );
        assert_eq!(view.index, 0, "nothing applied");
    }
}
