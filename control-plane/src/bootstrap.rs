//! Bootstrap decisions (sans-IO): when N control-plane candidates know each other and none is
//! initialized, exactly one of them (the lowest id) initializes Raft with all N as voters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{CpNode, NodeId};

/// A CP member as seen during bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: NodeId,
    pub name: String,
    pub http_addr: String,
    /// Whether its Raft state is already initialized (it belongs to a formed cluster).
    pub initialized: bool,
}

/// The answer to a bootstrap hello: who answered and whom it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub me: Candidate,
    pub known: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Initialize Raft with exactly these voters.
    Initialize(BTreeMap<NodeId, CpNode>),
    /// Nothing to do yet; the reason is for the log.
    Wait(String),
}

/// Decides what `me` does, given every other candidate it has heard of.
pub fn decide(me: &Candidate, others: &[Candidate], expect: usize) -> Decision {
    if let Some(init) = others.iter().find(|c| c.initialized) {
        return Decision::Wait(format!(
            "{} ({:016x}) already belongs to a formed cluster; waiting to be replicated to or added",
            init.name, init.id
        ));
    }
    let mut all: BTreeMap<NodeId, &Candidate> = others.iter().map(|c| (c.id, c)).collect();
    all.insert(me.id, me);
    if all.len() < expect {
        return Decision::Wait(format!(
            "{} of {expect} control-plane candidates known",
            all.len()
        ));
    }
    // The lowest `expect` ids form the cluster; the lowest of them initializes. Everyone who
    // knows the same candidates computes the same set, so only one member initializes.
    let chosen: BTreeMap<NodeId, CpNode> = all
        .values()
        .take(expect)
        .map(|c| {
            (
                c.id,
                CpNode {
                    name: c.name.clone(),
                    http_addr: c.http_addr.clone(),
                },
            )
        })
        .collect();
    let initializer = *chosen.keys().next().expect("expect >= 1");
    if initializer == me.id {
        Decision::Initialize(chosen)
    } else {
        Decision::Wait(format!(
            "{initializer:016x} has the lowest id and initializes"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(id: NodeId, initialized: bool) -> Candidate {
        Candidate {
            id,
            name: format!("cp{id}"),
            http_addr: format!("127.0.0.1:{}", 7000 + id),
            initialized,
        }
    }

    #[test]
    fn waits_until_enough_candidates_are_known() {
        assert!(matches!(
            decide(&cand(1, false), &[cand(2, false)], 3),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn the_lowest_id_initializes_with_all_voters() {
        let Decision::Initialize(voters) =
            decide(&cand(1, false), &[cand(3, false), cand(2, false)], 3)
        else {
            panic!("lowest id must initialize");
        };
        assert_eq!(voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(voters[&2].http_addr, "127.0.0.1:7002");
    }

    #[test]
    fn others_wait_for_the_lowest() {
        assert!(matches!(
            decide(&cand(2, false), &[cand(1, false), cand(3, false)], 3),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn nobody_initializes_next_to_an_initialized_member() {
        let d = decide(&cand(1, false), &[cand(2, true), cand(3, false)], 3);
        assert!(matches!(d, Decision::Wait(_)));
    }

    proptest! {
        #[test]
        fn exactly_one_initializer_when_all_know_each_other(ids in proptest::collection::btree_set(1u64..1000, 1..7), extra in 0usize..3) {
            let ids: Vec<_> = ids.into_iter().collect();
            let expect = ids.len().saturating_sub(extra).max(1);
            let mut voter_sets = Vec::new();
            for me in &ids {
                let others: Vec<_> = ids.iter().filter(|i| *i != me).map(|i| cand(*i, false)).collect();
                if let Decision::Initialize(voters) = decide(&cand(*me, false), &others, expect) {
                    voter_sets.push(voters);
                }
            }
            prop_assert_eq!(voter_sets.len(), 1);
            prop_assert_eq!(voter_sets[0].len(), expect);
        }
    }
}
