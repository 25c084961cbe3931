//! The member runtime: one `hivemind agent` process. It owns the persistent identity, SWIM
//! gossip, joining through any member, leave and failure reports, the event-feed follower and
//! the membership view it builds, the role runtime, and the admin HTTP server.
//!
//! Layout:
//! - [`identity`]: `<data-dir>/member`: id, generation, epoch, the saved view, role stores.
//! - [`access_log`]: request logging (tower-http), writes at INFO, the rest at DEBUG.
//! - [`address`]: the address watchdog: detect, decide (sans IO), renew and announce.
//! - [`config`]: [`AgentConfig`] (what the agent was told) and [`AgentError`].
//! - [`state`]: `Agent`, the state the handlers and tasks share, and its counters.
//! - [`agent`]: [`run`]: start, serve, stop.
//! - [`auth`]: the admin-token check on `/v1/*`.
//! - [`backup_api`]: `/v1/backup/spaces` and `/v1/backup/snapshots`: the backup ledger on
//!   every member.
//! - [`catalog`]: the Consul-compatible catalog (`/v1/catalog`, `/v1/health`, `/v1/agent/self`,
//!   `/v1/status/leader|peers`) over the host records a consuming role holds.
//! - [`cp_access`]: how a member reaches the control plane (in process or as a client).
//! - [`gossip`]: SWIM on foca: identity, codec, sealing, profiles, the UDP runtime.
//! - [`join`]: the join request and the joiner's loop.
//! - [`view`]: the membership view and how feed pages apply to it (sans IO).
//! - [`feed`]: the follower that keeps the view current and re-bootstraps on `gone`.
//! - [`keygroups_api`]: `/v1/keygroups...` and `/v1/responsibilities` on every member.
//! - [`metrics`]: `GET /metrics` (Prometheus text) from the counters the member keeps.
//! - [`openapi`]: `GET /v1/openapi.json`, derived from the handlers (utoipa).
//! - [`role_runtime`]: loads `--roles`, hands each its context, feeds it events.

pub mod access_log;
pub mod acl;
pub mod acl_api;
pub mod acl_cache;
pub mod address;
pub mod admission;
pub mod agent;
pub mod auth;
pub mod backup_api;
pub mod catalog;
pub mod config;
pub mod cp_access;
pub mod cp_choice;
pub(crate) mod dashboard;
pub mod feed;
pub mod gossip;
pub mod identity;
pub mod join;
pub mod keygroups_api;
pub mod member_api;
pub mod metrics;
pub mod openapi;
pub mod role_runtime;
pub mod state;
pub mod view;

pub use agent::run;
pub use config::{AgentConfig, AgentError};
