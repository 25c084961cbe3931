//! The control plane: hivemind's Raft-replicated registry (membership, node configs, KV, epoch,
//! event feed) on openraft 0.9 with sled storage, and its HTTP surface.
//!
//! Layout:
//! - [`registry`]: the state machine's data and deterministic rules (sans-IO).
//! - [`types`]: the openraft type configuration.
//! - [`store`]: the sled-backed Raft log store and state machine.
pub mod registry;
pub mod store;
pub mod types;
