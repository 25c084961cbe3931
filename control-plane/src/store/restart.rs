//! What a member's Raft state keeps across a restart (sans-IO).
//!
//! The log, the vote's term and whom it names survive a restart; **a leader's authority does
//! not**. openraft 0.9 resumes leadership at once when the saved vote is committed and names
//! the member itself, keeping the old term and its blank entry. Its read index is then
//! `max(that blank entry, the commit index saved on disk)`, and the saved commit index is only
//! a hint written lazily (see `log_store::CommitRecord`): after a kill of every member it
//! lags the writes that were acknowledged. So the first read-index requests after the restart
//! were answered from a state missing acknowledged writes (issue 16).
//!
//! [`restored_vote`] hands the saved vote back uncommitted. Votes compare by (term, candidate)
//! first and the commit flag only breaks ties of the same pair, so a restarted member grants
//! and refuses exactly the candidates it did before, and its old leader's heartbeats (a
//! committed vote of the same pair) are still accepted; but a restarted leader is a follower
//! and must win an election in a new term. The new term's blank entry commits only once a majority holds the
//! new leader's log, which includes every acknowledged write, and read indexes never precede
//! it (Raft thesis §6.4).

use crate::types::Vote;

/// The vote openraft starts from, given the vote saved before the restart.
pub fn restored_vote(saved: Vote) -> Vote {
    Vote {
        committed: false,
        ..saved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_vote_comes_back_uncommitted_with_its_term_and_candidate() {
        let restored = restored_vote(Vote::new_committed(7, 3));
        assert!(!restored.is_committed());
        assert_eq!(restored, Vote::new(7, 3));
    }

    #[test]
    fn an_uncommitted_vote_is_unchanged() {
        assert_eq!(restored_vote(Vote::new(7, 3)), Vote::new(7, 3));
    }

    #[test]
    fn the_restored_vote_grants_and_refuses_exactly_what_the_saved_one_did() {
        let saved = Vote::new_committed(7, 3);
        let restored = restored_vote(saved);
        // The old leader, still leading in its term, is accepted...
        assert!(saved >= restored);
        // ...and every candidate (a vote request is uncommitted) stands where it stood.
        for term in 5..=9 {
            for node in 1..=5 {
                let candidate = Vote::new(term, node);
                if candidate.leader_id() == saved.leader_id() {
                    continue;
                }
                assert_eq!(
                    candidate.partial_cmp(&restored),
                    candidate.partial_cmp(&saved),
                    "{candidate}"
                );
            }
        }
    }
}
