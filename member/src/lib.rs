//! The member runtime: one `hivemind agent` process. Today it owns the persistent identity,
//! the admin HTTP server (auth, `/v1/status`, the CP routes) and self-admission of
//! control-plane members into the registry. SWIM gossip, joins of non-CP members, the event
//! feed consumer and the role runtime arrive with the members issue.
//!
//! Layout:
//! - [`identity`]: `<data-dir>/member`: id and generation, bumped at every start.
//! - [`agent`]: [`AgentConfig`] and [`run`]: start, serve, stop.
//! - [`auth`]: the admin-token check on `/v1/*`.

pub mod agent;
pub mod auth;
pub mod cp_access;
pub mod gossip;
pub mod identity;
pub mod join;

pub use agent::{run, AgentConfig, AgentError};
