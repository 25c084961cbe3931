//! What the workload did: every operation with its invoke and completion times and its outcome.
//!
//! Outcomes follow Jepsen: `Ok` (it happened, with this result), `Fail` (it surely did not take
//! effect: refused before it was sent, or a definite error), `Unknown` (timeout, reset, 503: it
//! may take effect at any time after it was invoked, or never).

use serde::{Deserialize, Serialize};

/// An operation on one key of the KV namespace. Written values are unique in a run, so a value
/// names the write that put it (CAS by modify index becomes CAS by value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Read,
    Write(String),
    /// Replace `expect` (read earlier by the same client) with the new value.
    Cas {
        expect: String,
        new: String,
    },
    Delete,
}

/// What an operation returned, when it completed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// A read saw this value (`None`: no such key).
    Read(Option<String>),
    /// A write, or a CAS that applied, or a delete (whether the key existed).
    Done,
    /// A CAS refused because the key held something else (`409 cas_failed`).
    CasRefused,
    /// A delete, and whether the key existed.
    Deleted(bool),
    /// Surely without effect.
    Fail,
    /// May or may not take effect.
    Unknown,
}

/// One operation of one client, with times in nanoseconds since the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub client: usize,
    pub key: String,
    pub op: Op,
    pub invoked_ns: u64,
    pub completed_ns: u64,
    pub outcome: Outcome,
}

impl Event {
    /// Whether the operation surely had no effect (dropped before checking).
    pub fn had_no_effect(&self) -> bool {
        self.outcome == Outcome::Fail || (self.op == Op::Read && self.outcome == Outcome::Unknown)
    }
}

/// Counts per outcome class, for reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
}

impl Tally {
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Fail => self.fail += 1,
            Outcome::Unknown => self.unknown += 1,
            _ => self.ok += 1,
        }
    }
}
