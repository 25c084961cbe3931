//! The member runtime: one `hivemind agent` process. It owns the persistent identity, SWIM
//! gossip, joining through any member, leave and failure reports, the event-feed follower and
//! the membership view it builds, the role runtime, and the admin HTTP server.
//!
//! Layout, a folder per concern:
//! - [`identity`]: `<data-dir>/member`: id, generation, epoch, the saved view, role stores.
//! - [`address`]: the address watchdog: detect, decide (sans IO), renew and announce.
//! - [`config`]: [`AgentConfig`] (what the agent was told) and [`AgentError`].
//! - [`state`]: `Agent`, the state the handlers and tasks share; each piece that changes has
//!   one owner type: [`incarnation`] (generation, address, admission), [`membership`] (the
//!   view, caught up, the feed's counters), `http::acl_cache` (the ACL table).
//! - [`agent`]: [`run`]: start, serve, stop.
//! - [`view`]: the membership view and how feed pages apply to it (sans IO).
//! - [`role_runtime`]: loads `--roles`, hands each its context, feeds it events.
//! - [`gossip`]: SWIM on foca: identity, codec, sealing, profiles, the UDP runtime.
//! - [`cp`]: reaching the control plane: access (in process or as a client), which CP member,
//!   the join request and loop, admission and leave, the event-feed follower.
//! - [`http`]: the HTTP surface every member serves: its own routes, keygroups, ACLs and their
//!   enforcement, the backup ledger, the Consul-compatible catalog, the dashboard, metrics,
//!   the OpenAPI document, the admin-token check and the access log.

pub mod address;
pub mod agent;
pub mod config;
pub mod cp;
pub mod gossip;
pub mod http;
pub mod identity;
pub mod incarnation;
pub mod membership;
pub mod role_runtime;
pub mod state;
pub mod view;

pub use agent::run;
pub use config::{AgentConfig, AgentError};
