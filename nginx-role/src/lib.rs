//! The `nginx` role (seed 002, DESIGN.md §6b): a consuming role like `dns` (the same
//! subscription machinery, `hivemind-subscriptions`, so a host that fails or leaves leaves the
//! upstreams on the same trigger that removes it from DNS). From the live hosts' services it
//! renders an nginx configuration and keeps a real nginx serving it.
//!
//! Apply is safe: render → candidate file → `nginx -t` → atomic rename → reload (SIGHUP) →
//! confirmed: nginx's loopback status listener answers the new render's hash ([`confirm`]). A
//! render equal to the running one is not applied; one that fails the template or `nginx -t`
//! is never applied (the running config keeps serving; counted, logged, reported to the
//! feed); a reload nginx does not carry out (a port in use) is reported in nginx's words with
//! the pid holding the port ([`port_holder`]) and tried again until it is served; a burst of
//! changes renders once ([`debounce`]).
//!
//! Layout: [`model`] (the services, sans IO), [`template`] (built-in or `--nginx-template`,
//! minijinja, sans IO), [`debounce`] (sans IO), [`confirm`] (whether nginx serves a render),
//! [`port_holder`] (who holds a port, from `/proc`), [`nginx`] (files, `nginx -t`, reloads, the
//! managed process), `apply` (the render loop), `api` (`GET /v1/roles/nginx/config`).

mod api;
mod apply;
pub mod confirm;
pub mod debounce;
pub mod model;
pub mod nginx;
pub mod port_holder;
pub mod template;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use hivemind_common::histogram::LatencyHistogram;
use hivemind_common::role::{HistogramSample, Role, RoleContext, RoleMetrics, Sample, Started};
use hivemind_common::role_specs::{self, RoleSpec};
use hivemind_subscriptions::{Acquire, Change, Consumer, Intake};

pub use api::{openapi, NginxApi, NginxConfigView};

pub struct NginxRole;

impl Role for NginxRole {
    fn spec(&self) -> &'static RoleSpec {
        role_specs::spec("nginx").expect("nginx is a known role")
    }

    fn start(self: Box<Self>, ctx: RoleContext) -> Started {
        let settings = ctx.settings.nginx.clone();
        let prefix = ctx.settings.data_dir.join("nginx");
        let nginx = nginx::Nginx {
            bin: settings.bin.clone(),
            conf: settings
                .conf
                .clone()
                .unwrap_or_else(|| prefix.join("hivemind.conf")),
            prefix,
            managed: settings.manage,
            pid_file: settings.pid_file.clone(),
            status: status_listener(),
        };
        let state = Arc::new(NginxState::default());
        // The render loop's readiness is its own: the intake's never clears it.
        let (health, shutdown) = (ctx.health.part("render"), ctx.shutdown.child_token());
        let domain = ctx.settings.domain.clone();
        let cp = ctx.cp.clone();
        let (intake, intake_task, internal) =
            hivemind_subscriptions::start("nginx", Acquire::Replica, state.clone(), ctx);
        let records: Arc<dyn hivemind_common::role::HostRecords> = intake.clone();
        let shared = RoleState {
            state,
            intake,
            status: nginx.status,
        };
        let routes = Router::new()
            .route("/config", get(api::config_route))
            .route("/records", get(api::records_route))
            .route("/status", get(api::status_route))
            .with_state(shared.clone());
        let metrics = Arc::new(NginxMetrics(shared.clone()));
        let apply = apply::Apply {
            shared,
            nginx,
            settings,
            domain,
            health,
            cp,
            last_reported: Mutex::new(None),
        };
        let task = Box::pin(async move {
            tokio::spawn(apply.run(shutdown));
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

/// A free loopback address for the status listener every render carries (chosen once per
/// start; a port taken from under it later fails a reload like any other port, reported).
fn status_listener() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| {
            // Loopback refuses even a free port: nginx will not bind this one either, and the
            // first reload reports that in nginx's words.
            let fallback = std::net::SocketAddr::from(([127, 0, 0, 1], 7780));
            tracing::warn!(error = %e, %fallback, "cannot find a free loopback port for nginx's status listener");
            fallback
        })
}

/// What the routes, metrics and the render loop share.
#[derive(Clone)]
pub(crate) struct RoleState {
    state: Arc<NginxState>,
    intake: Arc<Intake>,
    /// The status listener every render carries.
    status: std::net::SocketAddr,
}

/// The running render, the last reload and failure, and the counters.
#[derive(Default)]
pub(crate) struct NginxState {
    /// Woken by every change of the records or their inputs.
    changed: tokio::sync::Notify,
    running: Mutex<Option<api::Running>>,
    last_reload: Mutex<Option<api::ReloadView>>,
    last_failure: Mutex<Option<api::FailureView>>,
    /// The managed master's pid (0: none running).
    pid: Arc<AtomicU32>,
    renders: AtomicU64,
    unchanged: AtomicU64,
    reloads: AtomicU64,
    failures: AtomicU64,
    /// Reloads nginx did not carry out (its status listener never answered the new render).
    reload_failures: AtomicU64,
    restarts: Arc<AtomicU64>,
    reload_latency: LatencyHistogram,
}

impl Consumer for NginxState {
    /// Any change may move an upstream (a record, a host's liveness, a keygroup): render
    /// again once the burst is over.
    fn changed(&self, _: &Intake, _: Change<'_>) {
        self.changed.notify_one();
    }
}

struct NginxMetrics(RoleState);

impl RoleMetrics for NginxMetrics {
    fn samples(&self) -> Vec<Sample> {
        use hivemind_subscriptions::metrics::{sample, samples};
        let s = &self.0.state;
        let mut out = samples(&self.0.intake);
        out.extend([
            sample(
                "renders",
                "Renders that differed from the running config (each checked with nginx -t).",
                true,
                s.renders.load(Ordering::Relaxed),
            ),
            sample(
                "unchanged_renders",
                "Renders equal to the running config: nothing applied.",
                true,
                s.unchanged.load(Ordering::Relaxed),
            ),
            sample(
                "reloads",
                "Configs installed, nginx reloaded (SIGHUP) and the new one confirmed served.",
                true,
                s.reloads.load(Ordering::Relaxed),
            ),
            sample(
                "reload_failures",
                "Reloads nginx did not carry out: the render was installed and signalled, but \
                 nginx kept serving the old one (its error log says why, e.g. a port in use).",
                true,
                s.reload_failures.load(Ordering::Relaxed),
            ),
            sample(
                "render_failures",
                "Renders never applied: the template failed, nginx -t refused it, or the reload failed.",
                true,
                s.failures.load(Ordering::Relaxed),
            ),
            sample(
                "process_restarts",
                "Times the managed nginx exited and was started again.",
                true,
                s.restarts.load(Ordering::Relaxed),
            ),
        ]);
        out
    }

    fn histograms(&self) -> Vec<HistogramSample> {
        vec![HistogramSample {
            name: "reload_duration_seconds",
            help: "From a render that differs to nginx serving it: nginx -t, install, SIGHUP, \
                   until the status listener answers the new hash.",
            snapshot: self.0.state.reload_latency.snapshot(),
        }]
    }
}
