//! A latency histogram cheap enough for hot paths (a DNS answer, a Raft append): fixed
//! buckets of atomic counters, no lock. Read at scrape time as Prometheus wants it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (the last, +Inf, is implicit).
pub const BOUNDS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One counter per bound, plus +Inf.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// What a scrape reads: the sum in seconds, the count, and per bucket (upper bound, count in
/// that bucket alone; the encoder accumulates). The last bound is `f64::MAX`, meaning +Inf.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        self.buckets[bucket(took)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Adds what a [`LocalHistogram`] gathered, and empties it.
    pub fn absorb(&self, local: &mut LocalHistogram) {
        for (shared, n) in self.buckets.iter().zip(&mut local.buckets) {
            if *n > 0 {
                shared.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        self.sum_nanos
            .fetch_add(std::mem::take(&mut local.sum_nanos), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = BOUNDS
            .iter()
            .copied()
            // prometheus-client spells `f64::MAX` as `+Inf`.
            .chain([f64::MAX])
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect::<Vec<_>>();
        HistogramSnapshot {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            // The buckets' total (no separate counter to keep on the hot path).
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

/// The bucket an observation of `took` lands in.
fn bucket(took: Duration) -> usize {
    let seconds = took.as_secs_f64();
    BOUNDS
        .iter()
        .position(|&b| seconds <= b)
        .unwrap_or(BOUNDS.len())
}

/// One thread's observations, without atomics, until it hands them to a [`LatencyHistogram`]
/// ([`LatencyHistogram::absorb`]): for a hot path on several threads, where an atomic add per
/// observation on a shared cache line costs more than the work observed.
#[derive(Debug, Default)]
pub struct LocalHistogram {
    buckets: [u64; BOUNDS.len() + 1],
    sum_nanos: u64,
}

impl LocalHistogram {
    pub fn observe(&mut self, took: Duration) {
        self.buckets[bucket(took)] += 1;
        self.sum_nanos = self
            .sum_nanos
            .saturating_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(25));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (0.000_025, 2));
        assert_eq!(s.buckets[5], (0.001, 1));
        assert_eq!(s.buckets.last(), Some(&(f64::MAX, 1)));
        assert!((s.sum - 3.000_735).abs() < 1e-9);
    }

    #[test]
    fn a_local_histogram_adds_up_to_the_same_as_observing_directly() {
        let direct = LatencyHistogram::default();
        let absorbed = LatencyHistogram::default();
        let mut local = LocalHistogram::default();
        for micros in [3, 40, 700, 2_000, 90_000] {
            direct.observe(Duration::from_micros(micros));
            local.observe(Duration::from_micros(micros));
        }
        absorbed.absorb(&mut local);
        assert_eq!(absorbed.snapshot(), direct.snapshot());
        absorbed.absorb(&mut local);
        assert_eq!(
            absorbed.snapshot(),
            direct.snapshot(),
            "absorbing empties it"
        );
    }
}
