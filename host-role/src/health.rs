//! One check's health over time (sans IO; the caller passes the time): Consul's flap damping,
//! TTL expiry, how long it has been critical, and what an HTTP answer means.
//!
//! Rules (Consul's `agent/checks`): a run that passes or warns counts as a success, anything
//! else as a failure; the status moves only after `success_before_passing` successes in a row
//! (to passing or warning) or `failures_before_critical` failures in a row (to critical); 0
//! means at once. A TTL check that hears nothing within its TTL counts a failure with the
//! output `TTL expired`, and again every TTL after. A service is deregistered once one of its
//! checks with `deregister_critical_after` has been critical that long.

use std::time::Instant;

use hivemind_common::records::{CheckStatus, Health};

use crate::registration::{CheckDef, CheckKind, OUTPUT_MAX, RECORD_OUTPUT};

/// What a check said and since when, as this host runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    status: Health,
    /// The latest output (at most [`OUTPUT_MAX`] bytes), as the agent API shows it.
    output: String,
    /// The output when the status last changed: what the host record carries, so a check whose
    /// output changes every run (a timestamp) does not republish the record every run.
    recorded: String,
    successes: u32,
    failures: u32,
    critical_since: Option<Instant>,
    /// When a TTL check next expires unless updated.
    ttl_deadline: Option<Instant>,
}

/// A check's status as its host keeps it across a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    pub status: Health,
    pub output: String,
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// An HTTP check's verdict on a status code: 2xx passing, 429 warning, anything else critical.
pub fn http_health(code: u16) -> Health {
    match code {
        200..=299 => Health::Passing,
        429 => Health::Warning,
        _ => Health::Critical,
    }
}

impl CheckState {
    /// A check as registered at `now`. Re-registering keeps what the `previous` state of the
    /// same id said (Consul keeps the status); a TTL starts running now.
    pub fn new(def: &CheckDef, now: Instant, previous: Option<&CheckState>) -> Self {
        let ttl_deadline = match def.kind {
            CheckKind::Ttl { ttl } => Some(now + ttl),
            _ => None,
        };
        match previous {
            Some(p) => Self {
                ttl_deadline,
                ..p.clone()
            },
            None => Self {
                status: def.status,
                output: String::new(),
                recorded: String::new(),
                successes: 0,
                failures: 0,
                critical_since: (def.status == Health::Critical).then_some(now),
                ttl_deadline,
            },
        }
    }

    pub fn status(&self) -> Health {
        self.status
    }

    pub fn saved(&self) -> Saved {
        Saved {
            status: self.status,
            output: self.output.clone(),
        }
    }

    /// Starts from what the host said before it restarted rather than from the registered
    /// status: a restart does not take a passing service out of DNS. Time critical counts from
    /// `now`.
    pub fn restore(&mut self, saved: Saved, now: Instant) {
        self.status = saved.status;
        self.output = truncate(saved.output, OUTPUT_MAX);
        self.recorded = truncate(self.output.clone(), RECORD_OUTPUT);
        self.critical_since = (saved.status == Health::Critical).then_some(now);
    }

    pub fn output(&self) -> &str {
        &self.output
    }

    /// A run's (or an application's) verdict; answers whether the status changed.
    pub fn observe(
        &mut self,
        def: &CheckDef,
        result: Health,
        output: String,
        now: Instant,
    ) -> bool {
        let output = truncate(output, OUTPUT_MAX);
        let (count, needed) = if result == Health::Critical {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures, def.failures_before_critical)
        } else {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes, def.success_before_passing)
        };
        if count < needed {
            return false;
        }
        self.output = output;
        if result == self.status {
            return false;
        }
        self.status = result;
        self.recorded = truncate(self.output.clone(), RECORD_OUTPUT);
        self.critical_since = (result == Health::Critical).then_some(now);
        true
    }

    /// An application's report on a TTL check: the TTL starts over, then [`Self::observe`].
    pub fn report(&mut self, def: &CheckDef, status: Health, note: String, now: Instant) -> bool {
        if let CheckKind::Ttl { ttl } = def.kind {
            self.ttl_deadline = Some(now + ttl);
        }
        self.observe(def, status, note, now)
    }

    /// A TTL check not updated by its deadline counts a failure (and its TTL starts over);
    /// answers whether the status changed.
    pub fn expire(&mut self, def: &CheckDef, now: Instant) -> bool {
        let CheckKind::Ttl { ttl } = def.kind else {
            return false;
        };
        match self.ttl_deadline {
            Some(deadline) if deadline <= now => {
                self.ttl_deadline = Some(now + ttl);
                self.observe(def, Health::Critical, "TTL expired".into(), now)
            }
            _ => false,
        }
    }

    /// Whether the check has been critical for its `deregister_critical_after`.
    pub fn reap_due(&self, def: &CheckDef, now: Instant) -> bool {
        match (def.deregister_critical_after, self.critical_since) {
            (Some(after), Some(since)) => now.saturating_duration_since(since) >= after,
            _ => false,
        }
    }

    /// The check as the host record carries it.
    pub fn wire(&self, def: &CheckDef) -> CheckStatus {
        CheckStatus {
            id: def.id.clone(),
            name: def.name.clone(),
            status: self.status,
            output: self.recorded.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn def(kind: CheckKind, success: u32, failures: u32) -> CheckDef {
        CheckDef {
            id: "c".into(),
            name: "c".into(),
            kind,
            timeout: Duration::from_secs(2),
            deregister_critical_after: Some(Duration::from_secs(5)),
            success_before_passing: success,
            failures_before_critical: failures,
            notes: String::new(),
            status: Health::Critical,
        }
    }

    fn tcp() -> CheckKind {
        CheckKind::Tcp {
            addr: "x:1".into(),
            interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_new_check_is_critical_until_a_run_passes() {
        let t0 = Instant::now();
        let d = def(tcp(), 0, 0);
        let mut s = CheckState::new(&d, t0, None);
        assert_eq!(s.status(), Health::Critical);
        assert!(s.observe(&d, Health::Passing, "ok".into(), t0));
        assert!(
            !s.observe(&d, Health::Passing, "ok again".into(), t0),
            "no change"
        );
        assert_eq!(s.output(), "ok again");
        assert_eq!(
            s.wire(&d).output,
            "ok",
            "the record keeps the output of the change"
        );
        assert!(s.observe(&d, Health::Warning, "slow down".into(), t0));
        assert_eq!(s.wire(&d).status, Health::Warning);
    }

    #[test]
    fn flap_damping_needs_runs_in_a_row() {
        let t0 = Instant::now();
        let d = def(tcp(), 2, 3);
        let mut s = CheckState::new(&d, t0, None);
        assert!(!s.observe(&d, Health::Passing, "1".into(), t0));
        assert!(
            s.observe(&d, Health::Passing, "2".into(), t0),
            "second success in a row"
        );
        assert!(!s.observe(&d, Health::Critical, "x".into(), t0));
        assert!(!s.observe(&d, Health::Critical, "x".into(), t0));
        assert!(
            !s.observe(&d, Health::Passing, "back".into(), t0),
            "the failures start over"
        );
        assert!(!s.observe(&d, Health::Critical, "x".into(), t0));
        assert!(!s.observe(&d, Health::Critical, "x".into(), t0));
        assert!(
            s.observe(&d, Health::Critical, "x".into(), t0),
            "third failure in a row"
        );
        assert_eq!(s.status(), Health::Critical);
    }

    #[test]
    fn a_ttl_check_expires_unless_reported_and_is_reaped_after_its_deadline() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3);
        let d = CheckDef {
            status: Health::Passing,
            ..def(CheckKind::Ttl { ttl }, 0, 0)
        };
        let mut s = CheckState::new(&d, t0, None);
        assert!(!s.expire(&d, t0 + Duration::from_secs(2)));
        assert!(!s.report(
            &d,
            Health::Passing,
            "fine".into(),
            t0 + Duration::from_secs(2)
        ));
        assert!(
            !s.expire(&d, t0 + Duration::from_secs(4)),
            "the report moved the deadline"
        );
        assert!(s.expire(&d, t0 + Duration::from_secs(5)));
        assert_eq!((s.status(), s.output()), (Health::Critical, "TTL expired"));
        assert!(!s.reap_due(&d, t0 + Duration::from_secs(9)));
        assert!(s.reap_due(&d, t0 + Duration::from_secs(10)));
        assert!(s.report(
            &d,
            Health::Passing,
            "back".into(),
            t0 + Duration::from_secs(10)
        ));
        assert!(!s.reap_due(&d, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_restored_check_starts_from_its_saved_status() {
        let t0 = Instant::now();
        let d = def(tcp(), 0, 0);
        let mut s = CheckState::new(&d, t0, None);
        s.restore(
            Saved {
                status: Health::Passing,
                output: "fine".into(),
            },
            t0,
        );
        assert_eq!((s.status(), s.output()), (Health::Passing, "fine"));
        assert_eq!(s.wire(&d).output, "fine");
        assert!(!s.reap_due(&d, t0 + Duration::from_secs(60)));
        assert_eq!(s.saved().status, Health::Passing);
    }

    #[test]
    fn re_registering_keeps_the_status_and_http_codes_map_as_consul() {
        let t0 = Instant::now();
        let d = def(tcp(), 0, 0);
        let mut s = CheckState::new(&d, t0, None);
        s.observe(&d, Health::Passing, "ok".into(), t0);
        assert_eq!(CheckState::new(&d, t0, Some(&s)).status(), Health::Passing);
        assert_eq!(http_health(204), Health::Passing);
        assert_eq!(http_health(429), Health::Warning);
        assert_eq!(http_health(503), Health::Critical);
        assert_eq!(http_health(301), Health::Critical);
        assert_eq!(truncate("héllo".into(), 2), "h");
    }

    proptest! {
        /// With damping N, the status never moves on fewer than N same-kind runs in a row.
        #[test]
        fn damping_holds_for_any_run_sequence(runs in proptest::collection::vec(0u8..3, 1..60), n in 1u32..4) {
            let t0 = Instant::now();
            let d = def(tcp(), n, n);
            let mut s = CheckState::new(&d, t0, None);
            let mut streak = (Health::Passing, 0u32);
            for r in runs {
                let result = [Health::Passing, Health::Warning, Health::Critical][r as usize];
                let failure = result == Health::Critical;
                streak = if (streak.0 == Health::Critical) == failure { (result, streak.1 + 1) } else { (result, 1) };
                let before = s.status();
                if s.observe(&d, result, String::new(), t0) {
                    prop_assert!(streak.1 >= n, "moved from {:?} after {} runs", before, streak.1);
                    prop_assert_eq!(s.status(), result);
                }
            }
        }
    }
}
