//! Where a consuming machine takes each keygroup's records from (task D, DESIGN.md §5), as a pure
//! function of what the control plane decided and the membership:
//! - a keygroup this machine is responsible for: every live member performing `host` whose
//!   node is another replica node of the keygroup (never a trigger node, never its own node);
//! - a keygroup another live machine of its node holds: that machine's intra-node stream
//!   (several machines per node, one responsible);
//! - a keygroup whose holder is not alive in this machine's view: nothing until the control
//!   plane released it and this machine (or a sibling) claimed it.

use std::collections::{BTreeMap, BTreeSet};

use hivemind_common::role::{Claim, KeygroupInfo, Membership};
use hivemind_common::MemberId;

/// What a stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    /// A host member's own record stream (`/internal/v1/roles/host/subscribe`).
    Host,
    /// The responsible machine of this node relaying every record it holds
    /// (`/internal/v1/roles/<role>/stream`).
    Holder,
}

/// One subscription: a member's stream for one keygroup.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub keygroup: String,
    pub via: Via,
    pub member: MemberId,
    /// Part of the identity: a member that moved is subscribed to again at its new address.
    pub http_addr: String,
    pub generation: u64,
}

/// Every stream this machine (`me` in `own_node`) should hold given the claim outcome per
/// served keygroup.
pub fn targets(
    role: &str,
    me: MemberId,
    own_node: &str,
    claims: &BTreeMap<String, Claim>,
    keygroups: &BTreeMap<String, KeygroupInfo>,
    membership: &Membership,
) -> BTreeSet<Target> {
    let mut out = BTreeSet::new();
    for (name, claim) in claims {
        let Some(k) = keygroups.get(name) else {
            continue;
        };
        if k.tombstoned || k.secret.is_empty() {
            continue;
        }
        match *claim {
            Claim::Mine { .. } => {
                for peer in membership.performing("host") {
                    if peer.node != own_node && k.replicas.contains(&peer.node) {
                        out.insert(Target {
                            keygroup: name.clone(),
                            via: Via::Host,
                            member: peer.id,
                            http_addr: peer.http_addr.clone(),
                            generation: peer.generation,
                        });
                    }
                }
            }
            Claim::HeldBy { machine } if machine != me => {
                if let Some(holder) = membership
                    .performing(role)
                    .find(|p| p.id == machine && p.node == own_node)
                {
                    out.insert(Target {
                        keygroup: name.clone(),
                        via: Via::Holder,
                        member: holder.id,
                        http_addr: holder.http_addr.clone(),
                        generation: holder.generation,
                    });
                }
            }
            Claim::HeldBy { .. } => {}
        }
    }
    out
}

/// DESIGN.md §5 event [7]: a record sealed under keygroup config `seen` while this machine holds
/// `known` (none yet: nothing to compare, the reconcile reads it anyway) means this machine
/// missed a config change and must re-read it.
pub fn config_behind(known: Option<u64>, seen: u64) -> bool {
    known.is_some_and(|known| seen > known)
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

    fn id(n: u64) -> MemberId {
        MemberId::new(n).unwrap()
    }

    const ME: u64 = 100;

    fn mine() -> BTreeMap<String, Claim> {
        BTreeMap::from([("a/b/c".to_string(), Claim::Mine { fence: 7 })])
    }

    fn held_by(n: u64) -> BTreeMap<String, Claim> {
        BTreeMap::from([("a/b/c".to_string(), Claim::HeldBy { machine: id(n) })])
    }

    fn one(k: KeygroupInfo) -> BTreeMap<String, KeygroupInfo> {
        BTreeMap::from([("a/b/c".to_string(), k)])
    }

    #[test]
    fn task_d_live_hosts_of_other_replica_nodes_only() {
        let m = members(vec![
            peer(1, "web-1", "host", PeerState::Alive),
            peer(2, "web-2", "host", PeerState::Failed),
            peer(3, "audit", "host", PeerState::Alive),
            peer(4, "dns", "host", PeerState::Alive),
            peer(5, "web-5", "dns", PeerState::Alive),
            peer(6, "stranger", "host", PeerState::Alive),
        ]);
        let k = one(keygroup(
            &["dns", "web-1", "web-2", "web-5"],
            &["audit"],
            false,
        ));
        // 2 failed, 3 is a trigger node, 4 is our own node, 5 performs no host, 6 no replica.
        let t = targets("dns", id(ME), "dns", &mine(), &k, &m);
        assert_eq!(ids(&t), [1]);
        assert!(t.iter().all(|t| t.via == Via::Host));
    }

    #[test]
    fn nothing_without_a_claim_or_for_a_tombstone() {
        let m = members(vec![peer(1, "web-1", "host", PeerState::Alive)]);
        let live = one(keygroup(&["dns", "web-1"], &[], false));
        assert!(targets("dns", id(ME), "dns", &BTreeMap::new(), &live, &m).is_empty());
        let dead = one(keygroup(&["dns", "web-1"], &[], true));
        assert!(targets("dns", id(ME), "dns", &mine(), &dead, &m).is_empty());
    }

    #[test]
    fn a_machine_that_does_not_hold_the_keygroup_streams_from_the_holder_only() {
        let m = members(vec![
            peer(1, "web-1", "host", PeerState::Alive),
            peer(2, "dns", "dns", PeerState::Alive),
        ]);
        let k = one(keygroup(&["dns", "web-1"], &[], false));
        let t = targets("dns", id(ME), "dns", &held_by(2), &k, &m);
        assert_eq!(ids(&t), [2]);
        assert!(t.iter().all(|t| t.via == Via::Holder));
    }

    /// [1]/A then [2]: the holder failed; until the CP released it and this machine claimed,
    /// there is nothing to stream from; once claimed, the hosts themselves.
    #[test]
    fn seed_event_1_and_2_holder_failed_then_claimed_here() {
        let k = one(keygroup(&["dns", "web-1"], &[], false));
        let failed = members(vec![
            peer(1, "web-1", "host", PeerState::Alive),
            peer(2, "dns", "dns", PeerState::Failed),
        ]);
        assert!(targets("dns", id(ME), "dns", &held_by(2), &k, &failed).is_empty());
        let t = targets("dns", id(ME), "dns", &mine(), &k, &failed);
        assert_eq!(ids(&t), [1]);
        assert!(t.iter().all(|t| t.via == Via::Host));
    }

    /// [3]: a machine that no longer holds a keygroup (it was partitioned; another machine
    /// claimed it) keeps no host subscription for it, only the stream from the new holder.
    #[test]
    fn seed_event_3_former_holder_drops_its_host_subscriptions() {
        let k = one(keygroup(&["dns", "web-1"], &[], false));
        let m = members(vec![
            peer(1, "web-1", "host", PeerState::Alive),
            peer(2, "dns", "dns", PeerState::Alive),
        ]);
        let before = targets("dns", id(ME), "dns", &mine(), &k, &m);
        let after = targets("dns", id(ME), "dns", &held_by(2), &k, &m);
        assert!(before.iter().all(|t| t.via == Via::Host));
        assert!(after.iter().all(|t| t.via == Via::Holder));
        assert!(before.is_disjoint(&after));
    }

    /// [8]/C/D: a machine added to a replica host node is subscribed to at the next turn; a
    /// node dropped from the replicas is not.
    #[test]
    fn seed_event_8_machines_and_replicas_changing_move_the_targets() {
        let mut m = members(vec![peer(1, "web-1", "host", PeerState::Alive)]);
        let k = one(keygroup(&["dns", "web-1"], &[], false));
        assert_eq!(ids(&targets("dns", id(ME), "dns", &mine(), &k, &m)), [1]);
        m.peers.push(peer(7, "web-1", "host", PeerState::Alive));
        assert_eq!(ids(&targets("dns", id(ME), "dns", &mine(), &k, &m)), [1, 7]);
        let fewer = one(keygroup(&["dns"], &[], false));
        assert!(targets("dns", id(ME), "dns", &mine(), &fewer, &m).is_empty());
    }

    /// A holder in another node (it moved) or one that is this machine itself is no source.
    #[test]
    fn a_holder_elsewhere_is_no_source() {
        let k = one(keygroup(&["dns", "web-1"], &[], false));
        let m = members(vec![peer(2, "other", "dns", PeerState::Alive)]);
        assert!(targets("dns", id(ME), "dns", &held_by(2), &k, &m).is_empty());
        assert!(targets("dns", id(ME), "dns", &held_by(ME), &k, &m).is_empty());
    }

    #[test]
    fn seed_event_7_a_newer_config_version_on_a_stream_asks_for_a_reread() {
        assert!(config_behind(Some(3), 4));
        assert!(!config_behind(Some(4), 4));
        assert!(
            !config_behind(Some(5), 4),
            "an older publisher changes nothing"
        );
        assert!(!config_behind(None, 4));
    }
}
