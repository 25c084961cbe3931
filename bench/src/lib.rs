//! hivemind's benchmarks, kept out of the product binary: load generators for hivemind and its
//! peers (etcd, serf, nsd), each driven the same way, and the process harness they share. Every
//! percentile is `hivemind_common::stats::percentile` (nearest rank).
//!
//! Layout:
//! - [`kv`]: `hivemind-bench kv`, KV writes and linearizable reads against hivemind or etcd.
//! - [`gossip`]: `hivemind-bench gossip`, failure detection and join dissemination next to serf.
//! - [`dns`]: `hivemind-bench propagation` (a service change until every dns member answers it)
//!   and `dns-publishers` (synthetic hosts admitted through the real join path).
//! - [`failover`]: `hivemind-bench failover`, responsibility failover in a node of dns machines.
//! - [`nginx`]: `hivemind-bench nginx`, registration → first 200 through a real nginx.
//! - [`members`]: `hivemind-bench members`, what N members following the feed cost each CP
//!   member (followers, connections, RSS) and the feed latency.
//! - [`checks`]: `hivemind-bench checks`, a backend's death until DNS and nginx drop it, and
//!   what 100 services with 1 s checks cost their host.
//! - [`coord`]: `hivemind-bench coord`, watch delivery, lock hand-off and kept-alive leases
//!   against hivemind or etcd.
//! - [`lite`]: `hivemind-bench lite`, `hivemind-lite` beside `hivemind agent` (size, start
//!   time, RSS).
//! - [`edge`]: the cluster of the nginx and checks benchmarks (3 CP, dns, nginx, host).
//! - [`harness`]: starting and stopping the `hivemind` binary and peers as real processes.

pub mod checks;
pub mod coord;
pub mod dns;
pub mod edge;
pub mod failover;
pub mod gossip;
pub mod harness;
pub mod kv;
pub mod lite;
pub mod members;
pub mod nginx;

/// A duration flag (`15s`, `500ms`), as the product's flags parse it.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    hivemind_common::duration::parse(text)
}
