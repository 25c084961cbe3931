//! Which host members a dns machine subscribes to (task D, DESIGN.md §5), as a pure function:
//! for every keygroup this machine is responsible for, every live member performing `host`
//! whose node is another replica node of the keygroup (never a trigger node, never its own
//! node).

use std::collections::{BTreeMap, BTreeSet};

use hivemind_common::role::{KeygroupInfo, Membership};
use hivemind_common::MemberId;

/// One subscription: a host member's stream for one keygroup.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub keygroup: String,
    pub member: MemberId,
    /// Part of the identity: a host that moved is subscribed to again at its new address.
    pub http_addr: String,
    pub generation: u64,
}

pub fn targets(
    own_node: &str,
    held: &BTreeSet<String>,
    keygroups: &BTreeMap<String, KeygroupInfo>,
    membership: &Membership,
) -> BTreeSet<Target> {
    let mut out = BTreeSet::new();
    for name in held {
        let Some(k) = keygroups.get(name) else {
            continue;
        };
        if k.tombstoned || k.secret.is_empty() {
            continue;
        }
        for peer in membership.performing("host") {
            if peer.node != own_node && k.replicas.contains(&peer.node) {
                out.insert(Target {
                    keygroup: name.clone(),
                    member: peer.id,
                    http_addr: peer.http_addr.clone(),
                    generation: peer.generation,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::role::{Peer, PeerState};

    fn peer(id: u64, node: &str, role: &str, state: PeerState) -> Peer {
        Peer {
            id: MemberId::new(id).unwrap(),
            name: format!("m{id}"),
            node: node.into(),
            roles: vec![role.into()],
            http_addr: format!("127.0.0.1:{}", 7000 + id),
            gossip_addr: format!("127.0.0.1:{}", 8000 + id),
            generation: 1,
            state,
        }
    }

    fn keygroup(replicas: &[&str], triggers: &[&str], tombstoned: bool) -> KeygroupInfo {
        KeygroupInfo {
            name: "a/b/c".into(),
            version: 1,
            replicas: replicas.iter().map(|s| s.to_string()).collect(),
            triggers: triggers.iter().map(|s| s.to_string()).collect(),
            ttl_secs: 5,
            open: true,
            secret: vec![1; 32],
            tombstoned,
        }
    }

    fn members(peers: Vec<Peer>) -> Membership {
        Membership {
            epoch: 1,
            index: 1,
            peers,
            nodes: vec![],
        }
    }

    fn ids(t: &BTreeSet<Target>) -> Vec<u64> {
        t.iter().map(|t| t.member.get()).collect()
    }

    #[test]
    fn live_hosts_of_other_replica_nodes_only() {
        let m = members(vec![
            peer(1, "web-1", "host", PeerState::Alive),
            peer(2, "web-2", "host", PeerState::Failed),
            peer(3, "audit", "host", PeerState::Alive),
            peer(4, "dns", "host", PeerState::Alive),
            peer(5, "web-5", "dns", PeerState::Alive),
            peer(6, "stranger", "host", PeerState::Alive),
        ]);
        let k = BTreeMap::from([(
            "a/b/c".to_string(),
            keygroup(&["dns", "web-1", "web-2", "web-5"], &["audit"], false),
        )]);
        let held = BTreeSet::from(["a/b/c".to_string()]);
        // 2 failed, 3 is a trigger node, 4 is our own node, 5 performs no host, 6 no replica.
        assert_eq!(ids(&targets("dns", &held, &k, &m)), [1]);
    }

    #[test]
    fn nothing_without_responsibility_or_for_a_tombstone() {
        let m = members(vec![peer(1, "web-1", "host", PeerState::Alive)]);
        let live = BTreeMap::from([("a/b/c".to_string(), keygroup(&["dns", "web-1"], &[], false))]);
        assert!(targets("dns", &BTreeSet::new(), &live, &m).is_empty());
        let dead = BTreeMap::from([("a/b/c".to_string(), keygroup(&["dns", "web-1"], &[], true))]);
        let held = BTreeSet::from(["a/b/c".to_string()]);
        assert!(targets("dns", &held, &dead, &m).is_empty());
    }
}
