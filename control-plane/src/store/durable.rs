//! How far this member's Raft log is on disk, and the rules that let the leader write its own
//! log while it replicates it (Raft thesis §10.2.1) without anyone seeing a commit that a crash
//! could undo.
//!
//! openraft 0.9 runs the leader's append and the replication of it one after the other: its
//! core awaits the append's flush callback before it sends the entries to followers, so the
//! leader's fsync and the followers' fsyncs add up. The log store therefore reports the leader's
//! own appends flushed as soon as they are written (readable, not yet on disk), see
//! [`acknowledge_early`], and the flusher records here how far the log really is on disk.
//! openraft may then count the leader's copy in a quorum before it is durable, so its internal
//! commit index can run ahead of what a majority holds on disk. Two rules keep that internal:
//!
//! 1. The state machine applies no entry before it is durable here ([`Durable::wait_for`]): no
//!    client is answered and no read sees an entry before it is on the leader's disk as well as
//!    on the followers whose acknowledgements made the quorum.
//! 2. AppendEntries never carries a commit index beyond what is durable here
//!    ([`clamp_commit`]): a follower applies only entries that are durable on a majority.
//!
//! Every commit that leaves the leader's Raft core therefore covers entries durable on a
//! majority, as in etcd, whose leader publishes a commit only after its own WAL write returned.
//! A commit index withheld from followers by rule 2 is sent by a heartbeat as soon as the flush
//! catches up (see [`Durable::take_released`]), not at the next regular one.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::types::{Entry, LogId, NodeId, Vote};

/// The log's durable end, shared by the log store (which advances it after every fsync), the
/// state machine (rule 1) and the Raft network (rule 2).
#[derive(Debug)]
pub struct Durable {
    state: watch::Sender<DurableState>,
    /// The commit index last withheld from followers by rule 2 and not yet released (0: none).
    withheld: AtomicU64,
    /// How many AppendEntries had their commit index lowered by rule 2 (for `/metrics`).
    withheld_total: AtomicU64,
}

/// What [`Durable`] tracks (opaque: watch it with [`Durable::subscribe`]).
#[derive(Debug, Clone, Default)]
pub struct DurableState {
    last: Option<LogId>,
    /// A flush failed: nothing after `last` will ever be durable.
    failed: Option<String>,
}

impl Durable {
    /// Everything up to `last` is on disk.
    pub fn new(last: Option<LogId>) -> Self {
        Self {
            state: watch::Sender::new(DurableState { last, failed: None }),
            withheld: AtomicU64::new(0),
            withheld_total: AtomicU64::new(0),
        }
    }

    /// The last log id known to be on disk.
    pub fn last(&self) -> Option<LogId> {
        self.state.borrow().last
    }

    /// Why the log cannot be made durable any more, if a flush failed.
    pub fn failure(&self) -> Option<String> {
        self.state.borrow().failed.clone()
    }

    /// A flush covered everything up to `to`. Never moves backwards (see [`Durable::reset`]).
    pub fn advance(&self, to: LogId) {
        self.state.send_if_modified(|state| {
            if index_of(state.last) < Some(to.index) {
                state.last = Some(to);
                true
            } else {
                false
            }
        });
    }

    /// The log was truncated and everything still in it is on disk: its end is `last` now.
    pub fn reset(&self, last: Option<LogId>) {
        self.state.send_modify(|state| state.last = last);
    }

    /// A flush failed: wakes every waiter with the reason.
    pub fn fail(&self, reason: String) {
        self.state.send_modify(|state| {
            state.failed.get_or_insert(reason);
        });
    }

    /// Waits until the entry at `index` is on disk; an error if a flush failed first.
    pub async fn wait_for(&self, index: u64) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| s.failed.is_some() || index_of(s.last) >= Some(index))
            .await
            .map_err(|_| "the log store is gone".to_string())?;
        match &state.failed {
            Some(reason) if index_of(state.last) < Some(index) => Err(reason.clone()),
            _ => Ok(()),
        }
    }

    /// Wakes whenever the durable end moves.
    pub fn subscribe(&self) -> watch::Receiver<DurableState> {
        self.state.subscribe()
    }

    /// Rule 2 for one outgoing AppendEntries: its commit index, lowered to the durable end if
    /// it lies beyond. Remembers what was withheld so that it can be sent once durable.
    pub fn clamp_commit(&self, commit: Option<LogId>) -> Option<LogId> {
        let clamped = clamp_commit(commit, self.last());
        if clamped != commit {
            self.withheld_total.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = commit {
                self.withheld.fetch_max(c.index, Ordering::Relaxed);
                // The flush may have caught up between the clamp and the record, and then no
                // later change would wake whoever releases it: wake them now.
                if index_of(self.last()) >= Some(c.index) {
                    self.state.send_modify(|_| {});
                }
            }
        }
        clamped
    }

    /// Whether a commit index withheld from followers has become durable since (and so should
    /// be sent now); clears the record.
    pub fn take_released(&self) -> bool {
        let withheld = self.withheld.load(Ordering::Relaxed);
        withheld != 0
            && index_of(self.last()) >= Some(withheld)
            && self
                .withheld
                .compare_exchange(withheld, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// How many AppendEntries had their commit index lowered by rule 2.
    pub fn withheld_total(&self) -> u64 {
        self.withheld_total.load(Ordering::Relaxed)
    }
}

fn index_of(log_id: Option<LogId>) -> Option<u64> {
    log_id.map(|l| l.index)
}

/// Rule 2: the commit index to tell followers, given the leader's commit index and its durable
/// end. Both are ids in the leader's own log (a leader never truncates its log), so the lower
/// one is an id in that log too.
pub fn clamp_commit(commit: Option<LogId>, durable: Option<LogId>) -> Option<LogId> {
    match (commit, durable) {
        (Some(c), Some(d)) if c.index > d.index => Some(d),
        (Some(_), None) => None,
        _ => commit,
    }
}

/// Whether an append is the leader's own, which the log store reports flushed at once: this
/// member (`me`) holds a committed vote for itself (it is the leader) and every entry was
/// proposed under that vote. A follower's appends, and anything written while this member is
/// still a candidate, are reported only after the fsync, because a follower's acknowledgement
/// counts toward a quorum as a durable copy.
pub fn acknowledge_early(me: NodeId, vote: Option<&Vote>, entries: &[Entry]) -> bool {
    let Some(vote) = vote else { return false };
    vote.is_committed()
        && vote.leader_id().voted_for() == Some(me)
        && !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.log_id.leader_id == *vote.leader_id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};
    use proptest::prelude::*;

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn entry(term: u64, node: NodeId, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, node, index),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn only_the_leaders_own_appends_are_acknowledged_early() {
        let leader = Vote::new_committed(4, 1);
        let own = [entry(4, 1, 7), entry(4, 1, 8)];
        assert!(acknowledge_early(1, Some(&leader), &own));
        // A follower of node 1 appends the same entries: only after the fsync.
        assert!(!acknowledge_early(2, Some(&leader), &own));
        // A candidate (vote not committed) has no own entries to hurry.
        assert!(!acknowledge_early(1, Some(&Vote::new(4, 1)), &own));
        // Entries of an earlier term sent back to a member that led then (it lost them in a
        // crash and now follows node 2): a follower's append.
        assert!(!acknowledge_early(
            1,
            Some(&Vote::new_committed(5, 2)),
            &own
        ));
        // Entries of an earlier own term mixed in: not the leader's current proposals.
        let mixed = [entry(3, 1, 6), entry(4, 1, 7)];
        assert!(!acknowledge_early(1, Some(&leader), &mixed));
        assert!(!acknowledge_early(1, None, &own));
        assert!(!acknowledge_early(1, Some(&leader), &[]));
    }

    #[test]
    fn a_commit_beyond_the_durable_end_is_lowered_to_it() {
        assert_eq!(clamp_commit(None, None), None);
        assert_eq!(clamp_commit(None, Some(log_id(2, 1, 5))), None);
        assert_eq!(clamp_commit(Some(log_id(2, 1, 5)), None), None);
        assert_eq!(
            clamp_commit(Some(log_id(2, 1, 5)), Some(log_id(2, 1, 9))),
            Some(log_id(2, 1, 5))
        );
        assert_eq!(
            clamp_commit(Some(log_id(2, 1, 9)), Some(log_id(2, 1, 5))),
            Some(log_id(2, 1, 5))
        );
    }

    proptest! {
        /// The commit sent never exceeds either the commit or the durable end, and equals the
        /// commit whenever the commit is durable.
        #[test]
        fn the_clamped_commit_is_the_lower_of_the_two(c in proptest::option::of(0u64..100), d in proptest::option::of(0u64..100)) {
            let commit = c.map(|i| log_id(1, 1, i));
            let durable = d.map(|i| log_id(1, 1, i));
            let sent = clamp_commit(commit, durable);
            prop_assert!(index_of(sent) <= index_of(commit));
            prop_assert!(index_of(sent) <= index_of(durable));
            if index_of(commit) <= index_of(durable) {
                prop_assert_eq!(sent, commit);
            }
        }
    }

    #[tokio::test]
    async fn waiters_wake_when_the_flush_covers_them_or_fails() {
        let durable = std::sync::Arc::new(Durable::new(Some(log_id(1, 1, 3))));
        durable.wait_for(3).await.unwrap();
        let waiter = tokio::spawn({
            let durable = durable.clone();
            async move { durable.wait_for(5).await }
        });
        durable.advance(log_id(1, 1, 4));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        durable.advance(log_id(1, 1, 6));
        waiter.await.unwrap().unwrap();
        // Never backwards on advance; truncation resets.
        durable.advance(log_id(1, 1, 2));
        assert_eq!(durable.last(), Some(log_id(1, 1, 6)));
        durable.reset(Some(log_id(1, 1, 2)));
        assert_eq!(durable.last(), Some(log_id(1, 1, 2)));
        durable.fail("disk gone".into());
        assert_eq!(durable.wait_for(3).await, Err("disk gone".to_string()));
        // What was durable before the failure stays readable.
        durable.wait_for(2).await.unwrap();
    }

    #[test]
    fn a_withheld_commit_is_released_once_durable() {
        let durable = Durable::new(Some(log_id(1, 1, 3)));
        assert_eq!(
            durable.clamp_commit(Some(log_id(1, 1, 3))),
            Some(log_id(1, 1, 3))
        );
        assert!(!durable.take_released());
        assert_eq!(
            durable.clamp_commit(Some(log_id(1, 1, 5))),
            Some(log_id(1, 1, 3))
        );
        assert_eq!(durable.withheld_total(), 1);
        assert!(!durable.take_released());
        durable.advance(log_id(1, 1, 5));
        assert!(durable.take_released());
        assert!(!durable.take_released());
    }
}
