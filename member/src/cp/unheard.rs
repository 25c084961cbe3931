//! Members the registry lists live that SWIM does not vouch for: reported failed by the
//! control-plane leader (`--fail-unheard-after`).
//!
//! SWIM reports a member down only when a member that knew it saw it go, and that report is
//! tried a few times and then given up (under a partition every attempt from the minority side
//! fails). Two gaps follow, closed here: a member killed before any peer's SWIM knew it
//! stayed `alive` in the registry forever; and a member that left without a quorum (its `Leave`
//! could not commit) stayed `alive` once the quorum was back when the members that saw it go
//! had given up. The leader, which can commit, keeps the registry honest: a live member its
//! SWIM holds down is reported at once, one its SWIM has not heard of (while it announces to
//! it every round) after the grace. A live member reported by mistake rejoins as a new
//! generation, as after any false suspicion.
//!
//! [`Unheard`] is the rule (sans IO); [`report_unheard`] runs it on a CP member while it leads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hivemind_common::MemberId;

/// What this member's SWIM says of a registry member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swim {
    /// Alive or suspect, at the registry's generation or a newer one.
    Heard,
    /// Down at the registry's generation or a newer one.
    Down,
    /// Not known, or known only under an older generation.
    Unknown,
}

/// Since when each registry member has been unheard.
#[derive(Debug)]
pub struct Unheard {
    grace: Duration,
    since: HashMap<MemberId, (u64, Instant)>,
}

impl Unheard {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            since: HashMap::new(),
        }
    }

    /// Forgets every observation (this member stopped leading: a new term starts counting
    /// from its own first look).
    pub fn reset(&mut self) {
        self.since.clear();
    }

    /// The members to report failed now, as `(id, generation)`: of `live` (the registry's live
    /// members other than this one, with their generations), those SWIM holds down, and those
    /// it has not heard of for the whole grace.
    pub fn due(
        &mut self,
        now: Instant,
        live: impl IntoIterator<Item = (MemberId, u64)>,
        swim: impl Fn(MemberId, u64) -> Swim,
    ) -> Vec<(MemberId, u64)> {
        let mut due = Vec::new();
        let mut unheard = HashMap::new();
        for (id, generation) in live {
            match swim(id, generation) {
                Swim::Heard => {}
                Swim::Down => due.push((id, generation)),
                Swim::Unknown => {
                    let first = match self.since.get(&id) {
                        Some(&(g, at)) if g == generation => at,
                        _ => now,
                    };
                    if now.duration_since(first) >= self.grace {
                        due.push((id, generation));
                    }
                    unheard.insert(id, (generation, first));
                }
            }
        }
        // Members heard again, or no longer live, start over.
        self.since = unheard;
        due
    }
}

/// Classifies SWIM's view of `id` against the registry's `generation`.
pub fn swim_says(view: &crate::gossip::runtime::View, id: MemberId, generation: u64) -> Swim {
    match view.get(&id) {
        Some((gid, state)) if gid.generation >= generation => match state {
            foca::State::Alive | foca::State::Suspect => Swim::Heard,
            foca::State::Down => Swim::Down,
        },
        _ => Swim::Unknown,
    }
}

/// While this CP member leads: every round (the announce period), reports the registry's live
/// members its SWIM holds down or has not heard of for `grace` (see [`Unheard`]).
#[cfg(feature = "control-plane")]
pub(crate) async fn report_unheard(
    agent: std::sync::Arc<crate::state::Agent>,
    grace: Duration,
    every: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    use hivemind_control_plane::member_requests::MemberRequest;

    let crate::cp::cp_access::CpAccess::Member(cp) = agent.cp.as_ref() else {
        return;
    };
    let mut unheard = Unheard::new(grace);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !cp.is_leader() {
            unheard.reset();
            continue;
        }
        let due = {
            let registry = agent.membership.view();
            let view = agent.gossip.view.borrow();
            let live = registry
                .live_members()
                .filter(|m| m.info.id != agent.identity.id)
                .map(|m| (m.info.id, m.info.generation));
            unheard.due(Instant::now(), live, |id, g| swim_says(&view, id, g))
        };
        for (id, generation) in due {
            match agent
                .cp
                .apply(MemberRequest::ReportFailed { id, generation })
                .await
            {
                Ok(applied) => tracing::info!(
                    member = %id,
                    generation,
                    outcome = ?applied.output,
                    "reported a member SWIM does not vouch for as failed"
                ),
                // Tried again next round while this member leads.
                Err(e) => {
                    tracing::debug!(member = %id, error = %e, "cannot report an unheard member")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u64) -> MemberId {
        MemberId::new(n).unwrap()
    }

    #[test]
    fn a_member_swim_holds_down_is_due_at_once() {
        let mut u = Unheard::new(Duration::from_secs(10));
        let now = Instant::now();
        let due = u.due(now, [(id(1), 3), (id(2), 1)], |m, _| {
            if m == id(1) {
                Swim::Down
            } else {
                Swim::Heard
            }
        });
        assert_eq!(due, vec![(id(1), 3)]);
    }

    #[test]
    fn an_unheard_member_is_due_after_the_whole_grace_only() {
        let grace = Duration::from_secs(10);
        let mut u = Unheard::new(grace);
        let t0 = Instant::now();
        let unknown = |_: MemberId, _: u64| Swim::Unknown;
        assert!(u.due(t0, [(id(1), 1)], unknown).is_empty());
        assert!(u
            .due(t0 + Duration::from_secs(9), [(id(1), 1)], unknown)
            .is_empty());
        assert_eq!(u.due(t0 + grace, [(id(1), 1)], unknown), vec![(id(1), 1)]);
    }

    #[test]
    fn being_heard_or_a_new_generation_starts_the_count_over() {
        let grace = Duration::from_secs(10);
        let mut u = Unheard::new(grace);
        let t0 = Instant::now();
        let unknown = |_: MemberId, _: u64| Swim::Unknown;
        u.due(t0, [(id(1), 1)], unknown);
        // Heard once in between: the grace counts from the next time it is unheard.
        u.due(t0 + Duration::from_secs(5), [(id(1), 1)], |_, _| {
            Swim::Heard
        });
        assert!(u
            .due(t0 + Duration::from_secs(6), [(id(1), 1)], unknown)
            .is_empty());
        assert!(u
            .due(t0 + Duration::from_secs(15), [(id(1), 1)], unknown)
            .is_empty());
        // A renewed generation is a new member to hear of.
        assert!(u
            .due(t0 + Duration::from_secs(17), [(id(1), 2)], unknown)
            .is_empty());
        assert_eq!(
            u.due(t0 + Duration::from_secs(27), [(id(1), 2)], unknown),
            vec![(id(1), 2)]
        );
    }

    #[test]
    fn a_new_leader_counts_from_its_own_first_look() {
        let grace = Duration::from_secs(10);
        let mut u = Unheard::new(grace);
        let t0 = Instant::now();
        let unknown = |_: MemberId, _: u64| Swim::Unknown;
        u.due(t0, [(id(1), 1)], unknown);
        u.reset();
        assert!(u
            .due(t0 + Duration::from_secs(11), [(id(1), 1)], unknown)
            .is_empty());
    }

    proptest! {
        /// Whatever the sequence of looks, a member is due only if SWIM holds it down now, or
        /// it was unheard (at its generation) at every look of the last `grace`.
        #[test]
        fn never_due_while_heard_within_the_grace(looks in prop::collection::vec((0u64..3, 0u8..3), 1..40)) {
            let grace = Duration::from_secs(10);
            let mut u = Unheard::new(grace);
            let t0 = Instant::now();
            let mut last_heard_or_new: Option<(u64, Instant)> = None;
            for (step, (generation, said)) in looks.into_iter().enumerate() {
                let now = t0 + Duration::from_secs(step as u64 * 3);
                let swim = match said { 0 => Swim::Heard, 1 => Swim::Down, _ => Swim::Unknown };
                let due = u.due(now, [(id(1), generation)], |_, _| swim);
                match swim {
                    Swim::Heard => {
                        prop_assert!(due.is_empty());
                        last_heard_or_new = None;
                    }
                    Swim::Down => {
                        prop_assert_eq!(due, vec![(id(1), generation)]);
                        last_heard_or_new = None;
                    }
                    Swim::Unknown => {
                        let since = match last_heard_or_new {
                            Some((g, at)) if g == generation => at,
                            _ => now,
                        };
                        last_heard_or_new = Some((generation, since));
                        prop_assert_eq!(!due.is_empty(), now.duration_since(since) >= grace);
                    }
                }
            }
        }
    }
}
