//! Pre-vote and knowing when a member is cut off (Raft thesis §9.6), sans-IO.
//!
//! openraft 0.9 has no pre-vote: a follower that stops hearing from its leader raises its term
//! and campaigns, and keeps doing so while it is partitioned away (measured: term 57 → 76 in a
//! 7.3 s partition). When it rejoins, its higher term deposes a healthy leader. So elections
//! are not left to openraft's timer (`enable_elect` is off): the member's election driver
//! (`elections.rs`) asks the voters first whether they *would* vote for it, and triggers a real
//! election only when a majority of every voter configuration says yes. A voter says yes only
//! when it has not heard from a leader within the leader lease (so a healthy leader is never
//! deposed by a rejoining member) and the asker's log is at least as up-to-date as its own
//! (so the asker could win). Pre-votes change no state anywhere: safety still rests on openraft's
//! real vote.
//!
//! The same facts tell when a member knows it is cut off from a majority, so that it answers
//! `no_quorum` at once rather than after the bounded wait: a leader that has not heard from a
//! quorum for [`CUT_OFF_LEASES`] leases, a follower whose last pre-vote round could not reach
//! a majority (a majority that answers "no" proves the follower is not cut off).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::types::{LogId, NodeId};

/// "Would you vote for me?": sent to every other voter before a real election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The asker's last log entry (the Raft up-to-date rule compares it with the voter's).
    pub last_log: Option<LogId>,
}

/// A voter's answer to a [`PreVoteRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteAnswer {
    pub granted: bool,
}

/// What a voter knows when it answers a pre-vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterView {
    pub last_log: Option<LogId>,
    /// Milliseconds since this voter last heard from a leader, or since it started if it never
    /// did (a leader is its own leader: 0).
    pub leader_heard_ms_ago: u64,
    /// Set while this voter asks for pre-votes itself: its own request.
    pub asking: Option<PreVoteRequest>,
}

/// Whether a voter grants a pre-vote: no leader heard within `lease_ms`, and the asker's log
/// is at least as up-to-date as the voter's. Two voters asking each other at once would both
/// win and then split the real vote, so a voter that is asking itself grants only an asker
/// ahead of it in (last log, id): of two such voters exactly one grants the other.
pub fn grant(request: &PreVoteRequest, voter: &VoterView, lease_ms: u64) -> bool {
    let leader_alive = voter.leader_heard_ms_ago < lease_ms;
    let yields = voter
        .asking
        .as_ref()
        .is_none_or(|mine| (request.last_log, request.candidate) > (mine.last_log, mine.candidate));
    !leader_alive && request.last_log >= voter.last_log && yields
}

/// Whether the members in `granted` (the asker included) form a majority of every voter
/// configuration (two of them during a joint membership change).
pub fn majority_of_every_config(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|voters| voters.intersection(granted).count() * 2 > voters.len())
}

/// How a pre-vote round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundOutcome {
    /// A majority of every configuration would grant: start a real election.
    Won,
    /// A majority answered but would not grant (they hear a leader, or their log is ahead):
    /// this member is not cut off, it only missed the leader for a while.
    Refused,
    /// No majority of some configuration answered at all: this member is cut off.
    Unreachable,
}

/// The outcome of a round from the voters that answered and those that granted (the asker
/// counts as both). Only a round that could not *reach* a majority says the asker is cut off:
/// a majority that answered "no, I hear a leader" is proof that it is not, and a follower
/// that took it as proof would refuse requests it can forward (measured: a follower restarted
/// while the leader streamed it megabytes answered `no_quorum` to its first write).
pub fn round_outcome(
    configs: &[BTreeSet<NodeId>],
    answered: &BTreeSet<NodeId>,
    granted: &BTreeSet<NodeId>,
) -> RoundOutcome {
    if majority_of_every_config(configs, granted) {
        RoundOutcome::Won
    } else if majority_of_every_config(configs, answered) {
        RoundOutcome::Refused
    } else {
        RoundOutcome::Unreachable
    }
}

/// When a follower asks for pre-votes: once it has heard nothing from a leader for the lease
/// plus its (randomized) election timeout, and at least that timeout after its last attempt.
pub fn election_due(
    silent_ms: u64,
    since_last_attempt_ms: Option<u64>,
    lease_ms: u64,
    timeout_ms: u64,
) -> bool {
    silent_ms >= lease_ms + timeout_ms && since_last_attempt_ms.is_none_or(|ms| ms >= timeout_ms)
}

/// A leader that has not heard from a quorum for this many leader leases knows it is cut off.
/// (More than one: a busy machine delaying one heartbeat is not a lost quorum.)
pub const CUT_OFF_LEASES: u64 = 2;

/// Whether a leader knows it is cut off from a majority (see [`CUT_OFF_LEASES`]). A leader
/// that was never acknowledged yet (just elected) is not.
pub fn leader_cut_off(millis_since_quorum_ack: Option<u64>, lease_ms: u64) -> bool {
    millis_since_quorum_ack.is_some_and(|ms| ms > CUT_OFF_LEASES * lease_ms)
}

/// Whether a follower knows it is cut off from a majority: its last pre-vote round could not
/// reach one ([`RoundOutcome::Unreachable`]), and no leader was heard within the lease since
/// (a leader heard outweighs it).
pub fn follower_cut_off(
    last_round_unreachable: bool,
    leader_heard_ms_ago: u64,
    lease_ms: u64,
) -> bool {
    last_round_unreachable && leader_heard_ms_ago >= lease_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;
    use proptest::prelude::*;

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 0), index))
    }

    fn ask(last_log: Option<LogId>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 2,
            last_log,
        }
    }

    #[test]
    fn a_voter_that_hears_its_leader_refuses() {
        let voter = VoterView {
            last_log: log(3, 10),
            leader_heard_ms_ago: 50,
            asking: None,
        };
        assert!(!grant(&ask(log(3, 10)), &voter, 400));
        assert!(
            !grant(&ask(log(9, 99)), &voter, 400),
            "not even for a longer log"
        );
    }

    #[test]
    fn a_voter_without_a_leader_grants_an_up_to_date_asker_only() {
        for heard in [400, 5_000] {
            let voter = VoterView {
                last_log: log(3, 10),
                leader_heard_ms_ago: heard,
                asking: None,
            };
            assert!(grant(&ask(log(3, 10)), &voter, 400), "same log");
            assert!(grant(&ask(log(3, 11)), &voter, 400), "longer log");
            assert!(grant(&ask(log(4, 2)), &voter, 400), "later term");
            assert!(!grant(&ask(log(3, 9)), &voter, 400), "shorter log");
            assert!(!grant(&ask(log(2, 50)), &voter, 400), "earlier term");
            assert!(!grant(&ask(None), &voter, 400), "empty log");
        }
    }

    #[test]
    fn of_two_voters_asking_each_other_at_once_exactly_one_grants() {
        for (a_log, b_log) in [
            (log(3, 10), log(3, 10)),
            (log(3, 11), log(3, 10)),
            (log(2, 40), log(3, 1)),
        ] {
            let a = PreVoteRequest {
                candidate: 1,
                last_log: a_log,
            };
            let b = PreVoteRequest {
                candidate: 2,
                last_log: b_log,
            };
            let view = |me: &PreVoteRequest| VoterView {
                last_log: me.last_log,
                leader_heard_ms_ago: u64::MAX,
                asking: Some(me.clone()),
            };
            let a_grants_b = grant(&b, &view(&a), 400);
            let b_grants_a = grant(&a, &view(&b), 400);
            assert!(a_grants_b != b_grants_a, "{a_log:?} {b_log:?}");
        }
    }

    #[test]
    fn majorities_count_every_configuration() {
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        let three = set(&[1, 2, 3]);
        assert!(majority_of_every_config(
            std::slice::from_ref(&three),
            &set(&[1, 2])
        ));
        assert!(!majority_of_every_config(
            std::slice::from_ref(&three),
            &set(&[1, 9])
        ));
        assert!(majority_of_every_config(&[set(&[1])], &set(&[1])));
        // Joint: {1,2,3} → {3,4,5}: 1, 2, 3 are a majority of the old config only.
        let joint = [three, set(&[3, 4, 5])];
        assert!(!majority_of_every_config(&joint, &set(&[1, 2, 3])));
        assert!(majority_of_every_config(&joint, &set(&[1, 3, 4])));
        assert!(!majority_of_every_config(&[], &set(&[1])));
    }

    #[test]
    fn an_election_is_due_after_lease_plus_timeout_and_not_twice_within_a_timeout() {
        assert!(!election_due(599, None, 400, 200));
        assert!(election_due(600, None, 400, 200));
        assert!(!election_due(10_000, Some(199), 400, 200));
        assert!(election_due(10_000, Some(200), 400, 200));
    }

    #[test]
    fn only_a_round_that_reaches_no_majority_says_cut_off() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        let configs = [voters];
        assert_eq!(
            round_outcome(&configs, &set(&[1, 2, 3]), &set(&[1, 2])),
            RoundOutcome::Won
        );
        assert_eq!(
            round_outcome(&configs, &set(&[1, 2, 3]), &set(&[1])),
            RoundOutcome::Refused,
            "both others answered no: they hear a leader this member can reach"
        );
        assert_eq!(
            round_outcome(&configs, &set(&[1, 2]), &set(&[1])),
            RoundOutcome::Refused,
            "one answer is enough for a majority of three"
        );
        assert_eq!(
            round_outcome(&configs, &set(&[1]), &set(&[1])),
            RoundOutcome::Unreachable
        );
        // During a joint change a majority of each configuration must answer.
        let joint = [set(&[1, 2, 3]), set(&[1, 4, 5])];
        assert_eq!(
            round_outcome(&joint, &set(&[1, 2, 3]), &set(&[1])),
            RoundOutcome::Unreachable
        );
        assert_eq!(
            round_outcome(&joint, &set(&[1, 2, 4]), &set(&[1])),
            RoundOutcome::Refused
        );
    }

    #[test]
    fn a_follower_is_cut_off_after_an_unreachable_round_until_it_hears_a_leader() {
        assert!(follower_cut_off(true, 400, 400));
        assert!(!follower_cut_off(true, 399, 400), "a leader heard since");
        assert!(
            !follower_cut_off(false, 5_000, 400),
            "its last round reached a majority"
        );
    }

    #[test]
    fn a_leader_is_cut_off_after_two_leases_without_a_quorum() {
        assert!(!leader_cut_off(None, 400));
        assert!(!leader_cut_off(Some(800), 400));
        assert!(leader_cut_off(Some(801), 400));
    }

    proptest! {
        /// Two voters that both still hear a leader never grant; and a grant never goes to a
        /// log shorter than the voter's, whatever the timing.
        #[test]
        fn a_grant_needs_a_silent_voter_and_an_up_to_date_log(
            voter_term in 0u64..5, voter_index in 0u64..20,
            asker_term in 0u64..5, asker_index in 0u64..20,
            heard in 0u64..2_000, lease in 1u64..1_000,
        ) {
            let voter = VoterView { last_log: log(voter_term, voter_index), leader_heard_ms_ago: heard, asking: None };
            let granted = grant(&ask(log(asker_term, asker_index)), &voter, lease);
            if granted {
                prop_assert!(heard >= lease);
                prop_assert!((asker_term, asker_index) >= (voter_term, voter_index));
            }
        }
    }
}
