//! The control plane: hivemind's Raft-replicated registry (membership, node configs, KV, epoch,
//! event feed) on openraft 0.9 with fjall storage, and its HTTP surface.
//!
//! Layout:
//! - [`registry`]: the state machine's data and deterministic rules (sans-IO).
//! - [`bootstrap`]: who initializes the cluster (sans-IO decision).
//! - [`types`]: the openraft type configuration.
//! - [`store`]: the fjall-backed Raft log store and state machine.
//! - [`network`]: internal calls, client side (bincode over HTTP or over a [`stream`]);
//!   `raft_network`: Raft RPC on it (AppendEntries over a stream).
//! - [`stream`]: request/answer frames on an upgraded HTTP connection, both ends.
//!
//! The wire modules (`ops`, `answers`, `network`, `stream`) depend on plain types only; the
//! running [`ControlPlane`] and its routes (`http`) depend on them, never the other way.
//! - [`control`]: [`ControlPlane`], one CP member: writes via the leader, read barriers,
//!   bounded waits, health, voter changes, the bootstrap loop.
//! - [`read_rounds`]: which quorum round answers which linearizable read (sans-IO).
//! - [`pre_vote`]: who may campaign and when a member knows it is cut off (sans-IO);
//!   [`control::elections`] drives it (openraft's own election timer is off).
//! - [`answers`]: what the operations answer (applied commands, voter changes, status views).
//! - [`ops`]: every internal operation, declared once: path, request, answer.
//! - [`requests`]: what members ask of the control plane (the CP decides; sans-IO steps).
//! - [`access`]: the ACL decision over the table, a token and what a request needs (sans IO;
//!   members' `/v1` routes and delegated member requests alike).
//! - [`serve`]: one typed path per operation a member asks, the same in process and over the
//!   wire, with the identity check in it.
//! - [`authority`]: who may call which internal route and ask for whom (certificate
//!   identities; sans-IO).
//! - [`raft_errors`]: openraft's transient errors, counted instead of logged at ERROR.
//! - [`http`]: public JSON routes and internal bincode routes.
//!
//! Feature `raft` (on by default): the running control plane (`control`, `store`, `serve`,
//! `pre_vote`, `raft_network`, the CP's routes in `http`), with openraft and fjall. Without it
//! the crate is what a member outside the control plane uses: the registry and its rules, the
//! wire operations and views, the internal client (`hivemind-lite`).
//!
//! Invariant: the registry is changed only by applying committed log entries; everything a
//! client is told was committed, was committed by a quorum and flushed to its log first.

pub mod access;
pub mod authority;
pub mod bootstrap;
#[cfg(feature = "raft")]
pub mod control;
pub mod cp_types;
pub mod error;
pub mod feed_pages;
pub mod http;
pub mod leases;
pub mod member_requests;
pub mod network;
pub mod ops;
#[cfg(feature = "raft")]
pub mod pre_vote;
pub mod raft_errors;
#[cfg(feature = "raft")]
pub mod raft_network;
pub mod read_rounds;
pub mod registry;
#[cfg(feature = "raft")]
pub mod serve;
#[cfg(feature = "raft")]
pub mod store;
pub mod stream;
pub mod types;

#[cfg(feature = "raft")]
pub use control::{ControlPlane, CpConfig};
pub use cp_types::{Applied, CpStatus, Health, VoterChange};
pub use error::CpError;
