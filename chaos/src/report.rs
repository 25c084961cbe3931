//! What a run found, per fault type: operations by outcome, unavailability, violations, and
//! the end-state checks (sans-IO: built from the history, the fault windows and the logs).

use std::collections::BTreeMap;

use crate::checker::Violation;
use crate::history::{Event, Op, Outcome, Tally};
use crate::membership::{ChurnKind, ChurnOp, ChurnOutcome};
use crate::nemesis::{Abilities, Fault};
use crate::workload::FINAL_READER;

/// When one fault was injected, healed, and the cluster was healthy again (ns since start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub fault: Fault,
    pub start_ns: u64,
    pub healed_ns: u64,
    pub recovered_ns: u64,
}

/// One fault type's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub cycles: usize,
    /// Operations invoked while this fault was in force or the cluster recovering from it.
    pub ops: Tally,
    /// Per cycle: from the injection to the first acknowledged write *and* read invoked after it.
    pub unavailable_ms: Vec<u64>,
}

/// A run's findings.
#[derive(Debug, Clone)]
pub struct Report {
    pub members: usize,
    pub abilities: Abilities,
    pub per_fault: BTreeMap<Fault, FaultStats>,
    /// Operations before the first fault.
    pub calm: Tally,
    pub violations: Vec<Violation>,
    /// End-state problems: registries that did not converge, faults the cluster did not
    /// recover from.
    pub end_state: Vec<String>,
    /// Lines of member logs that show a panic.
    pub panics: Vec<String>,
    /// ERROR and WARN lines in the member logs.
    pub error_lines: usize,
    pub warn_lines: usize,
    pub power_lost_bytes: u64,
    /// Churn operations by kind (`join`, `leave`, `claim`): ok / refused / unknown.
    pub churn: BTreeMap<&'static str, Tally>,
    /// The lock workload: times the lock was taken, fenced writes acknowledged, writes refused
    /// (a lost lease), and the violations of its rules (interleaved holders, early expiry).
    pub locks: Option<(u64, u64, usize)>,
    pub lock_violations: Vec<String>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        members: usize,
        abilities: Abilities,
        history: &[Event],
        windows: Vec<Window>,
        violations: Vec<Violation>,
        end_state: Vec<String>,
        logs: &[(String, String)],
        power_lost_bytes: u64,
    ) -> Self {
        let mut per_fault: BTreeMap<Fault, FaultStats> = BTreeMap::new();
        let mut calm = Tally::default();
        for e in history.iter().filter(|e| e.client != FINAL_READER) {
            match window_of(&windows, e.invoked_ns) {
                Some(w) => per_fault.entry(w.fault).or_default().ops.add(&e.outcome),
                None => calm.add(&e.outcome),
            }
        }
        for w in &windows {
            let stats = per_fault.entry(w.fault).or_default();
            stats.cycles += 1;
            stats.unavailable_ms.push(unavailable_ms(history, w));
        }
        let mut panics = Vec::new();
        let (mut error_lines, mut warn_lines) = (0, 0);
        for (member, text) in logs {
            for line in text.lines() {
                if line.contains("panicked at") {
                    panics.push(format!("{member}: {line}"));
                }
                error_lines += usize::from(line.contains(r#""level":"ERROR""#));
                warn_lines += usize::from(line.contains(r#""level":"WARN""#));
            }
        }
        Self {
            members,
            abilities,
            per_fault,
            calm,
            violations,
            end_state,
            panics,
            error_lines,
            warn_lines,
            power_lost_bytes,
            churn: BTreeMap::new(),
            locks: None,
            lock_violations: Vec::new(),
        }
    }

    /// Adds the lock workload's tallies and the violations its checks found.
    pub fn with_locks(mut self, log: &crate::locks::LockLog, violations: Vec<String>) -> Self {
        if log.acquired > 0 || !log.refused.is_empty() || !violations.is_empty() {
            self.locks = Some((log.acquired, log.writes_ok, log.refused.len()));
        }
        self.lock_violations = violations;
        self
    }

    /// Adds the churn's tallies, and the problems the membership rules found to the end state.
    pub fn with_churn(mut self, ops: &[ChurnOp], problems: Vec<String>) -> Self {
        for op in ops {
            let kind = match op.kind {
                ChurnKind::Join => "join",
                ChurnKind::Leave => "leave",
                ChurnKind::Claim { .. } => "claim",
            };
            let tally = self.churn.entry(kind).or_default();
            match op.outcome {
                ChurnOutcome::Ok => tally.ok += 1,
                ChurnOutcome::Refused => tally.fail += 1,
                ChurnOutcome::Unknown => tally.unknown += 1,
            }
        }
        self.end_state.extend(problems);
        self
    }

    /// No violation, no end-state problem, no panic.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.lock_violations.is_empty()
            && self.end_state.is_empty()
            && self.panics.is_empty()
    }

    pub fn cycles(&self) -> usize {
        self.per_fault.values().map(|s| s.cycles).sum()
    }
}

/// The window an operation invoked at `t` belongs to: the last fault injected at or before it.
fn window_of(windows: &[Window], t: u64) -> Option<&Window> {
    windows.iter().rev().find(|w| w.start_ns <= t)
}

/// From the injection to the first acknowledged write and the first successful read that were
/// both invoked after it (the later of the two), in milliseconds.
pub fn unavailable_ms(history: &[Event], w: &Window) -> u64 {
    let first_ok = |is_kind: fn(&Op) -> bool| {
        history
            .iter()
            .filter(|e| e.invoked_ns >= w.start_ns && is_kind(&e.op))
            .filter(|e| !matches!(e.outcome, Outcome::Fail | Outcome::Unknown))
            .map(|e| e.completed_ns)
            .min()
    };
    let write = first_ok(|op| matches!(op, Op::Write(_)));
    let read = first_ok(|op| matches!(op, Op::Read));
    let served = match (write, read) {
        (Some(a), Some(b)) => a.max(b),
        _ => w.recovered_ns,
    };
    served.saturating_sub(w.start_ns) / 1_000_000
}

fn median_and_max(values: &[u64]) -> (u64, u64) {
    let mut v = values.to_vec();
    v.sort_unstable();
    let median = hivemind_common::stats::percentile(&v, 0.5).unwrap_or(0);
    (median, v.last().copied().unwrap_or(0))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} members ({}, {}), {} fault cycles",
            self.members,
            if self.abilities.partitions {
                "network namespaces"
            } else {
                "loopback"
            },
            if self.abilities.power_loss {
                "power-loss filesystem"
            } else {
                "no power loss"
            },
            self.cycles()
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| fault | cycles | ok | fail | unknown | unavailable median ms | unavailable max ms |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|")?;
        writeln!(
            f,
            "| (none) | - | {} | {} | {} | - | - |",
            self.calm.ok, self.calm.fail, self.calm.unknown
        )?;
        for (fault, s) in &self.per_fault {
            let (median, max) = median_and_max(&s.unavailable_ms);
            writeln!(
                f,
                "| {fault:?} | {} | {} | {} | {} | {median} | {max} |",
                s.cycles, s.ops.ok, s.ops.fail, s.ops.unknown
            )?;
        }
        if !self.churn.is_empty() {
            writeln!(f)?;
            writeln!(f, "| churn | ok | refused | unknown |")?;
            writeln!(f, "|---|---:|---:|---:|")?;
            for (kind, t) in &self.churn {
                writeln!(f, "| {kind} | {} | {} | {} |", t.ok, t.fail, t.unknown)?;
            }
        }
        writeln!(f)?;
        writeln!(f, "linearizability violations: {}", self.violations.len())?;
        for v in &self.violations {
            writeln!(f, "{v}")?;
        }
        if let Some((acquired, writes, refused)) = self.locks {
            writeln!(
                f,
                "locks: taken {acquired} times, {writes} fenced writes acknowledged, {refused} refused after a lost lease"
            )?;
        }
        writeln!(f, "lock violations: {}", self.lock_violations.len())?;
        for v in &self.lock_violations {
            writeln!(f, "  {v}")?;
        }
        writeln!(f, "end-state problems: {}", self.end_state.len())?;
        for p in &self.end_state {
            writeln!(f, "  {p}")?;
        }
        writeln!(f, "panics in member logs: {}", self.panics.len())?;
        for p in self.panics.iter().take(10) {
            writeln!(f, "  {p}")?;
        }
        writeln!(
            f,
            "ERROR lines: {}, WARN lines: {}",
            self.error_lines, self.warn_lines
        )?;
        if self.abilities.power_loss {
            writeln!(
                f,
                "unsynced bytes dropped by power losses: {}",
                self.power_lost_bytes
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op, outcome: Outcome, invoked_ms: u64, completed_ms: u64) -> Event {
        Event {
            client: 0,
            key: "k".into(),
            op,
            invoked_ns: invoked_ms * 1_000_000,
            completed_ns: completed_ms * 1_000_000,
            outcome,
        }
    }

    #[test]
    fn unavailability_runs_to_the_first_write_and_read_served_after_the_fault() {
        let w = Window {
            fault: Fault::PauseLeader,
            start_ns: 1_000_000_000,
            healed_ns: 4_000_000_000,
            recovered_ns: 5_000_000_000,
        };
        let h = [
            // Before the fault: does not count.
            ev(Op::Write("a".into()), Outcome::Done, 900, 950),
            // Stuck with the paused leader.
            ev(Op::Write("b".into()), Outcome::Unknown, 1_001, 8_000),
            ev(Op::Read, Outcome::Read(None), 1_500, 1_700),
            ev(Op::Write("c".into()), Outcome::Done, 1_200, 2_100),
        ];
        assert_eq!(unavailable_ms(&h, &w), 1_100);
        // Nothing served: unavailable until the cluster recovered.
        assert_eq!(unavailable_ms(&h[..2], &w), 4_000);
    }

    #[test]
    fn operations_count_toward_the_fault_in_force_when_invoked() {
        let w = |fault, s: u64| Window {
            fault,
            start_ns: s * 1_000_000,
            healed_ns: 0,
            recovered_ns: 0,
        };
        let windows = [w(Fault::KillAll, 100), w(Fault::Bridge, 200)];
        let h = [
            ev(Op::Read, Outcome::Read(None), 50, 60),
            ev(Op::Read, Outcome::Unknown, 150, 160),
            ev(Op::Write("x".into()), Outcome::Fail, 250, 260),
        ];
        let abilities = Abilities {
            members: 3,
            partitions: true,
            power_loss: false,
        };
        let log = [(
            "cp1".to_string(),
            "{\"level\":\"ERROR\"}\nthread 'main' panicked at src/x.rs".to_string(),
        )];
        let r = Report::new(3, abilities, &h, windows.to_vec(), vec![], vec![], &log, 0);
        assert_eq!(r.calm.ok, 1);
        assert_eq!(r.per_fault[&Fault::KillAll].ops.unknown, 1);
        assert_eq!(r.per_fault[&Fault::Bridge].ops.fail, 1);
        assert_eq!(r.cycles(), 2);
        assert_eq!(r.panics.len(), 1);
        assert_eq!(r.error_lines, 1);
        assert!(!r.passed());
        assert!(r.to_string().contains("| Bridge | 1 |"));
    }
}
