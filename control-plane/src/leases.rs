//! When leases expire (DESIGN.md §6h, sans IO; the caller passes the time). Only the leader
//! keeps deadlines and only it proposes `LeaseExpire`; the registry holds the leases themselves.
//!
//! The rules, etcd's:
//! - a lease never expires early: a leader restarts every lease at its full TTL when its term
//!   begins ([`LeaseClock::lead`] with a new term), and a lease it learns of later (granted
//!   through an earlier leader, applied since) starts at its full TTL when it learns of it;
//! - while there is no leader, nothing expires ([`LeaseClock::follow`] forgets every deadline);
//! - a keep-alive restarts the lease's TTL on the leader, which confirms it still leads before it
//!   answers, so a deadline a client was told is never behind the one a later leader keeps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::registry::Lease;

/// Leases one tick proposes to expire at most (etcd revokes up to 1000 per second).
pub const MAX_EXPIRE_PER_TICK: usize = 100;

/// The leader's deadlines, by lease id.
#[derive(Debug, Default)]
pub struct LeaseClock {
    /// The term these deadlines were set in (`None`: not leading).
    term: Option<u64>,
    deadlines: BTreeMap<u64, Instant>,
}

impl LeaseClock {
    /// Follows the registry's `leases` as the leader of `term`: a term not led before restarts
    /// every lease at its full TTL; a lease not known yet starts at its full TTL; an ended one
    /// is forgotten.
    pub fn lead(&mut self, term: u64, leases: &BTreeMap<u64, Lease>, now: Instant) {
        if self.term != Some(term) {
            self.term = Some(term);
            self.deadlines.clear();
        }
        self.deadlines.retain(|id, _| leases.contains_key(id));
        for (id, lease) in leases {
            self.deadlines
                .entry(*id)
                .or_insert_with(|| now + Duration::from_millis(lease.ttl_ms));
        }
    }

    /// Not the leader (or no leader): nothing expires here.
    pub fn follow(&mut self) {
        self.term = None;
        self.deadlines.clear();
    }

    pub fn leading(&self) -> bool {
        self.term.is_some()
    }

    /// A keep-alive of lease `id` at `now` (only while leading): its TTL starts over. Answers
    /// the TTL, or `None` for a lease this leader does not know or that is past its deadline: an
    /// expired lease is not brought back while its expiry is on its way through the log, so no
    /// client is told it holds a lease that is about to go.
    pub fn keep_alive(
        &mut self,
        id: u64,
        leases: &BTreeMap<u64, Lease>,
        now: Instant,
    ) -> Option<u64> {
        self.term?;
        let ttl_ms = leases.get(&id)?.ttl_ms;
        if self
            .deadlines
            .get(&id)
            .is_some_and(|deadline| *deadline <= now)
        {
            return None;
        }
        self.deadlines
            .insert(id, now + Duration::from_millis(ttl_ms));
        Some(ttl_ms)
    }

    /// How long lease `id` has left on this leader.
    pub fn remaining(&self, id: u64, now: Instant) -> Option<Duration> {
        Some(self.deadlines.get(&id)?.saturating_duration_since(now))
    }

    /// Leases past their deadline at `now`, the longest expired first, at most
    /// [`MAX_EXPIRE_PER_TICK`]; none while not leading.
    pub fn expired(&self, now: Instant) -> Vec<u64> {
        if self.term.is_none() {
            return Vec::new();
        }
        let mut due: Vec<(Instant, u64)> = self
            .deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, deadline)| (*deadline, *id))
            .collect();
        due.sort_unstable();
        due.into_iter()
            .take(MAX_EXPIRE_PER_TICK)
            .map(|(_, id)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leases(ids: &[(u64, u64)]) -> BTreeMap<u64, Lease> {
        ids.iter()
            .map(|(id, ttl_ms)| {
                (
                    *id,
                    Lease {
                        ttl_ms: *ttl_ms,
                        keys: Default::default(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_lease_expires_after_its_ttl_unless_kept_alive() {
        let t0 = Instant::now();
        let all = leases(&[(1, 3000), (2, 3000)]);
        let mut clock = LeaseClock::default();
        clock.lead(5, &all, t0);
        assert!(clock.expired(t0 + Duration::from_millis(2999)).is_empty());
        assert_eq!(
            clock.keep_alive(2, &all, t0 + Duration::from_secs(2)),
            Some(3000)
        );
        assert_eq!(clock.expired(t0 + Duration::from_secs(3)), [1]);
        assert_eq!(clock.expired(t0 + Duration::from_secs(5)), [1, 2]);
        assert_eq!(clock.keep_alive(9, &all, t0), None, "an unknown lease");
        let late = t0 + Duration::from_secs(6);
        assert_eq!(clock.keep_alive(1, &all, late), None, "past its deadline");
    }

    #[test]
    fn a_new_leader_restarts_every_lease_and_a_follower_expires_nothing() {
        let t0 = Instant::now();
        let all = leases(&[(1, 3000)]);
        let mut clock = LeaseClock::default();
        clock.lead(5, &all, t0);
        clock.lead(5, &all, t0 + Duration::from_secs(2));
        assert_eq!(
            clock.remaining(1, t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(1))
        );
        clock.follow();
        assert!(clock.expired(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(
            clock.keep_alive(1, &all, t0),
            None,
            "only a leader takes keep-alives"
        );
        let later = t0 + Duration::from_secs(60);
        clock.lead(7, &all, later);
        assert_eq!(clock.remaining(1, later), Some(Duration::from_secs(3)));
        clock.lead(7, &leases(&[]), later);
        assert!(
            clock.expired(later + Duration::from_secs(10)).is_empty(),
            "an ended lease is forgotten"
        );
    }

    proptest! {
        /// Whatever the sequence of terms, keep-alives and ticks, no lease is reported expired
        /// before its TTL has passed since the later of its last keep-alive and the start of the
        /// current term (or since it was first seen in it).
        #[test]
        fn no_lease_expires_early(steps in proptest::collection::vec((0u8..4, 0u64..3, 0u64..4000), 1..60)) {
            let t0 = Instant::now();
            let all = leases(&[(0, 1000), (1, 2000), (2, 3000)]);
            let mut clock = LeaseClock::default();
            let mut now = t0;
            let mut term = 1;
            let mut since: BTreeMap<u64, Instant> = BTreeMap::new();
            for (step, id, advance) in steps {
                now += Duration::from_millis(advance);
                match step {
                    0 => { term += 1; clock.lead(term, &all, now); since = all.keys().map(|i| (*i, now)).collect(); }
                    1 => { clock.follow(); since.clear(); }
                    2 if clock.keep_alive(id, &all, now).is_some() => { since.insert(id, now); }
                    _ => {}
                }
                for expired in clock.expired(now) {
                    let start = since[&expired];
                    prop_assert!(now.duration_since(start) >= Duration::from_millis(all[&expired].ttl_ms));
                }
            }
        }
    }
}
