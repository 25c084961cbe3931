//! Per-key linearizability of KV histories against a register with compare-and-set and delete
//! (sans-IO).
//!
//! The search is Wing–Gong's with Lowe's memoization, as in porcupine: the history becomes a
//! list of call and return entries ordered by time; the search linearizes pending calls one at
//! a time (removing an operation's call and return from the list), backtracks when it meets the
//! return of an operation it has not linearized, and remembers every (set of linearized
//! operations, register state) it has seen so that no configuration is explored twice. An
//! operation whose outcome is unknown has no return entry: it may be linearized anywhere after
//! its call, or never. Operations that surely had no effect are dropped first.
//!
//! Ties: an operation that completes at the instant another is invoked is taken as concurrent
//! with it (calls sort before returns), which never reports a violation that is not one.

use std::collections::HashSet;

use crate::history::{Event, Op, Outcome};

/// The register: the key's value, `None` while absent.
type State = Option<String>;

/// The register's rule: the state after `op` with `outcome`, or `None` if that outcome is
/// impossible in `state`. An unknown outcome is taken as "it took effect" here; "it never did"
/// is the search leaving it out.
fn step(state: &State, op: &Op, outcome: &Outcome) -> Option<State> {
    match (op, outcome) {
        (Op::Read, Outcome::Read(seen)) => (seen == state).then(|| state.clone()),
        (Op::Write(v), Outcome::Done | Outcome::Unknown) => Some(Some(v.clone())),
        (Op::Cas { expect, new }, Outcome::Done | Outcome::Unknown) => {
            (state.as_ref() == Some(expect)).then(|| Some(new.clone()))
        }
        (Op::Cas { expect, .. }, Outcome::CasRefused) => {
            (state.as_ref() != Some(expect)).then(|| state.clone())
        }
        (Op::Delete, Outcome::Deleted(existed)) => (*existed == state.is_some()).then_some(None),
        (Op::Delete, Outcome::Unknown | Outcome::Done) => Some(None),
        _ => None,
    }
}

/// A history of one key that no order explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// The operation whose completion no linearization of the operations before it reached.
    pub stuck_at: Event,
    /// A sub-history that is not linearizable either, shrunk by relaxations only (see
    /// `minimize`), so it failing proves the whole history fails.
    pub minimal: Vec<Event>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "key {:?} is not linearizable: no order of its operations reaches the completion of {}",
            self.key,
            describe(&self.stuck_at)
        )?;
        writeln!(
            f,
            "a sub-history that shows it ({} operations):",
            self.minimal.len()
        )?;
        for e in &self.minimal {
            writeln!(f, "  {}", describe(e))?;
        }
        Ok(())
    }
}

fn describe(e: &Event) -> String {
    format!(
        "client {} {:?} -> {:?} [{:.3} ms .. {:.3} ms]",
        e.client,
        e.op,
        e.outcome,
        e.invoked_ns as f64 / 1e6,
        e.completed_ns as f64 / 1e6
    )
}

/// Checks every key of `history` (keys start absent); the violations found, one per key.
pub fn check(history: &[Event]) -> Vec<Violation> {
    let mut keys: Vec<&str> = history.iter().map(|e| e.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let ops: Vec<Event> = history
                .iter()
                .filter(|e| e.key == key && !e.had_no_effect())
                .cloned()
                .collect();
            let stuck = match search(&ops, usize::MAX) {
                Err(Found::Stuck(op)) => op,
                _ => return None,
            };
            Some(Violation {
                key: key.to_string(),
                stuck_at: ops[stuck].clone(),
                minimal: minimize(ops),
            })
        })
        .collect()
}

/// Whether one key's operations are linearizable.
pub fn linearizable(ops: &[Event]) -> bool {
    search(ops, usize::MAX).is_ok()
}

/// Whether a shrunk history surely still fails (a search that ran out of budget does not say).
fn still_fails(ops: &[Event]) -> bool {
    matches!(search(ops, SHRINK_BUDGET), Err(Found::Stuck(_)))
}

/// Configurations one shrinking step may explore (a history with many operations of unknown
/// outcome can take exponentially many; the step is then not taken).
const SHRINK_BUDGET: usize = 20_000;

/// Why a search did not find a linearization.
enum Found {
    /// No linearization: the operation whose return the deepest attempt could not pass.
    Stuck(usize),
    /// The budget ran out first.
    OutOfBudget,
}

/// Shrinks a failing history by relaxations only: each step turns a history into one that is
/// linearizable whenever the original is, and is kept only if the result still fails. So the
/// result failing proves the whole history fails. The steps: drop an observer (a read, a
/// refused CAS: a linearization without it is still one), and make a state change optional
/// (its outcome unknown: a linearization that had it still is one). Operations of unknown
/// outcome stay: one of them may be what explains a value a read saw.
fn minimize(mut ops: Vec<Event>) -> Vec<Event> {
    if ops.len() > MINIMIZE_UP_TO {
        return ops;
    }
    let mut i = ops.len();
    while i > 0 {
        i -= 1;
        let observer = ops[i].op == Op::Read || ops[i].outcome == Outcome::CasRefused;
        if observer {
            let removed = ops.remove(i);
            if !still_fails(&ops) {
                ops.insert(i, removed);
            }
        } else if ops[i].outcome != Outcome::Unknown {
            let known = std::mem::replace(&mut ops[i].outcome, Outcome::Unknown);
            if !still_fails(&ops) {
                ops[i].outcome = known;
            }
        }
    }
    ops
}

/// Larger histories are reported whole (each shrinking step is a full search).
const MINIMIZE_UP_TO: usize = 3000;

/// An operation's call or return, in time order.
#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
}

/// The call and return entries of a history as a doubly linked list (index `entries.len()` is
/// the head sentinel and the end), from which linearized operations are lifted and put back.
struct Entries {
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Each operation's return entry; `None` for an unknown outcome.
    return_of: Vec<Option<usize>>,
}

impl Entries {
    /// Calls sort before returns at the same instant (see the module doc).
    fn new(ops: &[Event]) -> Self {
        let mut timed: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, e) in ops.iter().enumerate() {
            timed.push((e.invoked_ns, false, i));
            if e.outcome != Outcome::Unknown {
                timed.push((e.completed_ns, true, i));
            }
        }
        timed.sort_unstable();
        let entries: Vec<Entry> = timed
            .into_iter()
            .map(|(_, is_return, op)| Entry {
                op,
                is_call: !is_return,
            })
            .collect();
        let n = entries.len();
        let mut return_of = vec![None; ops.len()];
        for (i, e) in entries.iter().enumerate() {
            if !e.is_call {
                return_of[e.op] = Some(i);
            }
        }
        Self {
            next: (0..=n).map(|i| if i == n { 0 } else { i + 1 }).collect(),
            prev: (0..=n).map(|i| if i == 0 { n } else { i - 1 }).collect(),
            entries,
            return_of,
        }
    }

    fn head(&self) -> usize {
        self.entries.len()
    }

    fn first(&self) -> usize {
        self.next[self.head()]
    }

    fn unlink(&mut self, i: usize) {
        let (p, q) = (self.prev[i], self.next[i]);
        self.next[p] = q;
        self.prev[q] = p;
    }

    fn relink(&mut self, i: usize) {
        let (p, q) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        self.prev[q] = i;
    }

    /// Takes the call at `call` and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(r) = self.return_of[self.entries[call].op] {
            self.unlink(r);
        }
    }

    /// Puts back what [`Entries::lift`] took out (in the reverse order).
    fn unlift(&mut self, call: usize) {
        if let Some(r) = self.return_of[self.entries[call].op] {
            self.relink(r);
        }
        self.relink(call);
    }
}

/// The search, exploring at most `budget` configurations.
fn search(ops: &[Event], budget: usize) -> Result<(), Found> {
    let mut list = Entries::new(ops);
    let mut returns_left = list.return_of.iter().filter(|r| r.is_some()).count();
    let mut state: State = None;
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut deepest = (0usize, None::<usize>);
    let mut cur = list.first();
    while returns_left > 0 {
        // (`cur` cannot reach the end while returns are left: every return still listed
        // follows the last call linearized; treated as a return all the same.)
        let entry = (cur != list.head()).then(|| list.entries[cur]);
        if let Some(entry) = entry.filter(|e| e.is_call) {
            let e = &ops[entry.op];
            if let Some(after) = step(&state, &e.op, &e.outcome) {
                let mut bits = linearized.clone();
                bits[entry.op / 64] |= 1 << (entry.op % 64);
                if seen.len() >= budget {
                    return Err(Found::OutOfBudget);
                }
                if seen.insert((bits.clone(), after.clone())) {
                    stack.push((cur, std::mem::replace(&mut state, after)));
                    linearized = bits;
                    list.lift(cur);
                    returns_left -= usize::from(list.return_of[entry.op].is_some());
                    cur = list.first();
                    continue;
                }
            }
            cur = list.next[cur];
            continue;
        }
        // An operation completed before anything else could be linearized: back up.
        if let Some(entry) = entry {
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), Some(entry.op));
            }
        }
        let Some((call, before)) = stack.pop() else {
            return Err(Found::Stuck(deepest.1.unwrap_or(0)));
        };
        let op = list.entries[call].op;
        list.unlift(call);
        returns_left += usize::from(list.return_of[op].is_some());
        linearized[op / 64] &= !(1 << (op % 64));
        state = before;
        cur = list.next[call];
    }
    Ok(())
}

#[cfg(test)]
mod tests;
