//! Fault testing for hivemind: the histories a workload records, the linearizability checker
//! that judges them, and (in the IO modules) the harness that runs real `hivemind` processes
//! under faults.
//!
//! - [`history`]: operations with invoke/complete times and outcomes (ok / fail / unknown).
//! - [`checker`]: per-key linearizability against a register with CAS and delete (sans-IO).

pub mod checker;
pub mod history;
