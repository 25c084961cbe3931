//! The control plane: hivemind's Raft-replicated registry (membership, node configs, KV, epoch,
//! event feed) on openraft 0.9 with sled storage, and its HTTP surface.
//!
//! Layout:
//! - [`registry`]: the state machine's data and deterministic rules (sans-IO).
pub mod registry;
