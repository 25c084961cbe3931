//! Sharing read-index rounds among concurrent linearizable reads (sans-IO).
//!
//! A linearizable read needs a read index obtained by a quorum round (the leader confirms it
//! still leads) that *started after the read arrived*: a round started earlier may have
//! captured a commit index older than a write the reader already saw acknowledged. Each read
//! starting its own round costs a heartbeat to every follower per read, so many concurrent
//! readers flood the leader. Instead, as etcd does, one round is in flight at a time; the reads
//! that arrive meanwhile wait for it to finish and then share the next round, which starts
//! after all of them arrived. Under load a round serves every read that arrived during the
//! previous one, so the rounds per second stay bounded by the round trip, not by the readers.
//!
//! [`ReadRounds`] holds the rule and the waiters; the caller runs the rounds and delivers the
//! answers (see `ControlPlane::read_barrier`).

/// What a read arriving at [`ReadRounds::arrive`] must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Arrival {
    /// No round was in flight: start one now; this read belongs to it.
    StartRound,
    /// A round is in flight: it may predate this read, so the read waits for the next one.
    WaitForNext,
}

/// The outcome of [`ReadRounds::finish`].
#[derive(Debug, PartialEq, Eq)]
pub struct Finished<W> {
    /// The reads the finished round answers: every one of them arrived before it started.
    pub answered: Vec<W>,
    /// Reads arrived while it ran: start the next round now, for them.
    pub start_next: bool,
}

/// At most one round in flight; the reads that arrive while it runs form the next round.
#[derive(Debug)]
pub struct ReadRounds<W> {
    /// The reads of the round in flight; `None` while no round runs.
    in_flight: Option<Vec<W>>,
    /// Reads that arrived while a round was in flight.
    next: Vec<W>,
}

impl<W> Default for ReadRounds<W> {
    fn default() -> Self {
        Self {
            in_flight: None,
            next: Vec::new(),
        }
    }
}

impl<W> ReadRounds<W> {
    /// A read arrives; see [`Arrival`].
    pub fn arrive(&mut self, read: W) -> Arrival {
        match &mut self.in_flight {
            None => {
                self.in_flight = Some(vec![read]);
                Arrival::StartRound
            }
            Some(_) => {
                self.next.push(read);
                Arrival::WaitForNext
            }
        }
    }

    /// The round in flight finished: hands back its reads to answer, and makes the reads that
    /// arrived meanwhile the round in flight (the caller starts it when `start_next`).
    pub fn finish(&mut self) -> Finished<W> {
        let answered = self.in_flight.take().unwrap_or_default();
        let start_next = !self.next.is_empty();
        if start_next {
            self.in_flight = Some(std::mem::take(&mut self.next));
        }
        Finished {
            answered,
            start_next,
        }
    }

    /// The rounds stopped for good (their runner is gone): every read waiting, to be told so.
    pub fn abandon(&mut self) -> Vec<W> {
        let mut reads = self.in_flight.take().unwrap_or_default();
        reads.append(&mut self.next);
        reads
    }

    /// Whether a round is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_read_starts_a_round_and_later_ones_share_the_next() {
        let mut rounds = ReadRounds::default();
        assert_eq!(rounds.arrive(1), Arrival::StartRound);
        assert_eq!(rounds.arrive(2), Arrival::WaitForNext);
        assert_eq!(rounds.arrive(3), Arrival::WaitForNext);
        assert_eq!(
            rounds.finish(),
            Finished {
                answered: vec![1],
                start_next: true
            }
        );
        assert_eq!(rounds.arrive(4), Arrival::WaitForNext);
        assert_eq!(
            rounds.finish(),
            Finished {
                answered: vec![2, 3],
                start_next: true
            }
        );
        assert_eq!(
            rounds.finish(),
            Finished {
                answered: vec![4],
                start_next: false
            }
        );
        assert!(!rounds.in_flight());
        assert_eq!(rounds.arrive(5), Arrival::StartRound);
    }

    #[test]
    fn abandoning_hands_back_every_waiting_read_and_starts_afresh() {
        let mut rounds = ReadRounds::default();
        let _ = rounds.arrive(1);
        let _ = rounds.arrive(2);
        assert_eq!(rounds.abandon(), vec![1, 2]);
        assert!(!rounds.in_flight());
        assert_eq!(rounds.arrive(3), Arrival::StartRound);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Arrive,
        Finish,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![3 => Just(Step::Arrive), 2 => Just(Step::Finish)],
            0..200,
        )
    }

    proptest! {
        /// Every read is answered exactly once, by a round that started after it arrived,
        /// at most two rounds after it arrived; rounds never overlap and never run empty.
        #[test]
        fn reads_are_answered_once_by_a_round_started_after_them(steps in steps()) {
            let mut rounds = ReadRounds::default();
            let mut clock = 0u64;
            let mut arrived_at = Vec::new(); // read id -> clock at arrival
            let mut answered = Vec::new(); // read id -> answered?
            // The round in flight: when it started and how many rounds had finished before.
            let mut running: Option<u64> = None;
            let mut finished_rounds = 0u64;
            let mut finished_before_arrival = Vec::new();
            let mut run = |rounds: &mut ReadRounds<usize>, step: &Step, running: &mut Option<u64>| {
                clock += 1;
                match step {
                    Step::Arrive => {
                        let id = arrived_at.len();
                        arrived_at.push(clock);
                        answered.push(false);
                        finished_before_arrival.push(finished_rounds);
                        if rounds.arrive(id) == Arrival::StartRound {
                            prop_assert!(running.is_none(), "a second round in flight");
                            clock += 1;
                            *running = Some(clock);
                        } else {
                            prop_assert!(running.is_some(), "waits for no round");
                        }
                    }
                    Step::Finish => {
                        let Some(started) = running.take() else {
                            prop_assert!(!rounds.in_flight());
                            return Ok(());
                        };
                        finished_rounds += 1;
                        let done = rounds.finish();
                        prop_assert!(!done.answered.is_empty(), "a round ran for no read");
                        for id in done.answered {
                            prop_assert!(!answered[id], "read {} answered twice", id);
                            answered[id] = true;
                            prop_assert!(arrived_at[id] < started, "read {} predates its round", id);
                            prop_assert!(finished_rounds - finished_before_arrival[id] <= 2,
                                "read {} waited more than two rounds", id);
                        }
                        if done.start_next {
                            clock += 1;
                            *running = Some(clock);
                        }
                    }
                }
                Ok(())
            };
            for step in &steps {
                run(&mut rounds, step, &mut running)?;
            }
            // Let every round run out: then every read was answered.
            while running.is_some() {
                run(&mut rounds, &Step::Finish, &mut running)?;
            }
            prop_assert!(answered.iter().all(|a| *a));
            prop_assert!(!rounds.in_flight());
        }
    }
}
