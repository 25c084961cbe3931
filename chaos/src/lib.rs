//! Fault testing for hivemind: real `hivemind agent` processes under kill -9, pauses, network
//! partitions and power loss, a workload of concurrent clients, and a linearizability checker
//! that judges what they saw.
//!
//! Sans-IO (unit- and property-tested):
//! - [`history`]: operations with invoke/complete times and outcomes (ok / fail / unknown).
//! - [`checker`]: per-key linearizability against a register with CAS and delete.
//! - [`nemesis`]: the fault repertoire, the seeded schedule, partition shapes as cut links.
//! - [`report`]: per-fault tallies and unavailability, end-state findings.
//! - [`membership`]: acknowledged joins and leaves present, one holder per responsibility.
//! - [`locks`]: the lock workload's checks (mutual exclusion by fence, no early lease expiry);
//!   its clients are the IO part of the same module.
//!
//! IO:
//! - [`net`]: a network namespace per member on a bridge (root), nftables cuts; or loopback.
//! - [`powerfs`]: a FUSE filesystem that drops unsynced data on power loss.
//! - [`cluster`]: the member processes, killed, paused, power-failed by PID.
//! - [`workload`]: the clients.
//! - [`churn`]: synthetic role members joining, leaving and claiming keygroups.
//! - [`pki`]: TLS for a run: every member's and synthetic member's own certificate.
//! - [`run`]: one run, start to report.
//!
//! The short form runs in `cargo test` (`tests/chaos.rs` in the root package); the long form is
//! the `hivemind-chaos` binary (see RELIABILITY.md).

pub mod checker;
pub mod churn;
pub mod cluster;
pub mod history;
pub mod locks;
pub mod membership;
pub mod nemesis;
pub mod net;
pub mod pki;
pub mod powerfs;
pub mod report;
pub mod run;
pub mod workload;
