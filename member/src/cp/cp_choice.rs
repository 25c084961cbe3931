//! Which control-plane member a member outside the control plane talks to (DESIGN.md §6f),
//! sans IO: rendezvous hashing with bounded loads.
//!
//! Each member ranks the CP members by a rendezvous weight of (its id, their address)
//! ([`preference`]): the ranking depends only on the set of CP members, and losing one moves
//! only the members that ranked it first. Plain rendezvous hashing spreads members like dice,
//! though: with 27 members over 3 CP members, nearly a third of all draws leave one CP member
//! with more than twice another's share. So the members' first choices are bounded
//! ([`assign`]): in id order, each member takes the highest-ranked CP member that still has
//! room under [`capacity`]. Every member computes the same assignment from the membership view
//! the feed keeps (the live members and the CP members), with no coordination; while views
//! differ for a moment, a member's choice may too, which only moves its next call.

use std::collections::HashMap;

use hivemind_common::MemberId;

/// Orders `endpoints` (the CP members' addresses) by `member`'s rendezvous weight, highest
/// first: the order it fails over in.
pub fn preference(member: MemberId, endpoints: &mut [String]) {
    endpoints.sort_by_cached_key(|endpoint| std::cmp::Reverse(weight(member, endpoint)));
}

/// The rendezvous weight of (`member`, `endpoint`): the first 8 bytes of a SHA-256 over both.
fn weight(member: MemberId, endpoint: &str) -> u64 {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(member.get().to_be_bytes());
    hash.update(endpoint.as_bytes());
    let digest = hash.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// How many of `members` one of `cps` CP members takes at most: the fair share rounded up,
/// plus a tenth of it rounded down. The slack keeps most members on their first choice (fewer
/// move when one joins or leaves); it is small enough that with 3 CP members and 8 or more
/// members no share is more than twice another's (each is at most `capacity`, so at least
/// `members - 2 * capacity`).
pub fn capacity(members: usize, cps: usize) -> usize {
    let cps = cps.max(1);
    members.div_ceil(cps) + members / (10 * cps)
}

/// The CP member (an index into `endpoints`) each of `members` starts with: in id order,
/// each takes its highest-ranked CP member that has fewer than [`capacity`] members. The
/// outcome depends only on the sets, not on the order they are given in.
pub fn assign(members: &[MemberId], endpoints: &[String]) -> HashMap<MemberId, usize> {
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut assigned = HashMap::with_capacity(sorted.len());
    if endpoints.is_empty() {
        return assigned;
    }
    let cap = capacity(sorted.len(), endpoints.len());
    let mut load = vec![0usize; endpoints.len()];
    for member in sorted {
        let mut ranked: Vec<usize> = (0..endpoints.len()).collect();
        ranked.sort_by_cached_key(|&i| std::cmp::Reverse(weight(member, &endpoints[i])));
        // The loads sum to fewer than cap * endpoints: some CP member has room.
        let chosen = ranked
            .into_iter()
            .find(|&i| load[i] < cap)
            .expect("room under the capacity");
        load[chosen] += 1;
        assigned.insert(member, chosen);
    }
    assigned
}

/// The order in which `member` tries the CP members at `endpoints`, given the members outside
/// the control plane that share them (`members`, this one included once it is admitted): its
/// assigned CP member first ([`assign`]), then the others by rendezvous weight.
pub fn order(member: MemberId, members: &[MemberId], endpoints: &[String]) -> Vec<String> {
    let first = assign(members, endpoints)
        .get(&member)
        .map(|&i| endpoints[i].clone());
    let mut ordered = endpoints.to_vec();
    preference(member, &mut ordered);
    if let Some(first) = first {
        if let Some(at) = ordered.iter().position(|e| *e == first) {
            ordered[..=at].rotate_right(1);
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cps(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:7700", i + 1)).collect()
    }

    fn id(raw: u64) -> MemberId {
        MemberId::new(raw.max(1)).unwrap()
    }

    fn ids(seed: u64, n: usize) -> Vec<MemberId> {
        (0..n as u64)
            .map(|i| {
                id(seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(i * 7919 + 1))
            })
            .collect()
    }

    fn loads(assigned: &HashMap<MemberId, usize>, cps: usize) -> Vec<usize> {
        let mut load = vec![0; cps];
        for &i in assigned.values() {
            load[i] += 1;
        }
        load
    }

    #[test]
    fn first_choices_alone_spread_evenly_only_on_average() {
        for n in [3usize, 5] {
            let mut first = std::collections::BTreeMap::<String, usize>::new();
            let members = 3000u64;
            for raw in 1..=members {
                let mut order = cps(n);
                preference(id(raw * 7919), &mut order);
                *first.entry(order[0].clone()).or_default() += 1;
            }
            assert_eq!(first.len(), n, "every CP member is someone's first choice");
            let fair = members as f64 / n as f64;
            for (cp, count) in first {
                let share = count as f64 / fair;
                assert!(
                    (0.8..1.2).contains(&share),
                    "{cp}: {count} of {members} (n={n})"
                );
            }
        }
    }

    #[test]
    fn capacity_leaves_room_for_everyone() {
        for cps in 1..=7 {
            for members in 0..2000 {
                assert!(
                    capacity(members, cps) * cps >= members,
                    "{members} over {cps}"
                );
            }
        }
    }

    #[test]
    fn most_members_keep_their_first_choice() {
        let members = ids(11, 1000);
        let endpoints = cps(3);
        let assigned = assign(&members, &endpoints);
        let first_choice = members
            .iter()
            .filter(|m| {
                let mut order = endpoints.clone();
                preference(**m, &mut order);
                endpoints[assigned[m]] == order[0]
            })
            .count();
        assert!(first_choice >= 900, "{first_choice} of 1000");
    }

    proptest! {
        #[test]
        fn the_ranking_depends_on_the_set_only_and_losing_one_moves_only_its_members(
            raw in 1u64..u64::MAX, rotate in 0usize..5, gone in 0usize..5,
        ) {
            let mut order = cps(5);
            preference(id(raw), &mut order);
            let mut shuffled = cps(5);
            shuffled.rotate_left(rotate);
            preference(id(raw), &mut shuffled);
            prop_assert_eq!(&order, &shuffled);
            let mut without = cps(5);
            let removed = without.remove(gone);
            preference(id(raw), &mut without);
            let expected: Vec<String> = order.iter().filter(|e| **e != removed).cloned().collect();
            prop_assert_eq!(without, expected);
        }

        /// With 3 CP members (and 8 or more members) no share is more than twice another's;
        /// with any number none exceeds the capacity.
        #[test]
        fn loads_are_bounded(seed in any::<u64>(), n in 3usize..600, k in 2usize..6) {
            let members = ids(seed, n);
            let assigned = assign(&members, &cps(k));
            prop_assert_eq!(assigned.len(), n);
            let load = loads(&assigned, k);
            let (min, max) = (*load.iter().min().unwrap(), *load.iter().max().unwrap());
            prop_assert!(max <= capacity(n, k), "{load:?}");
            if k == 3 && n >= 8 {
                prop_assert!(max <= 2 * min, "{load:?}");
            }
        }

        /// Every member computes the same assignment whatever order its view lists members in,
        /// and its order starts with its assignment and holds every CP member once.
        #[test]
        fn the_assignment_depends_on_the_sets_only(seed in any::<u64>(), n in 1usize..200, rotate in 0usize..200) {
            let members = ids(seed, n);
            let endpoints = cps(3);
            let assigned = assign(&members, &endpoints);
            let mut shuffled = members.clone();
            shuffled.rotate_left(rotate % n);
            let mut reversed_cps = endpoints.clone();
            reversed_cps.reverse();
            let again = assign(&shuffled, &reversed_cps);
            for m in &members {
                prop_assert_eq!(&endpoints[assigned[m]], &reversed_cps[again[m]]);
            }
            let m = members[rotate % n];
            let order = order(m, &shuffled, &reversed_cps);
            prop_assert_eq!(&order[0], &endpoints[assigned[&m]]);
            let mut sorted = order.clone();
            sorted.sort();
            prop_assert_eq!(sorted, endpoints);
        }

        /// One more member moves few of the others (bounded loads cascade, but not far).
        #[test]
        fn a_join_moves_few_others(seed in any::<u64>(), extra in 1u64..u64::MAX) {
            let members = ids(seed, 300);
            let endpoints = cps(3);
            let before = assign(&members, &endpoints);
            let mut more = members.clone();
            more.push(id(extra));
            let after = assign(&more, &endpoints);
            let moved = members.iter().filter(|m| before[*m] != after[*m]).count();
            prop_assert!(moved <= 30, "{moved} of 300 moved");
        }
    }
}
