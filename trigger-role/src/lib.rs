//! The `trigger` role (FBase's trigger nodes): a member of a node listed in a keygroup's
//! `triggers` receives the keygroup's record changes without serving them. It takes records
//! through the subscription machinery every consuming role shares (`hivemind-subscriptions`:
//! one machine of the node holds the keygroup and subscribes to the hosts, the others stream
//! from it) and turns every change into an event:
//! - `GET /v1/roles/trigger/events?after=N&wait=30s`: a long-poll of the changes (on every
//!   machine of the node);
//! - `--trigger-webhook URL`: each change POSTed as JSON, in order, by the machine responsible
//!   for the keygroup, retried with backoff.
//!
//! Layout: [`changes`] numbers and keeps the last changes (sans IO); `api` the routes and the
//! OpenAPI document; `webhook` the delivery; this file the role, its consumer and its metrics.

mod api;
pub mod changes;
mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use hivemind_common::records::HostRecord;
use hivemind_common::role::{Role, RoleContext, RoleMetrics, Sample, Started};
use hivemind_common::role_specs::{self, RoleSpec};
use hivemind_subscriptions::{Acquire, Change, Consumer, Intake};

pub use api::{openapi, ChangesPage, TriggerApi};
use changes::ChangeLog;

/// The most changes one page (or one webhook turn) carries.
const MAX_PAGE: usize = 1000;

pub struct TriggerRole;

impl Role for TriggerRole {
    fn spec(&self) -> &'static RoleSpec {
        role_specs::spec("trigger").expect("trigger is a known role")
    }

    fn start(self: Box<Self>, ctx: RoleContext) -> Started {
        let trigger = Arc::new(Trigger::new(ctx.settings.tls.as_ref()));
        let webhook = ctx.settings.trigger_webhook.clone();
        let shutdown = ctx.shutdown.child_token();
        let me = ctx.me.borrow().id;
        let (intake, intake_task, internal) =
            hivemind_subscriptions::start("trigger", Acquire::Trigger, trigger.clone(), ctx);
        let records: Arc<dyn hivemind_common::role::HostRecords> = intake.clone();
        let state = RoleState {
            trigger,
            intake,
            me,
        };
        let routes = Router::new()
            .route("/records", get(api::records_route))
            .route("/status", get(api::status_route))
            .route("/events", get(api::events_route))
            .with_state(state.clone());
        let metrics = Arc::new(TriggerMetrics(state.clone()));
        let task = Box::pin(async move {
            if let Some(url) = webhook {
                tokio::spawn(webhook::run(state, url, shutdown));
            }
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

/// What the routes and the webhook share: the change log and the records held.
#[derive(Clone)]
pub(crate) struct RoleState {
    trigger: Arc<Trigger>,
    intake: Arc<Intake>,
    /// This member: the live trigger member with the lowest id delivers reports.
    me: hivemind_common::MemberId,
}

/// The change log, its watch, and the webhook's client and counters.
pub(crate) struct Trigger {
    changes: Mutex<ChangeLog>,
    /// Carries the last change's index.
    change_tx: tokio::sync::watch::Sender<u64>,
    http: reqwest::Client,
    webhook_delivered: AtomicU64,
    webhook_failures: AtomicU64,
    webhook_dropped: AtomicU64,
}

impl Trigger {
    /// A trigger whose webhook client trusts the cluster CA when the member runs TLS.
    fn new(tls: Option<&hivemind_common::tls::ClientTls>) -> Self {
        Self {
            changes: Mutex::default(),
            change_tx: tokio::sync::watch::channel(0).0,
            http: hivemind_tls::http_client(tls)
                .build()
                .expect("an HTTP client builds"),
            webhook_delivered: AtomicU64::new(0),
            webhook_failures: AtomicU64::new(0),
            webhook_dropped: AtomicU64::new(0),
        }
    }
}

impl Trigger {
    /// Logs `records` as changes of `kind` for the events and the webhook.
    fn log(&self, kind: &'static str, records: &[HostRecord]) {
        let mut log = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        for record in records {
            log.push(changes::Change::of(kind, record));
        }
        self.change_tx.send_replace(log.last());
    }
}

impl Consumer for Trigger {
    fn changed(&self, _: &Intake, change: Change<'_>) {
        match change {
            Change::Updated(record) => self.log("updated", std::slice::from_ref(record)),
            Change::Removed(records) => self.log("removed", records),
            // Names and TTLs are not part of a change.
            Change::Inputs => {}
        }
    }

    fn reported(
        &self,
        _: &Intake,
        index: u64,
        member: &str,
        report: &hivemind_common::role::RoleReport,
    ) {
        let mut log = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        log.push(changes::Change::report(index, member, report));
        self.change_tx.send_replace(log.last());
    }
}

/// The intake's samples and the webhook's counters.
struct TriggerMetrics(RoleState);

impl RoleMetrics for TriggerMetrics {
    fn samples(&self) -> Vec<Sample> {
        use hivemind_subscriptions::metrics::{sample, samples};
        let t = &self.0.trigger;
        let mut out = samples(&self.0.intake);
        out.extend([
            sample(
                "webhook_delivered",
                "Trigger changes POSTed to --trigger-webhook.",
                true,
                t.webhook_delivered.load(Ordering::Relaxed),
            ),
            sample(
                "webhook_failures",
                "Failed webhook POSTs (each retried with backoff).",
                true,
                t.webhook_failures.load(Ordering::Relaxed),
            ),
            sample(
                "webhook_dropped",
                "Trigger changes the webhook fell too far behind to deliver.",
                true,
                t.webhook_dropped.load(Ordering::Relaxed),
            ),
        ]);
        out
    }
}
