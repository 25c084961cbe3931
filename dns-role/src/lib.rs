//! The `dns` role: for every keygroup it serves (`--keygroup`), makes its node a replica and
//! takes the keygroup's host records through the subscription machinery every consuming role
//! shares (`hivemind-subscriptions`, DESIGN.md §5): one machine of the node holds the keygroup
//! and subscribes to its hosts, the others stream from it. It answers DNS for every live host
//! (UDP fast path and hickory-server, UDP and TCP on `--dns-port`) from a zone rebuilt on every
//! change the intake hands it.
//!
//! Layout:
//! - [`zone`]: names and answers, rebuilt whole on every change (sans IO).
//! - [`server`]: the hickory request handler, the UDP receive loops, binding the sockets;
//!   [`wire`]: the prebuilt UDP answers.
//! - `api`: `GET /v1/roles/dns/records` and `/status`, the OpenAPI document; `metrics`: the
//!   role's samples.
//! - this file: the role, and [`DnsZone`], the consumer that keeps the zone.

mod api;
mod metrics;
pub mod server;
pub mod wire;
pub mod zone;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::routing::get;
use axum::Router;
use hickory_proto::rr::Name;
use hivemind_common::records::HostRecord;
use hivemind_common::role::{Membership, Role, RoleContext, Started};
use hivemind_common::role_specs::{self, RoleSpec};
use hivemind_subscriptions::{Acquire, Change, Consumer, Intake};

pub use api::{openapi, DnsApi, DnsRecordsView};
use metrics::DnsMetrics;
use zone::Zone;

pub struct DnsRole;

impl Role for DnsRole {
    fn spec(&self) -> &'static RoleSpec {
        role_specs::spec("dns").expect("dns is a known role")
    }

    fn start(self: Box<Self>, ctx: RoleContext) -> Started {
        let zone = Arc::new(DnsZone::new(&ctx.settings.domain));
        let addr = SocketAddr::new(ctx.settings.bind, ctx.settings.dns_port);
        // The server's readiness is its own: the intake's never clears it.
        let (health, shutdown) = (ctx.health.part("server"), ctx.shutdown.child_token());
        let (intake, intake_task, internal) =
            hivemind_subscriptions::start("dns", Acquire::Replica, zone.clone(), ctx);
        let records: Arc<dyn hivemind_common::role::HostRecords> = intake.clone();
        let state = RoleState { zone, intake };
        let routes = Router::new()
            .route("/records", get(api::records_route))
            .route("/status", get(api::status_route))
            .with_state(state.clone());
        let metrics = Arc::new(DnsMetrics(state.clone()));
        let task = Box::pin(async move {
            tokio::spawn(server::serve_dns(state.zone, addr, health, shutdown));
            intake_task.await
        });
        Started {
            consul_agent: None,
            routes,
            metrics: Some(metrics),
            internal,
            task,
            records: Some(records),
        }
    }
}

/// What the routes and metrics share: the zone served and the records it was built from.
#[derive(Clone)]
pub(crate) struct RoleState {
    zone: Arc<DnsZone>,
    intake: Arc<Intake>,
}

/// The zone this member answers from, its prebuilt UDP answers, and the query counts.
pub struct DnsZone {
    origin: Name,
    pub(crate) zone: Arc<RwLock<Arc<Zone>>>,
    /// The zone's finished UDP answers, swapped together with it.
    pub(crate) wire: RwLock<Arc<wire::WireAnswers>>,
    serial: AtomicU64,
    /// Bumped with every swap (under the zone's lock): a UDP loop's copy is current while
    /// its version matches.
    version: AtomicU64,
    pub(crate) queries: Arc<server::QueryCounts>,
}

/// A consistent copy of the zone and its finished answers, for one UDP loop.
pub(crate) struct ZoneCopy {
    pub(crate) version: u64,
    pub(crate) zone: Arc<Zone>,
    pub(crate) answers: Arc<wire::WireAnswers>,
}

impl DnsZone {
    fn new(domain: &str) -> Self {
        let origin = Name::from_ascii(domain).unwrap_or_else(|_| Name::root());
        let empty = Zone::build(&origin, &[], &BTreeMap::new(), &Membership::default(), 0);
        Self {
            origin,
            zone: Arc::new(RwLock::new(Arc::new(empty))),
            wire: RwLock::default(),
            serial: AtomicU64::new(0),
            version: AtomicU64::new(0),
            queries: Arc::default(),
        }
    }

    /// Rebuilds the zone from the records held and the membership and swaps it in.
    fn rebuild(&self, intake: &Intake) {
        let book = intake.book();
        let ttls: BTreeMap<String, u32> = intake
            .keygroups()
            .into_values()
            .map(|k| (k.name, k.ttl_secs))
            .collect();
        let membership = intake.membership();
        let records: Vec<&HostRecord> = book.records().collect();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) as u32 + 1;
        let zone = Zone::build(&self.origin, &records, &ttls, &membership, serial);
        let answers = wire::WireAnswers::build(&zone);
        // Swap both under the zone's lock, so a UDP answer never mixes two versions.
        let mut current = self.zone.write().unwrap_or_else(|p| p.into_inner());
        *self.wire.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(answers);
        *current = Arc::new(zone);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The version of the zone now (see [`DnsZone::current`]).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The zone and its answers as one consistent copy: both read under the zone's lock,
    /// which every swap holds.
    pub(crate) fn current(&self) -> ZoneCopy {
        let zone = self.zone.read().unwrap_or_else(|p| p.into_inner());
        ZoneCopy {
            version: self.version.load(Ordering::Acquire),
            zone: zone.clone(),
            answers: self.wire.read().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

impl Consumer for DnsZone {
    /// Every change, of the records or of the names and TTLs they are answered with, makes a
    /// new zone.
    fn changed(&self, intake: &Intake, _: Change<'_>) {
        self.rebuild(intake);
    }
}
