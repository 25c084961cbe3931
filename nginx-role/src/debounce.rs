//! When a burst of changes renders (sans IO): after `quiet` without a change, and at the latest
//! `max` after the first change of the burst (`--nginx-debounce MIN,MAX`).

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Debounce {
    quiet: Duration,
    max: Duration,
    /// The first and the last change not rendered yet.
    pending: Option<(Instant, Instant)>,
}

impl Debounce {
    pub fn new(quiet: Duration, max: Duration) -> Self {
        Self {
            quiet,
            max: max.max(quiet),
            pending: None,
        }
    }

    /// A change at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.pending = Some(match self.pending {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    /// When the pending burst renders (`None`: nothing pending).
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = self.pending?;
        Some((last + self.quiet).min(first + self.max))
    }

    /// Whether the burst renders at `now`; if so it is taken.
    pub fn take(&mut self, now: Instant) -> bool {
        let ready = self.due().is_some_and(|due| now >= due);
        if ready {
            self.pending = None;
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_lone_change_renders_after_the_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debounce::new(200 * MS, 2000 * MS);
        assert_eq!(d.due(), None);
        d.changed(t0);
        assert!(!d.take(t0 + 199 * MS));
        assert!(d.take(t0 + 200 * MS));
        assert_eq!(d.due(), None, "taken");
    }

    #[test]
    fn a_steady_stream_of_changes_renders_at_most_max_after_its_first() {
        let t0 = Instant::now();
        let mut d = Debounce::new(200 * MS, 2000 * MS);
        let mut renders = 0;
        // A change every 100 ms for 5 s: never quiet for 200 ms.
        for step in 0..50u32 {
            let now = t0 + step * 100 * MS;
            if d.take(now) {
                renders += 1;
            }
            d.changed(now);
        }
        assert_eq!(renders, 2, "at 2 s and 4 s");
    }

    #[test]
    fn a_burst_of_a_hundred_changes_within_a_second_renders_once() {
        let t0 = Instant::now();
        let mut d = Debounce::new(200 * MS, 2000 * MS);
        for step in 0..100u32 {
            d.changed(t0 + step * 10 * MS);
        }
        assert_eq!(d.due(), Some(t0 + 990 * MS + 200 * MS));
        assert!(d.take(t0 + 1190 * MS));
    }
}
