//! Retry pacing for background loops and retried calls: waits that double from a first wait up
//! to a cap, and start over after a success. Sans IO: it hands out durations, the loop sleeps.

use std::time::Duration;

/// Waits that double from `first` up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`; never waits longer than `max` (nor less than `first`).
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The wait before the next attempt; the one after it is twice as long, up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_a_reset() {
        let mut b = Backoff::new(100 * MS, 500 * MS);
        let waits: Vec<_> = (0..5).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
        b.reset();
        assert_eq!(b.next_wait(), 100 * MS);
    }

    proptest! {
        #[test]
        fn every_wait_lies_between_first_and_max_and_never_shrinks(
            first in 1u64..10_000, max in 0u64..100_000, n in 1usize..40
        ) {
            let (first, max) = (Duration::from_millis(first), Duration::from_millis(max));
            let mut b = Backoff::new(first, max);
            let mut last = Duration::ZERO;
            for _ in 0..n {
                let wait = b.next_wait();
                prop_assert!(wait >= first && wait <= max.max(first));
                prop_assert!(wait >= last);
                last = wait;
            }
        }
    }
}
