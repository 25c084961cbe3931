//! The `dns` role: for every keygroup it serves (`--keygroup`), makes its node a replica and
//! claims responsibility for it in its node. The one machine of the node that holds it
//! subscribes to every live host member of the keygroup's other replica nodes (each stream
//! opens with the host's current record); the node's other machines stream every record from
//! the holder (intra-node stream) and take over when the control plane released it (seed
//! events [1]/[2], DESIGN.md §5). Every machine keeps the newest record per host by seq, drops
//! a host the moment the feed says it failed or left, drops a tombstoned keygroup, and answers
//! DNS for all of it (UDP fast path and hickory-server, UDP and TCP on `--dns-port`).
//!
//! Layout:
//! - [`zone`]: names and answers, rebuilt whole on every change (sans IO).
//! - [`subscriptions`]: which streams to hold (sans IO).
//! - [`server`]: the hickory request handler, the UDP receive loops, binding the sockets;
//!   [`wire`]: the prebuilt UDP answers.
//! - `intake`: the record store both roles share (records by host, keygroup secrets, counters).
//! - `reconcile`: the reconcile loop, claims, subscriber tasks, the sibling snapshot copy.
//! - `api`: `GET /v1/roles/dns/records` and `/status`, the internal `snapshot` and `stream`
//!   routes, the OpenAPI document; `metrics`: the role's samples.
//! - this file: the `dns` and `trigger` roles and how they start.

mod api;
mod intake;
mod metrics;
mod reconcile;
pub mod server;
pub mod subscriptions;
pub mod trigger;
pub mod wire;
pub mod zone;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hivemind_common::role::{Role, RoleContext, Started};
use hivemind_common::roles::{self, RoleSpec};

pub use api::{openapi, DnsApi, DnsRecordsView, DnsStatusView, HeldRecordView};
use api::{records_route, snapshot_route, status_route, stream_route};
use intake::Shared;
pub use intake::{ClaimState, Position};
use metrics::DnsMetrics;
use reconcile::run;

/// How soon a reconcile that could not finish (no quorum, a claim pending) is retried. A
/// settled role reconciles on every event and every `--reread-every`.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Records queued for the intra-node streams; a stream that falls further behind ends and
/// its follower reconnects (and gets the whole keygroup again).
const RELAY_CAPACITY: usize = 4096;

pub struct DnsRole;

/// The `trigger` role: the same record intake as `dns` for the keygroups whose `triggers`
/// list its node, turned into change events instead of DNS answers (see [`trigger`]).
pub struct TriggerRole;

/// What the record intake feeds: DNS answers or trigger events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Dns,
    Trigger,
}

impl Mode {
    fn role(self) -> &'static str {
        match self {
            Mode::Dns => "dns",
            Mode::Trigger => "trigger",
        }
    }
}

impl Role for DnsRole {
    fn spec(&self) -> &'static RoleSpec {
        roles::spec("dns").expect("dns is a known role")
    }

    fn start(self: Box<Self>, ctx: RoleContext) -> Started {
        start(Mode::Dns, ctx)
    }
}

impl Role for TriggerRole {
    fn spec(&self) -> &'static RoleSpec {
        roles::spec("trigger").expect("trigger is a known role")
    }

    fn start(self: Box<Self>, ctx: RoleContext) -> Started {
        start(Mode::Trigger, ctx)
    }
}

fn start(mode: Mode, ctx: RoleContext) -> Started {
    let shared = Shared::new(mode, &ctx);
    let mut routes = Router::new()
        .route("/records", get(records_route))
        .route("/status", get(status_route));
    if mode == Mode::Trigger {
        routes = routes.route("/events", get(trigger::events_route));
    }
    let task = Box::pin(run(shared.clone(), ctx));
    Started {
        metrics: Some(Arc::new(DnsMetrics(shared.clone()))),
        routes: routes.with_state(shared.clone()),
        internal: Router::new()
            .route("/snapshot", get(snapshot_route))
            .route("/stream", get(stream_route))
            .route("/status", get(status_route))
            .with_state(shared.clone()),
        task,
    }
}

#[cfg(test)]
mod tests;
