//! The HTTP surface every member serves (routers merged in `crate::agent`).
//!
//! - [`member_api`]: `/v1/status`, `/v1/members`, `/v1/nodes`, `/v1/leave`.
//! - [`keygroups_api`]: `/v1/keygroups...` and `/v1/responsibilities`.
//! - [`acl_api`]: `/v1/acl/...`; [`acl`]: ACL enforcement on `/v1/*` (`need`, the verdict);
//!   [`acl_cache`]: this member's copy of the ACL table.
//! - [`backup_api`]: `/v1/backup/spaces` and `/v1/backup/snapshots`: the backup ledger.
//! - [`catalog`]: the Consul-compatible catalog (`/v1/catalog`, `/v1/health`, `/v1/agent/self`,
//!   `/v1/status/leader|peers`) over the host records a consuming role holds.
//! - [`dashboard`]: the page at `/`, its script, `GET /v1/nginx`.
//! - [`metrics`]: `GET /metrics` (Prometheus text) from the counters the member keeps;
//!   `metrics_cp`: a CP member's Raft part of it; `metric_families`: how both encode a family.
//! - [`openapi`]: `GET /v1/openapi.json`, derived from the handlers (utoipa).
//! - [`auth`]: the admin-token check on `/v1/*`; [`access_log`]: request logging.

pub mod access_log;
pub mod acl;
pub mod acl_api;
pub mod acl_cache;
pub mod auth;
pub mod backup_api;
pub mod catalog;
pub(crate) mod dashboard;
pub mod keygroups_api;
pub mod member_api;
mod metric_families;
pub mod metrics;
#[cfg(feature = "control-plane")]
mod metrics_cp;
pub mod openapi;
