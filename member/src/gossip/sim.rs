//! Deterministic simulation of many foca members over an in-memory network: a virtual clock,
//! per-message delay, random drops and partitions, all from a seeded RNG. No sockets and no
//! real time, so every run is the same and a failure replays exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, Timer};
use hivemind_common::MemberId;
use rand10::rngs::StdRng;
use rand10::{RngExt, SeedableRng};

use super::{BincodeCodec, GossipId, Profile};

type Member = Foca<GossipId, BincodeCodec, StdRng, NoCustomBroadcast>;

enum Event {
    Timer(usize, Timer<GossipId>),
    Deliver { to: usize, data: Bytes },
}

struct Sim {
    now: Duration,
    seq: u64,
    queue: BTreeMap<(Duration, u64), Event>,
    members: Vec<Member>,
    runtimes: Vec<AccumulatingRuntime<GossipId>>,
    index_of: HashMap<MemberId, usize>,
    /// Members cut off from everyone (both directions).
    isolated: BTreeSet<usize>,
    drop_rate: f64,
    max_delay_ms: u64,
    network: StdRng,
    /// MemberDown notifications seen by each member.
    downs: Vec<Vec<GossipId>>,
    seed: usize,
    last_retry: Duration,
}

impl Sim {
    fn new(n: usize, seed: u64, drop_rate: f64, max_delay_ms: u64) -> Self {
        let mut members = Vec::new();
        let mut index_of = HashMap::new();
        for i in 0..n {
            let id = GossipId {
                id: MemberId::new(i as u64 + 1).unwrap(),
                addr: SocketAddr::from(([10, 0, 0, 1], 7000 + i as u16)),
                generation: 1,
            };
            index_of.insert(id.id, i);
            let rng = StdRng::seed_from_u64(seed ^ (i as u64 * 7919));
            members.push(Foca::new(id, Profile::Local.config(n), rng, BincodeCodec));
        }
        Self {
            now: Duration::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            members,
            runtimes: (0..n).map(|_| AccumulatingRuntime::new()).collect(),
            index_of,
            isolated: BTreeSet::new(),
            drop_rate,
            max_delay_ms,
            network: StdRng::seed_from_u64(seed),
            downs: vec![Vec::new(); n],
            seed: 0,
            last_retry: Duration::ZERO,
        }
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), event);
    }

    /// Moves what member `i`'s runtime produced into the network and the timer queue.
    fn drain(&mut self, i: usize) {
        while let Some((to, data)) = self.runtimes[i].to_send() {
            let to = self.index_of[&to.id];
            let cut = self.isolated.contains(&i) || self.isolated.contains(&to);
            if cut || self.network.random_bool(self.drop_rate) {
                continue;
            }
            let delay = Duration::from_millis(self.network.random_range(1..=self.max_delay_ms));
            self.schedule(delay, Event::Deliver { to, data });
        }
        while let Some((after, timer)) = self.runtimes[i].to_schedule() {
            self.schedule(after, Event::Timer(i, timer));
        }
        while let Some(notification) = self.runtimes[i].to_notify() {
            if let OwnedNotification::MemberDown(id) = notification {
                self.downs[i].push(id);
            }
        }
    }

    fn announce_all_to(&mut self, seed: usize) {
        self.seed = seed;
        for i in 0..self.members.len() {
            if i != seed {
                self.announce(i);
            }
        }
    }

    fn announce(&mut self, i: usize) {
        let target = *self.members[self.seed].identity();
        self.members[i]
            .announce(target, &mut self.runtimes[i])
            .unwrap();
        self.drain(i);
    }

    /// What the member runtime does for a joiner: while it knows nobody (its announce or the
    /// answer was lost), announce again, once a second.
    fn retry_lonely_joiners(&mut self) {
        if self.now < self.last_retry + Duration::from_secs(1) {
            return;
        }
        self.last_retry = self.now;
        for i in 0..self.members.len() {
            if i != self.seed && self.members[i].num_members() == 0 {
                self.announce(i);
            }
        }
    }

    /// Runs every event due within `span` of virtual time, in deadline order.
    fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ((at, _), event) = entry.remove_entry();
            self.now = at;
            let i = match event {
                Event::Timer(i, timer) => {
                    let _ = self.members[i].handle_timer(timer, &mut self.runtimes[i]);
                    i
                }
                Event::Deliver { to, data } => {
                    // A bad packet is an error from foca, never a panic; the member carries on.
                    let _ = self.members[to].handle_data(&data, &mut self.runtimes[to]);
                    to
                }
            };
            self.drain(i);
        }
        self.now = until;
    }

    /// The member ids `i` considers active (alive or suspect).
    fn view(&self, i: usize) -> BTreeSet<MemberId> {
        self.members[i].iter_members().map(|m| m.id().id).collect()
    }

    fn everyone_but(&self, i: usize) -> BTreeSet<MemberId> {
        (0..self.members.len())
            .filter(|j| *j != i)
            .map(|j| self.members[j].identity().id)
            .collect()
    }

    fn converged(&self) -> bool {
        (0..self.members.len()).all(|i| self.view(i) == self.everyone_but(i))
    }

    /// Runs in steps until `done` holds; fails after `limit` of virtual time.
    fn run_until(&mut self, limit: Duration, what: &str, done: impl Fn(&Sim) -> bool) {
        let deadline = self.now + limit;
        while !done(self) {
            if self.now >= deadline {
                let views: Vec<usize> = (0..self.members.len())
                    .map(|i| self.view(i).len())
                    .collect();
                let downs: Vec<usize> = self.downs.iter().map(Vec::len).collect();
                panic!("{what}: not reached within {limit:?} of virtual time; view sizes {views:?}, downs {downs:?}");
            }
            self.run_for(Duration::from_millis(100));
            self.retry_lonely_joiners();
        }
    }
}

#[test]
fn members_converge_despite_drops_and_delays() {
    for seed in [1, 2, 3] {
        let mut sim = Sim::new(16, seed, 0.05, 20);
        sim.announce_all_to(0);
        sim.run_until(
            Duration::from_secs(30),
            "convergence of 16 members",
            Sim::converged,
        );
        // And it stays converged: no false suspicion turns into a down member.
        sim.run_for(Duration::from_secs(20));
        assert!(
            sim.converged(),
            "seed {seed}: a member dropped out of some view"
        );
        assert!(
            sim.downs.iter().all(Vec::is_empty),
            "seed {seed}: false down with 5% loss"
        );
    }
}

#[test]
fn a_partitioned_member_is_declared_down_and_readmitted_after_the_partition_heals() {
    let mut sim = Sim::new(10, 42, 0.02, 10);
    sim.announce_all_to(0);
    sim.run_until(
        Duration::from_secs(30),
        "initial convergence",
        Sim::converged,
    );
    let victim = 3;
    let victim_id = sim.members[victim].identity().id;
    let first_generation = sim.members[victim].identity().generation;

    sim.isolated.insert(victim);
    sim.run_until(
        Duration::from_secs(30),
        "the partitioned member declared down everywhere",
        |s| {
            (0..s.members.len()).filter(|i| *i != victim).all(|i| {
                !s.view(i).contains(&victim_id) && s.downs[i].iter().any(|d| d.id == victim_id)
            })
        },
    );

    sim.isolated.clear();
    sim.run_until(
        Duration::from_secs(60),
        "re-admission after the partition heals",
        Sim::converged,
    );
    // It came back as a new incarnation (renewed identity), and everyone knows that one.
    let renewed = *sim.members[victim].identity();
    assert!(renewed.generation > first_generation);
    for i in (0..sim.members.len()).filter(|i| *i != victim) {
        let seen = sim.members[i]
            .iter_members()
            .find(|m| m.id().id == victim_id)
            .unwrap();
        assert_eq!(
            seen.id().generation,
            renewed.generation,
            "member {i} sees a stale incarnation"
        );
    }
}

#[test]
fn garbage_packets_are_rejected_without_disturbing_the_cluster() {
    let mut sim = Sim::new(5, 9, 0.0, 5);
    sim.announce_all_to(0);
    sim.run_until(Duration::from_secs(20), "convergence", Sim::converged);
    for (k, junk) in [vec![], vec![0xff; 40], b"not a foca packet".to_vec()]
        .into_iter()
        .enumerate()
    {
        let to = k % 5;
        assert!(sim.members[to]
            .handle_data(&junk, &mut sim.runtimes[to])
            .is_err());
        sim.drain(to);
    }
    sim.run_for(Duration::from_secs(5));
    assert!(sim.converged());
}
