//! Which faults a run injects, in what order, and which links a partition cuts (sans-IO).
//!
//! A run is a sequence of fault cycles drawn from a seeded generator: the same seed gives the
//! same faults against the same members. Partitions are sets of cut links between members
//! (symmetric pairs), so every shape (an isolated leader, two halves, a bridge, a ring) is one
//! value the network layer applies the same way.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One kind of fault. Each is injected, held for a while, then healed.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
pub enum Fault {
    /// `kill -9` of the leader, restarted when healed.
    KillLeader,
    /// `kill -9` of one member chosen at random.
    KillRandom,
    /// `kill -9` of a minority (1 of 3, 2 of 5).
    KillMinority,
    /// `kill -9` of every member at once.
    KillAll,
    /// SIGSTOP of the leader, SIGCONT when healed.
    PauseLeader,
    /// SIGSTOP of one member chosen at random.
    PauseRandom,
    /// The leader cut off from every other member.
    IsolateLeader,
    /// A random minority cut off from the majority.
    RandomHalves,
    /// The leader and one follower cannot talk; every other member talks to both.
    Bridge,
    /// Each member talks only to its two neighbours on a ring (5 members).
    Ring,
    /// Power loss of every member: killed, and what they wrote but did not sync is lost.
    PowerLossAll,
    /// Power loss of one member chosen at random.
    PowerLossRandom,
}

impl Fault {
    pub fn is_partition(self) -> bool {
        matches!(
            self,
            Self::IsolateLeader | Self::RandomHalves | Self::Bridge | Self::Ring
        )
    }

    pub fn is_power_loss(self) -> bool {
        matches!(self, Self::PowerLossAll | Self::PowerLossRandom)
    }
}

/// What the run can do on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abilities {
    pub members: usize,
    /// Members in network namespaces: partitions possible.
    pub partitions: bool,
    /// Data directories on the power-loss filesystem.
    pub power_loss: bool,
}

/// The faults a run with `abilities` cycles through.
pub fn repertoire(abilities: Abilities) -> Vec<Fault> {
    use Fault::*;
    let mut faults = vec![
        KillLeader,
        KillRandom,
        KillMinority,
        KillAll,
        PauseLeader,
        PauseRandom,
    ];
    if abilities.partitions {
        faults.extend([IsolateLeader, RandomHalves, Bridge]);
        if abilities.members >= 5 {
            faults.push(Ring);
        }
    }
    if abilities.power_loss {
        faults.extend([PowerLossAll, PowerLossRandom]);
    }
    faults
}

/// The seeded fault generator: every fault of the repertoire once per round, in a shuffled
/// order, so a run of `k × repertoire` cycles covers every fault `k` times.
pub struct Schedule {
    rng: StdRng,
    faults: Vec<Fault>,
    queue: Vec<Fault>,
}

impl Schedule {
    pub fn new(seed: u64, abilities: Abilities) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            faults: repertoire(abilities),
            queue: Vec::new(),
        }
    }

    /// The next fault.
    pub fn next_fault(&mut self) -> Fault {
        if self.queue.is_empty() {
            self.queue = self.faults.clone();
            self.queue.shuffle(&mut self.rng);
        }
        self.queue.pop().expect("the repertoire is never empty")
    }

    /// How long to hold a fault, in milliseconds (between `min` and `max`).
    pub fn hold_ms(&mut self, min: u64, max: u64) -> u64 {
        self.rng.gen_range(min..=max.max(min))
    }

    /// `count` members chosen at random, in a random order.
    pub fn pick(&mut self, members: usize, count: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..members).collect();
        all.shuffle(&mut self.rng);
        all.truncate(count);
        all
    }
}

/// The largest minority of `members`.
pub fn minority(members: usize) -> usize {
    (members - 1) / 2
}

/// A cut link between two members (stored with the lower index first).
pub type Link = (usize, usize);

fn link(a: usize, b: usize) -> Link {
    (a.min(b), a.max(b))
}

/// Cuts between `group` and every other member.
pub fn isolate(members: usize, group: &[usize]) -> BTreeSet<Link> {
    let mut cut = BTreeSet::new();
    for &a in group {
        for b in (0..members).filter(|b| !group.contains(b)) {
            cut.insert(link(a, b));
        }
    }
    cut
}

/// The leader and `other` cannot talk to each other, nor to the far side; the members left
/// over (the bridge) talk to everyone. With 3 members: only the link leader–other is cut.
pub fn bridge(members: usize, leader: usize, other: usize) -> BTreeSet<Link> {
    // Split the members that are not the bridge into two sides around the leader and `other`.
    // The first of the rest is the bridge: it stays on neither side.
    let rest: Vec<usize> = (0..members)
        .filter(|m| *m != leader && *m != other)
        .collect();
    let (mut side_a, mut side_b) = (vec![leader], vec![other]);
    for (i, m) in rest.iter().skip(1).enumerate() {
        if i % 2 == 0 {
            side_a.push(*m);
        } else {
            side_b.push(*m);
        }
    }
    let mut cut = BTreeSet::new();
    for &a in &side_a {
        for &b in &side_b {
            cut.insert(link(a, b));
        }
    }
    cut
}

/// Each member keeps only its two neighbours on the ring `0, 1, …, members - 1`.
pub fn ring(members: usize) -> BTreeSet<Link> {
    let mut cut = BTreeSet::new();
    for a in 0..members {
        for b in a + 1..members {
            let d = b - a;
            if d != 1 && d != members - 1 {
                cut.insert((a, b));
            }
        }
    }
    cut
}

/// Whether `a` and `b` can still reach each other (directly) under `cut`.
pub fn connected(cut: &BTreeSet<Link>, a: usize, b: usize) -> bool {
    !cut.contains(&link(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolating_the_leader_cuts_it_from_everyone_and_nothing_else() {
        let cut = isolate(5, &[2]);
        assert_eq!(cut.len(), 4);
        for m in [0, 1, 3, 4] {
            assert!(!connected(&cut, 2, m));
            for n in [0, 1, 3, 4] {
                assert!(m == n || connected(&cut, m, n));
            }
        }
    }

    #[test]
    fn halves_split_a_minority_from_the_majority() {
        let cut = isolate(5, &[0, 3]);
        assert!(connected(&cut, 0, 3));
        assert!(connected(&cut, 1, 4));
        assert!(!connected(&cut, 0, 1));
        assert_eq!(cut.len(), 2 * 3);
    }

    #[test]
    fn a_bridge_of_three_cuts_only_the_leader_and_the_other() {
        let cut = bridge(3, 0, 2);
        assert_eq!(cut, BTreeSet::from([(0, 2)]));
    }

    #[test]
    fn a_bridge_of_five_leaves_one_member_talking_to_both_sides() {
        let cut = bridge(5, 4, 1);
        // Member 0 is the bridge: connected to everyone.
        for m in 1..5 {
            assert!(connected(&cut, 0, m));
        }
        assert!(!connected(&cut, 4, 1));
        // Every other member sits on one side and is cut from the other side.
        let sides: Vec<_> = [2, 3]
            .iter()
            .map(|m| (connected(&cut, *m, 4), connected(&cut, *m, 1)))
            .collect();
        assert!(sides.iter().all(|(a, b)| a != b), "{sides:?}");
    }

    #[test]
    fn a_ring_of_five_keeps_each_member_two_neighbours() {
        let cut = ring(5);
        for a in 0..5 {
            let reachable = (0..5).filter(|b| *b != a && connected(&cut, a, *b)).count();
            assert_eq!(reachable, 2);
        }
        assert!(connected(&cut, 0, 4));
    }

    #[test]
    fn a_schedule_covers_every_fault_each_round_and_repeats_for_a_seed() {
        let abilities = Abilities {
            members: 5,
            partitions: true,
            power_loss: true,
        };
        let all = repertoire(abilities);
        assert_eq!(all.len(), 12);
        let mut s = Schedule::new(7, abilities);
        let round: BTreeSet<Fault> = (0..all.len()).map(|_| s.next_fault()).collect();
        assert_eq!(round.len(), all.len());
        let mut again = Schedule::new(7, abilities);
        let mut s = Schedule::new(7, abilities);
        for _ in 0..30 {
            assert_eq!(s.next_fault(), again.next_fault());
        }
        let no_net = repertoire(Abilities {
            members: 3,
            partitions: false,
            power_loss: false,
        });
        assert!(no_net
            .iter()
            .all(|f| !f.is_partition() && !f.is_power_loss()));
    }

    #[test]
    fn a_minority_is_less_than_half() {
        assert_eq!(minority(3), 1);
        assert_eq!(minority(5), 2);
    }
}
