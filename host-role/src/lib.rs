//! The `host` role: publishes this machine's record (name, addresses, services and their
//! health) into each of its keygroups with a seq that only grows, runs its services' health
//! checks (DESIGN.md §6g), and serves subscription streams to the members responsible for those
//! keygroups: a stream opens with the current record and then carries every update at once,
//! each sealed with the keygroup's secret.
//!
//! Layout:
//! - [`record`]: the record's change rules (sans IO).
//! - [`registration`]: services and checks as registered, parsed and validated (sans IO).
//! - [`health`]: one check's status over time: flap damping, TTLs, reaping (sans IO).
//! - [`services`]: the registered services and their checks' states (sans IO).
//! - [`probe`]: runs the HTTP and TCP checks.
//! - [`api`]: `GET/PUT /v1/roles/host/services`, `GET /v1/roles/host/record` and the internal
//!   stream `GET /internal/v1/roles/host/subscribe?keygroup=K`.
//! - [`agent_api`]: Consul's agent API (`/v1/agent/service/...`, `/v1/agent/check/...`).
//! - [`HostRole`]: joins the keygroups, keeps the record current, and runs the checks' verdicts,
//!   TTL expiry and reaping in its task.

pub mod agent_api;
pub mod api;
pub mod health;
pub mod probe;
pub mod record;
pub mod registration;
pub mod services;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use hivemind_common::records::Health;
use hivemind_common::role::{
    Me, Role, RoleContext, RoleEvent, RoleMetrics, RoleStore, Sample, Started,
};
use hivemind_common::role_specs::{self, RoleSpec};
use tokio::sync::{mpsc, watch, Notify};

use probe::{Prober, Probes, Verdict};
use record::Published;
use registration::ServiceDef;
use services::{ReportError, Services};

const SEQ_KEY: &[u8] = b"seq";
/// The registered services, as [`ServiceDef::to_json`] writes them.
const SERVICES_KEY: &[u8] = b"services";
/// Every check's last status, by check id (JSON), so a restart starts from it.
const CHECKS_KEY: &[u8] = b"checks";
/// How soon a keygroup join that failed is retried. Once joined, configs (secrets) are
/// re-read on every keygroup event and every `--reread-every` (DESIGN.md §5 event [5], [6]).
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// How often TTL checks are expired and services critical too long reaped.
const TICK: Duration = Duration::from_millis(250);

pub struct HostRole;

struct RoleState {
    /// This host's member name (Consul's `Node`).
    node: String,
    keygroups: Vec<String>,
    store: Arc<dyn RoleStore>,
    /// The last published record; subscribers watch it.
    published: watch::Sender<Published>,
    /// Serialises changes so that seqs are persisted in order.
    change: Mutex<()>,
    /// Keygroup name -> its config version and secret, once this node is a replica.
    secrets: RwLock<BTreeMap<String, (u64, Vec<u8>)>>,
    /// The registered services and their checks' states. Lock order: `change`, then this.
    services: Mutex<Services>,
    /// Told when the registered services change (the probes follow).
    registered: Notify,
    prober: Arc<Prober>,
    status_changes: AtomicU64,
    reaped: AtomicU64,
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("{0}")]
    Invalid(String),
    #[error("no service {0:?} on this host")]
    Unknown(String),
    #[error("the services could not be persisted: {0}")]
    Store(String),
}

impl RoleState {
    /// Publishes the next record if `next` changes something; the seq is persisted before any
    /// subscriber can see it, so a restart never reuses one.
    fn publish(&self, next: impl FnOnce(&Published) -> Option<Published>) -> Result<(), String> {
        let _guard = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = next(&self.published.borrow()) else {
            return Ok(());
        };
        self.store
            .put(SEQ_KEY, &record.seq.to_be_bytes())
            .map_err(|e| e.to_string())?;
        tracing::info!(seq = record.seq, addrs = ?record.addrs, services = record.services.len(), "host record published");
        self.published.send_replace(record);
        Ok(())
    }

    fn services(&self) -> MutexGuard<'_, Services> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the services as they are now, if that changes the record.
    fn republish(&self) {
        let result = self.publish(|r| r.with_services(self.services().wire()));
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot persist the host record's seq");
        }
    }

    /// Registers what `change` makes of the services: persisted first, then in force and
    /// published; the probes follow.
    fn register(
        &self,
        change: impl FnOnce(&Services) -> Result<Vec<ServiceDef>, RegisterError>,
    ) -> Result<(), RegisterError> {
        {
            let mut services = self.services();
            let defs = change(&services)?;
            let json: Vec<serde_json::Value> = defs.iter().map(ServiceDef::to_json).collect();
            self.store
                .put(
                    SERVICES_KEY,
                    &serde_json::to_vec(&json).expect("JSON serializes"),
                )
                .map_err(|e| RegisterError::Store(e.to_string()))?;
            services.replace(defs, Instant::now());
        }
        self.registered.notify_one();
        self.publish(|r| r.with_services(self.services().wire()))
            .map_err(RegisterError::Store)
    }

    /// A check run's verdict.
    fn observe(&self, verdict: Verdict) {
        let changed = self.services().observe(
            &verdict.check,
            verdict.result,
            verdict.output,
            Instant::now(),
        );
        if changed {
            self.changed_status(&verdict.check);
        }
    }

    /// An application's report on a TTL check (Consul's `check/pass|warn|fail|update`).
    fn report(&self, id: &str, status: Health, note: String) -> Result<(), ReportError> {
        if self.services().report(id, status, note, Instant::now())? {
            self.changed_status(id);
        }
        Ok(())
    }

    fn changed_status(&self, check: &str) {
        self.status_changes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%check, "check status changed");
        self.save_statuses();
        self.republish();
    }

    /// Keeps every check's status for a restart (a failure only costs that: logged).
    fn save_statuses(&self) {
        let saved = serde_json::to_vec(&self.services().saved()).expect("JSON serializes");
        if let Err(e) = self.store.put(CHECKS_KEY, &saved) {
            tracing::warn!(error = %e, "cannot keep the checks' statuses for a restart");
        }
    }

    /// Expires TTL checks and deregisters services critical past their deadline.
    fn tick(&self) {
        let tick = self.services().tick(Instant::now());
        for id in &tick.reaped {
            tracing::info!(service = %id, "deregistering a service critical past its deregister_critical_after");
            let removed = self.register(|s| {
                s.without(id)
                    .ok_or_else(|| RegisterError::Unknown(id.clone()))
            });
            match removed {
                Ok(()) => {
                    self.reaped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(service = %id, error = %e, "cannot deregister; retrying"),
            }
        }
        if tick.changed {
            self.status_changes.fetch_add(1, Ordering::Relaxed);
            self.save_statuses();
            self.republish();
        }
    }

    /// The keygroup's config version and secret as this host knows them.
    fn secret(&self, keygroup: &str) -> Option<(u64, Vec<u8>)> {
        self.secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keygroup)
            .cloned()
    }

    /// Records a keygroup's config as just read; a newer version is re-sent on every stream
    /// (the current record, stamped with it: DESIGN.md §5 event [7]).
    fn learn(&self, keygroup: &str, version: u64, secret: Vec<u8>) {
        let previous = self
            .secrets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(keygroup.to_string(), (version, secret));
        if previous.is_some_and(|(v, _)| v < version) {
            tracing::info!(%keygroup, version, "keygroup config changed; telling subscribers");
            self.published.send_modify(|_| {});
        }
    }
}

/// The persisted seq, services and checks' statuses (a list that no longer parses is logged
/// and left out: it was valid when written).
fn stored(store: &dyn RoleStore) -> (u64, Vec<ServiceDef>, BTreeMap<String, health::Saved>) {
    let seq = match store.get(SEQ_KEY) {
        Ok(Some(bytes)) => bytes.as_slice().try_into().map(u64::from_be_bytes).ok(),
        _ => None,
    };
    let services = match store.get(SERVICES_KEY) {
        Ok(Some(bytes)) => registration::parse_services(&bytes).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the stored services do not parse; starting without them");
            Vec::new()
        }),
        _ => Vec::new(),
    };
    let saved = match store.get(CHECKS_KEY) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        _ => BTreeMap::new(),
    };
    (seq.unwrap_or(0), services, saved)
}

impl Role for HostRole {
    fn spec(&self) -> &'static RoleSpec {
        role_specs::spec("host").expect("host is a known role")
    }

    fn start(self: Box<Self>, mut ctx: RoleContext) -> Started {
        let me: Me = ctx.me.borrow().clone();
        let (seq, defs, saved) = stored(ctx.store.as_ref());
        let mut services = Services::new(defs, Instant::now());
        services.restore(saved, Instant::now());
        let (published, _) = watch::channel(Published::initial(&me, seq, services.wire()));
        let shared = Arc::new(RoleState {
            node: me.name.clone(),
            keygroups: ctx.settings.keygroups.clone(),
            store: ctx.store.clone(),
            published,
            change: Mutex::new(()),
            secrets: RwLock::new(BTreeMap::new()),
            services: Mutex::new(services),
            registered: Notify::new(),
            prober: Arc::new(Prober::default()),
            status_changes: AtomicU64::new(0),
            reaped: AtomicU64::new(0),
        });
        // The first record of this incarnation takes a fresh seq too.
        if let Err(e) = shared.publish(|r| Some(r.next(&me))) {
            tracing::error!(error = %e, "cannot persist the host record's seq");
        }
        ctx.health.waiting_for(
            shared
                .keygroups
                .iter()
                .map(|k| format!("keygroup:{k}"))
                .collect(),
        );
        let routes = api::routes(shared.clone());
        let internal = Router::new()
            .route("/subscribe", get(api::subscribe))
            .with_state(shared.clone());
        let metrics: Arc<dyn RoleMetrics> = Arc::new(HostMetrics(shared.clone()));
        let consul_agent = agent_api::routes(shared.clone());
        let task = Box::pin(async move {
            let (verdicts_tx, mut verdicts) = mpsc::unbounded_channel();
            let mut probes = Probes::default();
            probes.sync(shared.services().defs(), &shared.prober, &verdicts_tx);
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A deadline, not a sleep per turn: other events must not postpone the re-read.
            let mut next_read = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    Some(verdict) = verdicts.recv() => shared.observe(verdict),
                    _ = ticker.tick() => shared.tick(),
                    () = shared.registered.notified() => {
                        probes.sync(shared.services().defs(), &shared.prober, &verdicts_tx);
                    }
                    _ = tokio::time::sleep_until(next_read) => {
                        let mut waiting = Vec::new();
                        for keygroup in &shared.keygroups {
                            // Joining also re-reads the config: a rotated secret is picked up.
                            match ctx.cp.join_keygroup(keygroup.clone()).await {
                                Ok(info) if !info.secret.is_empty() => {
                                    shared.learn(keygroup, info.version, info.secret);
                                }
                                Ok(_) => waiting.push(format!("keygroup:{keygroup}")),
                                Err(e) => {
                                    tracing::warn!(%keygroup, error = %e, "cannot join the keygroup; retrying");
                                    waiting.push(format!("keygroup:{keygroup}"));
                                }
                            }
                        }
                        next_read = tokio::time::Instant::now()
                            + if waiting.is_empty() {
                                ctx.settings.reread_every
                            } else {
                                RETRY_EVERY
                            };
                        ctx.health.waiting_for(waiting);
                    }
                    event = ctx.events.recv() => match event {
                        None => return,
                        Some(RoleEvent::SelfAddressChanged { me }) => {
                            // Republish at once rather than at the next periodic round.
                            if let Err(e) = shared.publish(|r| r.changed_for(&me)) {
                                tracing::error!(error = %e, "cannot persist the host record's seq");
                            }
                        }
                        // A keygroup config changed (a rotated secret, DESIGN.md §5 event
                        // [5]): re-read now rather than at the next periodic round.
                        Some(RoleEvent::KeygroupChanged { .. } | RoleEvent::Rebootstrapped { .. }) => {
                            next_read = tokio::time::Instant::now();
                        }
                        Some(_) => {}
                    },
                }
            }
        });
        Started {
            metrics: Some(metrics),
            routes,
            internal,
            consul_agent: Some(consul_agent),
            task,
            records: None,
        }
    }
}

struct HostMetrics(Arc<RoleState>);

impl RoleMetrics for HostMetrics {
    fn samples(&self) -> Vec<Sample> {
        let shared = &self.0;
        let mut by_status = BTreeMap::from([
            (Health::Passing, 0u64),
            (Health::Warning, 0),
            (Health::Critical, 0),
        ]);
        let registered = {
            let services = shared.services();
            for (_, _, state) in services.checks() {
                *by_status.entry(state.status()).or_default() += 1;
            }
            services.defs().len() as u64
        };
        let counter = |name, help, value: &AtomicU64| Sample {
            name,
            help,
            counter: true,
            labels: vec![],
            value: value.load(Ordering::Relaxed),
        };
        let mut samples = vec![
            Sample {
                name: "seq",
                help: "Seq of the host record published now.",
                counter: false,
                labels: vec![],
                value: shared.published.borrow().seq,
            },
            Sample {
                name: "subscribers",
                help: "Subscription streams this host serves now.",
                counter: false,
                labels: vec![],
                value: shared.published.receiver_count() as u64,
            },
            Sample {
                name: "services",
                help: "Services registered on this host.",
                counter: false,
                labels: vec![],
                value: registered,
            },
            counter(
                "check_runs",
                "HTTP and TCP check runs.",
                &shared.prober.runs,
            ),
            counter(
                "check_failures",
                "Check runs that did not pass (warning or critical).",
                &shared.prober.failures,
            ),
            counter(
                "check_status_changes",
                "Times a check's status changed (after flap damping).",
                &shared.status_changes,
            ),
            counter(
                "reaped_services",
                "Services deregistered after staying critical past deregister_critical_after.",
                &shared.reaped,
            ),
        ];
        samples.extend(by_status.into_iter().map(|(status, value)| Sample {
            name: "checks",
            help: "Checks on this host by status.",
            counter: false,
            labels: vec![("status", status.as_str().to_string())],
            value,
        }));
        samples
    }
}

pub use api::HostApi;

/// The OpenAPI document of the host role's routes and of Consul's agent API it serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = HostApi::openapi();
    doc.merge(agent_api::AgentApi::openapi());
    doc
}
