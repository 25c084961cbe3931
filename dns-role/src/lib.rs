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
//! - [`server`]: the hickory request handler; [`wire`]: the prebuilt UDP answers.
//! - [`DnsRole`]: the reconcile loop, subscriber tasks, `GET /v1/roles/dns/records` and
//!   `/status`, the internal `snapshot` and `stream` routes.

pub mod server;
pub mod subscriptions;
pub mod trigger;
pub mod wire;
pub mod zone;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use hickory_proto::rr::Name;
use hivemind_common::records::{self, HostRecord, OpenError, SeqBook};
use hivemind_common::role::{
    Claim, ControlPlaneClient, CpCallError, HistogramSample, KeygroupInfo, Me, Membership, Role,
    RoleContext, RoleEvent, RoleHealth, RoleMetrics, Sample, Started, CLUSTER_SECRET_HEADER,
};
use hivemind_common::roles::{self, RoleSpec};
use hivemind_common::MemberId;
use tokio_util::sync::CancellationToken;

use subscriptions::{Target, Via};
use zone::Zone;

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

#[derive(Default)]
struct Counters {
    applied: AtomicU64,
    /// Records that did not open with the keygroup's secret even after re-reading it ([5]).
    refused_sealed: AtomicU64,
    stream_errors: AtomicU64,
    /// Records copied from another dns member when this one started (simple join).
    copied: AtomicU64,
    streams_open: AtomicU64,
    /// Records opened from host streams (whether newer or not): what a new holder's first
    /// subscription delivers (the failover benchmark watches it).
    received_from_hosts: AtomicU64,
    /// Records opened from the holder's intra-node stream.
    received_from_holder: AtomicU64,
    /// Times this machine became responsible for a keygroup (a claim granted, or found held
    /// by this machine when it was not before).
    claims: AtomicU64,
    webhook_delivered: AtomicU64,
    webhook_failures: AtomicU64,
    webhook_dropped: AtomicU64,
}

/// Whether this machine holds a keygroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    Mine,
    HeldBy,
    /// No claim outcome yet (the control plane did not answer).
    Waiting,
}

/// Where this machine stands for one keygroup, for `GET /v1/roles/dns/status`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Position {
    claim: ClaimState,
    /// The claim's fence when this machine holds it.
    fence: Option<u64>,
    /// The holder's name when another machine holds it.
    holder: Option<String>,
    /// Streams held for the keygroup: host streams (holder) or the holder's stream.
    subscriptions: usize,
    /// The keygroup config version this machine holds.
    version: u64,
}

struct Shared {
    mode: Mode,
    origin: Name,
    book: Mutex<SeqBook>,
    keygroups: RwLock<BTreeMap<String, KeygroupInfo>>,
    membership: RwLock<Arc<Membership>>,
    zone: Arc<RwLock<Arc<Zone>>>,
    /// The zone's finished UDP answers, swapped together with it.
    wire: RwLock<Arc<wire::WireAnswers>>,
    serial: AtomicU64,
    counters: Counters,
    /// Keygroups already seeded from a sibling (simple join happens once per keygroup).
    copied_once: Mutex<BTreeSet<String>>,
    queries: Arc<server::QueryCounts>,
    cp: Arc<dyn ControlPlaneClient>,
    cluster_secret: Option<String>,
    http: reqwest::Client,
    /// Every record applied here, for the node's other machines (intra-node streams).
    relay: tokio::sync::broadcast::Sender<HostRecord>,
    positions: RwLock<BTreeMap<String, Position>>,
    /// A stream carried a newer keygroup config version than the one held (seed event [7]):
    /// the reconcile loop re-reads the configs now.
    config_behind: tokio::sync::Notify,
    /// Trigger mode: the record changes, numbered; `change_tx` carries the last index.
    changes: Mutex<trigger::ChangeLog>,
    change_tx: tokio::sync::watch::Sender<u64>,
    /// Per keygroup, the secret a rotation replaced and when.
    previous_secrets: Mutex<BTreeMap<String, (Vec<u8>, Instant)>>,
    /// How long a replaced secret still opens records: twice `--reread-every`, by which time
    /// every publisher re-read the config even if it missed the event.
    rotation_grace: Duration,
}

impl Shared {
    /// Rebuilds the zone from the book and the membership and swaps it in.
    fn rebuild(&self) {
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let keygroups = self.keygroups.read().unwrap_or_else(|p| p.into_inner());
        let ttls: BTreeMap<String, u32> = keygroups
            .values()
            .map(|k| (k.name.clone(), k.ttl_secs))
            .collect();
        drop(keygroups);
        let membership = self
            .membership
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let records: Vec<&HostRecord> = book.records().collect();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) as u32 + 1;
        let zone = Zone::build(&self.origin, &records, &ttls, &membership, serial);
        let answers = wire::WireAnswers::build(&zone);
        // Swap both under the zone's lock, so a UDP answer never mixes two versions.
        let mut current = self.zone.write().unwrap_or_else(|p| p.into_inner());
        *self.wire.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(answers);
        *current = Arc::new(zone);
    }

    fn secret(&self, keygroup: &str) -> Vec<u8> {
        self.keygroups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keygroup)
            .map(|k| k.secret.clone())
            .unwrap_or_default()
    }

    /// Notes the keygroup config version a received record was sealed under (seed event
    /// [7]); answers whether it is newer than the config held, in which case the reconcile
    /// loop re-reads it (B).
    fn heard_version(&self, keygroup: &str, version: u64) -> bool {
        let known = self
            .keygroups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keygroup)
            .map(|k| k.version);
        let behind = subscriptions::config_behind(known, version);
        if behind {
            self.config_behind.notify_one();
        }
        behind
    }

    /// Takes `info` as the keygroup's config. A secret it replaces stays acceptable for the
    /// rotation grace: a publisher may seal with it until it learned the rotation itself.
    fn set_keygroup(&self, info: KeygroupInfo) {
        let mut keygroups = self.keygroups.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = keygroups.get(&info.name) {
            if old.secret != info.secret && !old.secret.is_empty() {
                self.previous_secrets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(info.name.clone(), (old.secret.clone(), Instant::now()));
            }
        }
        keygroups.insert(info.name.clone(), info);
    }

    /// Opens with the secrets held: the current one, then the one it replaced while within
    /// the rotation grace.
    fn open_held(&self, keygroup: &str, sealed: &[u8]) -> Result<HostRecord, OpenError> {
        match records::open(&self.secret(keygroup), sealed) {
            Err(OpenError::Seal) => {
                let previous = self
                    .previous_secrets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(keygroup)
                    .filter(|(_, replaced)| replaced.elapsed() <= self.rotation_grace)
                    .map(|(secret, _)| secret.clone());
                match previous {
                    Some(secret) => records::open(&secret, sealed),
                    None => Err(OpenError::Seal),
                }
            }
            other => other,
        }
    }

    /// Opens a frame; on a seal failure re-reads the keygroup's config once (the secret may
    /// have been rotated: seed event [5]) and retries.
    async fn open(&self, keygroup: &str, sealed: &[u8]) -> Result<HostRecord, OpenError> {
        match self.open_held(keygroup, sealed) {
            Err(OpenError::Seal) => {
                if let Ok(Some(info)) = self.cp.keygroup(keygroup.to_string()).await {
                    self.set_keygroup(info);
                }
                self.open_held(keygroup, sealed)
            }
            other => other,
        }
    }

    /// Applies a record received from `target`; answers whether the zone changed.
    fn apply(&self, target: &Target, record: HostRecord) -> bool {
        // A host speaks only for itself, and any stream only for the keygroup asked for.
        let own = match target.via {
            Via::Host => record.member == target.member,
            Via::Holder => true,
        };
        if !own || record.keygroup != target.keygroup {
            self.counters.refused_sealed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let received = match target.via {
            Via::Host => &self.counters.received_from_hosts,
            Via::Holder => &self.counters.received_from_holder,
        };
        received.fetch_add(1, Ordering::Relaxed);
        self.apply_record(record)
    }

    /// Keeps `record` if it is newer than what is held, rebuilds the zone and relays it to the
    /// node's other machines; answers whether it was newer.
    fn apply_record(&self, record: HostRecord) -> bool {
        let applied = self
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(record.clone());
        if applied {
            self.counters.applied.fetch_add(1, Ordering::Relaxed);
            self.rebuild();
            self.changed("updated", std::slice::from_ref(&record));
            // No receiver is fine: no sibling streams from this machine.
            let _ = self.relay.send(record);
        }
        applied
    }

    /// Trigger mode: records `records` as changes of `kind` for the events and the webhook.
    fn changed(&self, kind: &'static str, records: &[HostRecord]) {
        if self.mode != Mode::Trigger || records.is_empty() {
            return;
        }
        let mut log = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        for record in records {
            log.push(trigger::Change::of(kind, record));
        }
        self.change_tx.send_replace(log.last());
    }

    /// Removes the records `drop` selects, as `removed` changes; answers whether any went.
    fn remove_records(&self, select: impl Fn(&HostRecord) -> bool) -> bool {
        let gone = self
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove_where(select);
        self.changed("removed", &gone);
        !gone.is_empty()
    }

    /// Whether this machine is responsible for `keygroup` now.
    fn holds(&self, keygroup: &str) -> bool {
        self.positions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keygroup)
            .is_some_and(|p| p.claim == ClaimState::Mine)
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

impl Shared {
    fn new(mode: Mode, ctx: &RoleContext) -> Arc<Self> {
        let origin = Name::from_ascii(&ctx.settings.domain).unwrap_or_else(|_| Name::root());
        let shared = Arc::new(Shared {
            mode,
            origin: origin.clone(),
            book: Mutex::new(SeqBook::default()),
            keygroups: RwLock::new(BTreeMap::new()),
            membership: RwLock::new(ctx.membership.borrow().clone()),
            zone: Arc::new(RwLock::new(Arc::new(Zone::build(
                &origin,
                &[],
                &BTreeMap::new(),
                &Membership::default(),
                0,
            )))),
            wire: RwLock::new(Arc::default()),
            serial: AtomicU64::new(0),
            counters: Counters::default(),
            copied_once: Mutex::new(BTreeSet::new()),
            queries: Arc::default(),
            cp: ctx.cp.clone(),
            cluster_secret: ctx.settings.cluster_secret.clone(),
            http: reqwest::Client::new(),
            relay: tokio::sync::broadcast::channel(RELAY_CAPACITY).0,
            positions: RwLock::new(BTreeMap::new()),
            config_behind: tokio::sync::Notify::new(),
            changes: Mutex::new(trigger::ChangeLog::default()),
            change_tx: tokio::sync::watch::channel(0).0,
            previous_secrets: Mutex::new(BTreeMap::new()),
            rotation_grace: ctx.settings.reread_every * 2,
        });
        shared.rebuild();
        shared
    }
}

/// The dns role's metrics: queries by response code, records held, record intake.
struct DnsMetrics(Arc<Shared>);

impl RoleMetrics for DnsMetrics {
    fn histograms(&self) -> Vec<HistogramSample> {
        if self.0.mode != Mode::Dns {
            return Vec::new();
        }
        vec![HistogramSample {
            name: "query_duration_seconds",
            help: "Time from reading a DNS query to handing its answer to the socket.",
            snapshot: self.0.queries.latency.snapshot(),
        }]
    }

    fn samples(&self) -> Vec<Sample> {
        let shared = &self.0;
        let mut samples: Vec<Sample> = shared
            .queries
            .snapshot()
            .into_iter()
            .map(|(rcode, n)| Sample {
                name: "queries",
                help: "DNS queries answered, by response code.",
                counter: true,
                labels: vec![("rcode", rcode)],
                value: n,
            })
            .collect();
        let held = shared
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records()
            .count() as u64;
        let keygroups_held = shared
            .positions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|p| p.claim == ClaimState::Mine)
            .count() as u64;
        let c = &shared.counters;
        let counters: [(&'static str, &'static str, &AtomicU64); 9] = [
            (
                "records_applied",
                "Host records applied (newer seq).",
                &c.applied,
            ),
            (
                "records_refused",
                "Records refused: they did not open with the keygroup's secret.",
                &c.refused_sealed,
            ),
            (
                "stream_errors",
                "Subscription streams interrupted (and reconnected).",
                &c.stream_errors,
            ),
            (
                "received_from_hosts",
                "Records received on host streams (as the keygroup's holder).",
                &c.received_from_hosts,
            ),
            (
                "received_from_holder",
                "Records received on the intra-node stream from the keygroup's holder.",
                &c.received_from_holder,
            ),
            (
                "responsibility_claims",
                "Times this machine became responsible for a keygroup.",
                &c.claims,
            ),
            (
                "webhook_delivered",
                "Trigger changes POSTed to --trigger-webhook.",
                &c.webhook_delivered,
            ),
            (
                "webhook_failures",
                "Failed webhook POSTs (each retried with backoff).",
                &c.webhook_failures,
            ),
            (
                "webhook_dropped",
                "Trigger changes the webhook fell too far behind to deliver.",
                &c.webhook_dropped,
            ),
        ];
        let gauges = [
            ("records", "Host records held.", held),
            (
                "keygroups_held",
                "Keygroups this machine is responsible for now.",
                keygroups_held,
            ),
            (
                "subscriptions",
                "Subscription streams open now.",
                c.streams_open.load(Ordering::Relaxed),
            ),
        ];
        let sample = |name, help, counter, value| Sample {
            name,
            help,
            counter,
            labels: vec![],
            value,
        };
        samples.extend(
            counters
                .into_iter()
                .map(|(name, help, value)| sample(name, help, true, value.load(Ordering::Relaxed))),
        );
        samples.extend(
            gauges
                .into_iter()
                .map(|(name, help, value)| sample(name, help, false, value)),
        );
        samples
    }
}

/// The dns (and trigger) role's routes, for the OpenAPI document (mounted only on members
/// running the role; the trigger role's are the same under `/v1/roles/trigger/` plus its
/// events, see [`openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(records_route, status_route),
    components(schemas(DnsRecordsView, HeldRecordView, DnsStatusView, Position, ClaimState, hivemind_common::records::Service)),
    tags((name = "dns role", description = "On members with --roles dns"))
)]
pub struct DnsApi;

/// The OpenAPI document of `role`'s routes (`dns` or `trigger`).
pub fn openapi(role: &str) -> Option<utoipa::openapi::OpenApi> {
    use utoipa::OpenApi;
    let mut doc = DnsApi::openapi();
    match role {
        "dns" => Some(doc),
        "trigger" => {
            let paths = std::mem::take(&mut doc.paths.paths);
            for (path, item) in paths {
                let mut item = item;
                for op in [&mut item.get, &mut item.put, &mut item.post]
                    .into_iter()
                    .flatten()
                {
                    op.tags = Some(vec!["trigger role".into()]);
                }
                doc.paths
                    .paths
                    .insert(path.replace("/v1/roles/dns/", "/v1/roles/trigger/"), item);
            }
            doc.tags = None;
            doc.merge(trigger::TriggerApi::openapi());
            Some(doc)
        }
        _ => None,
    }
}

/// One record held.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HeldRecordView {
    pub keygroup: String,
    pub host: String,
    pub member: String,
    pub seq: u64,
    pub generation: u64,
    #[schema(value_type = Vec<String>)]
    pub addrs: Vec<std::net::IpAddr>,
    pub services: Vec<hivemind_common::records::Service>,
}

/// `GET /v1/roles/dns/records`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DnsRecordsView {
    pub records: Vec<HeldRecordView>,
    pub applied: u64,
    pub refused_sealed: u64,
    pub stream_errors: u64,
    pub copied: u64,
    pub received_from_hosts: u64,
    pub received_from_holder: u64,
    /// Queries answered, by response code.
    pub queries: BTreeMap<String, u64>,
}

/// The records this machine holds and its intake counters.
#[utoipa::path(get, path = "/v1/roles/dns/records", tag = "dns role",
    responses((status = 200, description = "The records held", body = DnsRecordsView)))]
async fn records_route(State(shared): State<Arc<Shared>>) -> Json<DnsRecordsView> {
    let book = shared
        .book
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let c = &shared.counters;
    Json(DnsRecordsView {
        records: book
            .records()
            .map(|r| HeldRecordView {
                keygroup: r.keygroup.clone(),
                host: r.host.clone(),
                member: r.member.to_string(),
                seq: r.seq,
                generation: r.generation,
                addrs: r.addrs.clone(),
                services: r.services.clone(),
            })
            .collect(),
        applied: c.applied.load(Ordering::Relaxed),
        refused_sealed: c.refused_sealed.load(Ordering::Relaxed),
        stream_errors: c.stream_errors.load(Ordering::Relaxed),
        copied: c.copied.load(Ordering::Relaxed),
        received_from_hosts: c.received_from_hosts.load(Ordering::Relaxed),
        received_from_holder: c.received_from_holder.load(Ordering::Relaxed),
        queries: shared.queries.snapshot(),
    })
}

/// `GET /v1/roles/dns/status`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DnsStatusView {
    /// Per served keygroup.
    pub keygroups: BTreeMap<String, Position>,
    /// Streams open now.
    pub subscriptions: u64,
    pub received_from_hosts: u64,
    pub received_from_holder: u64,
}

/// Per served keygroup: whether this machine holds it (and its fence), which machine does
/// otherwise, and how many streams it holds for it.
#[utoipa::path(get, path = "/v1/roles/dns/status", tag = "dns role",
    responses((status = 200, description = "Where this machine stands per keygroup", body = DnsStatusView)))]
async fn status_route(State(shared): State<Arc<Shared>>) -> Json<DnsStatusView> {
    let positions = shared
        .positions
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(DnsStatusView {
        keygroups: positions,
        subscriptions: shared.counters.streams_open.load(Ordering::Relaxed),
        received_from_hosts: shared.counters.received_from_hosts.load(Ordering::Relaxed),
        received_from_holder: shared.counters.received_from_holder.load(Ordering::Relaxed),
    })
}

/// A UDP socket on `addr` that shares the port with its siblings (`SO_REUSEPORT`), so the
/// kernel spreads queries over several receive loops. Blocking, with a read timeout of
/// [`UDP_SHUTDOWN_CHECK`] so that its loop notices a shutdown.
fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_port(true)?;
    socket.set_read_timeout(Some(UDP_SHUTDOWN_CHECK))?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// How long a UDP loop blocks in a receive before it looks at the shutdown token.
const UDP_SHUTDOWN_CHECK: Duration = Duration::from_millis(200);

/// One UDP receive loop on a thread of its own: each datagram answered from the finished
/// answers (fast path) or built with hickory-proto (everything else). The query path needs no
/// async runtime, so it never waits behind the agent's tasks (the runtime may be one thread)
/// and costs no wake-ups: one blocking receive and one send per query, as in nsd.
fn udp_loop(shared: Arc<Shared>, socket: std::net::UdpSocket, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    while !shutdown.is_cancelled() {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                // Not a spin on an error that repeats: the socket is polled again shortly.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let received = std::time::Instant::now();
        let answer = {
            let zone = shared
                .zone
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let answers = shared
                .wire
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            answers.respond(&zone, &buf[..len])
        };
        if let Some(answer) = answer {
            let sent = socket.send_to(&answer, from);
            shared.queries.answered(wire::rcode_of(&answer), received);
            if let Err(e) = sent {
                tracing::debug!(error = %e, %from, "DNS answer not sent");
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct SnapshotQuery {
    keygroup: String,
}

/// The frames of every record held for `keygroup`, sealed with `secret`.
fn sealed_frames(shared: &Shared, keygroup: &str, secret: &[u8]) -> Vec<u8> {
    let book = shared
        .book
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut body = Vec::new();
    for record in book.records().filter(|r| r.keygroup == keygroup) {
        if let Some(sealed) = records::seal(secret, rand::random(), record) {
            body.extend(records::frame(&sealed));
        }
    }
    body
}

/// `GET /internal/v1/roles/dns/stream?keygroup=K`: the intra-node stream. Every record held
/// for K, then every record applied here from then on, each sealed with K's secret as it is
/// when sent. A follower too far behind is cut off; it reconnects and starts over.
async fn stream_route(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<SnapshotQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let secret = shared.secret(&q.keygroup);
    if secret.is_empty() {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    // Subscribed before the snapshot is taken: nothing falls between the two.
    let updates = shared.relay.subscribe();
    let first = sealed_frames(&shared, &q.keygroup, &secret);
    let keygroup = q.keygroup;
    let live = futures::stream::unfold(
        (updates, shared, keygroup),
        |(mut updates, shared, keygroup)| async move {
            loop {
                // Lagged or closed: end the stream (the follower reconnects).
                let record = updates.recv().await.ok()?;
                if record.keygroup != keygroup {
                    continue;
                }
                let Some(sealed) =
                    records::seal(&shared.secret(&keygroup), rand::random(), &record)
                else {
                    continue;
                };
                let frame: Result<axum::body::Bytes, std::convert::Infallible> =
                    Ok(records::frame(&sealed).into());
                return Some((frame, (updates, shared, keygroup)));
            }
        },
    );
    let first = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(first))
    });
    axum::body::Body::from_stream(futures::StreamExt::chain(first, live)).into_response()
}

/// `GET /internal/v1/roles/dns/snapshot?keygroup=K`: the records this member holds for K, as
/// the frames of a subscription stream (each sealed with K's secret), for a dns member that
/// starts (simple join).
async fn snapshot_route(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<SnapshotQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let secret = shared.secret(&q.keygroup);
    if secret.is_empty() {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    sealed_frames(&shared, &q.keygroup, &secret).into_response()
}

/// Simple join: before subscribing, copy `keygroup`'s records from another live dns member
/// whose node replicates it (the streams then bring anything newer; seqs make it safe).
/// Answers whether the join is settled: copied, or no sibling exists in a known membership.
async fn copy_from_sibling(shared: &Shared, me: &Me, keygroup: &str) -> bool {
    let membership = shared
        .membership
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if membership.epoch == 0 {
        return false; // the membership view is not bootstrapped yet
    }
    let replicas = shared
        .keygroups
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(keygroup)
        .map(|k| k.replicas.clone())
        .unwrap_or_default();
    for peer in membership
        .performing("dns")
        .filter(|p| p.id != me.id && replicas.contains(&p.node))
    {
        let url = format!(
            "http://{}/internal/v1/roles/dns/snapshot?keygroup={keygroup}",
            peer.http_addr
        );
        let mut request = shared.http.get(url).timeout(Duration::from_secs(5));
        if let Some(secret) = &shared.cluster_secret {
            request = request.header(CLUSTER_SECRET_HEADER, secret);
        }
        let Ok(response) = request.send().await else {
            continue;
        };
        if !response.status().is_success() {
            continue;
        }
        let Ok(body) = response.bytes().await else {
            continue;
        };
        let mut buf = body.to_vec();
        let Ok(frames) = records::take_frames(&mut buf) else {
            continue;
        };
        let mut copied = 0;
        for sealed in frames {
            if let Ok(record) = shared.open(keygroup, &sealed).await {
                if record.keygroup == keygroup && shared.apply_record(record) {
                    copied += 1;
                }
            }
        }
        shared.counters.copied.fetch_add(copied, Ordering::Relaxed);
        tracing::info!(%keygroup, from = %peer.name, copied, "copied records from a sibling dns member");
        return true;
    }
    // No sibling answered: settled only if there is none to ask.
    let siblings = membership
        .performing("dns")
        .filter(|p| p.id != me.id && replicas.contains(&p.node))
        .count();
    siblings == 0
}

/// Binds the DNS sockets (one UDP receive loop per core, each on its own thread) and serves
/// until `shutdown`.
async fn serve_dns(
    shared: Arc<Shared>,
    addr: SocketAddr,
    health: RoleHealth,
    shutdown: CancellationToken,
) {
    let loops = std::thread::available_parallelism().map_or(1, |n| n.get());
    let udp: std::io::Result<Vec<_>> = (0..loops).map(|_| reuseport_udp(addr)).collect();
    let tcp = tokio::net::TcpListener::bind(addr).await;
    let (udp, tcp) = match (udp, tcp) {
        (Ok(u), Ok(t)) => (u, t),
        (u, t) => {
            let error = u
                .err()
                .or(t.err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            tracing::error!(%addr, %error, "cannot bind the DNS port; not serving DNS");
            health.waiting_for(vec![format!("dns_port:{error}")]);
            return;
        }
    };
    let mut server = hickory_server::Server::new(server::Handler {
        zone: shared.zone.clone(),
        counts: shared.queries.clone(),
    });
    for (n, socket) in udp.into_iter().enumerate() {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        let span = tracing::Span::current();
        let started = std::thread::Builder::new()
            .name(format!("hivemind-dns-udp-{n}"))
            .spawn(move || span.in_scope(|| udp_loop(shared, socket, shutdown)));
        if let Err(e) = started {
            tracing::error!(%addr, error = %e, "cannot start a DNS receive thread");
            health.waiting_for(vec![format!("dns_thread:{e}")]);
            return;
        }
    }
    // TCP (rare: truncated answers, zone tooling) goes through hickory-server.
    server.register_listener(tcp, Duration::from_secs(5), 64);
    tracing::info!(%addr, "serving DNS");
    tokio::select! {
        _ = shutdown.cancelled() => {
            let _ = server.shutdown_gracefully().await;
        }
        result = server.block_until_done() => {
            if let Err(e) = result {
                tracing::error!(error = %e, "the DNS server stopped");
            }
        }
    }
}

/// The reconcile loop: keygroups joined and claimed, subscriptions matching the membership,
/// records of gone members dropped at once.
async fn run(shared: Arc<Shared>, mut ctx: RoleContext) {
    match (shared.mode, &ctx.settings.trigger_webhook) {
        (Mode::Dns, _) => {
            let dns_addr = SocketAddr::new(ctx.settings.bind, ctx.settings.dns_port);
            tokio::spawn(serve_dns(
                shared.clone(),
                dns_addr,
                ctx.health.clone(),
                ctx.shutdown.child_token(),
            ));
        }
        (Mode::Trigger, Some(url)) => {
            tokio::spawn(trigger::webhook(
                shared.clone(),
                url.clone(),
                ctx.shutdown.child_token(),
            ));
        }
        (Mode::Trigger, None) => {}
    }
    let me: Me = ctx.me.borrow().clone();
    let mut active: BTreeMap<Target, CancellationToken> = BTreeMap::new();
    let mut last_inputs = None;
    // The first turn runs at once; later ones on events, on `--reread-every` (seed event [6])
    // and sooner while something is pending.
    let mut next_turn = Duration::ZERO;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                for token in active.values() {
                    token.cancel();
                }
                return;
            }
            _ = tokio::time::sleep(next_turn) => {}
            _ = shared.config_behind.notified() => {}
            event = ctx.events.recv() => {
                let Some(event) = event else { return };
                // One reconcile for a burst of events (many joins at once).
                let mut burst = vec![event];
                while let Ok(more) = ctx.events.try_recv() {
                    burst.push(more);
                }
                for event in burst {
                    match event {
                        // A host that failed or left is gone from the answers now.
                        RoleEvent::Gone { id, .. } => drop_member(&shared, &mut active, id),
                        // A tombstone: the keygroup's names go now (the reconcile below
                        // then stops its subscriptions).
                        RoleEvent::KeygroupChanged {
                            name,
                            deleted: true,
                            ..
                        } if shared.remove_records(|r| r.keygroup == name) => shared.rebuild(),
                        // Every other change is picked up by the reconcile of this turn.
                        _ => {}
                    }
                }
            }
        }
        *shared.membership.write().unwrap_or_else(|p| p.into_inner()) =
            ctx.membership.borrow().clone();
        let (mut claims, settled) = reconcile_keygroups(&shared, &ctx).await;
        next_turn = if settled {
            ctx.settings.reread_every
        } else {
            RETRY_EVERY
        };
        // Make-before-break for a starting member too: subscribe to hosts only once the
        // keygroup was seeded from a sibling (or there is none).
        {
            let seeded = shared.copied_once.lock().unwrap_or_else(|p| p.into_inner());
            claims.retain(|k, claim| !matches!(claim, Claim::Mine { .. }) || seeded.contains(k));
        }
        let membership = ctx.membership.borrow().clone();
        let keygroups = shared
            .keygroups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let wanted = subscriptions::targets(
            shared.mode.role(),
            me.id,
            &me.node,
            &claims,
            &keygroups,
            &membership,
        );
        // Stop what is no longer wanted (make-before-break: new ones start in the same turn).
        active.retain(|target, token| {
            let keep = wanted.contains(target);
            if !keep {
                token.cancel();
            }
            keep
        });
        for target in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = active.entry(target) {
                let token = ctx.shutdown.child_token();
                tokio::spawn(subscribe(shared.clone(), slot.key().clone(), token.clone()));
                slot.insert(token);
            }
        }
        publish_positions(&shared, &claims, &keygroups, &membership, &active);
        // Records of members no longer alive, or of keygroups no longer served, go.
        let live: BTreeSet<MemberId> = membership.live().map(|p| p.id).collect();
        let stale: Vec<MemberId> = shared
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records()
            .map(|r| r.member)
            .filter(|m| !live.contains(m))
            .collect();
        for id in stale {
            drop_member(&shared, &mut active, id);
        }
        // Member, node and role names follow the membership, TTLs the keygroup configs:
        // rebuild when either moved (record changes rebuild on their own).
        let inputs = (
            membership.epoch,
            membership.index,
            keygroups
                .values()
                .map(|k| (k.name.clone(), k.version))
                .collect::<Vec<_>>(),
        );
        if last_inputs.as_ref() != Some(&inputs) {
            shared.rebuild();
            last_inputs = Some(inputs);
        }
    }
}

/// Records where this machine stands per keygroup for `GET /v1/roles/dns/status`.
fn publish_positions(
    shared: &Shared,
    claims: &BTreeMap<String, Claim>,
    keygroups: &BTreeMap<String, KeygroupInfo>,
    membership: &Membership,
    active: &BTreeMap<Target, CancellationToken>,
) {
    let positions = keygroups
        .values()
        .map(|k| {
            let (claim, fence, holder) = match claims.get(&k.name) {
                Some(Claim::Mine { fence }) => (ClaimState::Mine, Some(*fence), None),
                Some(Claim::HeldBy { machine }) => (
                    ClaimState::HeldBy,
                    None,
                    Some(
                        membership
                            .peers
                            .iter()
                            .find(|p| p.id == *machine)
                            .map_or_else(|| machine.to_string(), |p| p.name.clone()),
                    ),
                ),
                None => (ClaimState::Waiting, None, None),
            };
            let subscriptions = active.keys().filter(|t| t.keygroup == k.name).count();
            let position = Position {
                claim,
                fence,
                holder,
                subscriptions,
                version: k.version,
            };
            (k.name.clone(), position)
        })
        .collect();
    *shared.positions.write().unwrap_or_else(|p| p.into_inner()) = positions;
}

fn drop_member(shared: &Shared, active: &mut BTreeMap<Target, CancellationToken>, id: MemberId) {
    active.retain(|target, token| {
        let keep = target.member != id;
        if !keep {
            token.cancel();
        }
        keep
    });
    if shared.remove_records(|r| r.member == id) {
        tracing::info!(member = %id, "host gone: its records are dropped");
        shared.rebuild();
    }
}

/// The keygroup's config for this machine: a dns machine makes its node a replica (joins);
/// a trigger machine only reads it and waits until its node is one of the triggers.
async fn acquire(mode: Mode, ctx: &RoleContext, name: &str) -> Result<KeygroupInfo, CpCallError> {
    match mode {
        Mode::Dns => ctx.cp.join_keygroup(name.to_string()).await,
        Mode::Trigger => {
            let node = ctx.me.borrow().node.clone();
            match ctx.cp.keygroup(name.to_string()).await? {
                None => Err(CpCallError {
                    code: "unknown_keygroup".into(),
                    message: format!("no keygroup {name}"),
                }),
                Some(info) if info.tombstoned => Err(CpCallError {
                    code: "tombstoned".into(),
                    message: format!("{name} is deleted"),
                }),
                Some(info) if !info.triggers.contains(&node) => Err(CpCallError {
                    code: "not_a_trigger".into(),
                    message: format!("node {node:?} is not a trigger node of {name}"),
                }),
                Some(info) => Ok(info),
            }
        }
    }
}

/// Joins and claims every served keygroup (re-reading its config: B when it changed); answers
/// the claim outcome per keygroup and whether everything settled. A tombstoned keygroup's
/// records go.
async fn reconcile_keygroups(
    shared: &Shared,
    ctx: &RoleContext,
) -> (BTreeMap<String, Claim>, bool) {
    let mut claims = BTreeMap::new();
    let mut waiting = Vec::new();
    let mut settled = true;
    for name in &ctx.settings.keygroups {
        match acquire(shared.mode, ctx, name).await {
            Ok(info) => shared.set_keygroup(info),
            Err(e) if e.code == "tombstoned" => {
                let removed = shared.remove_records(|r| &r.keygroup == name);
                shared
                    .keygroups
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                if removed {
                    tracing::info!(keygroup = %name, "keygroup tombstoned: its records are dropped");
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(keygroup = %name, error = %e, "cannot join the keygroup; retrying");
                waiting.push(format!("keygroup:{name}"));
                continue;
            }
        }
        match ctx.cp.claim(name.clone()).await {
            Ok(Claim::Mine { fence }) => {
                if !shared.holds(name) {
                    shared.counters.claims.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(keygroup = %name, fence, "responsible for the keygroup in this node");
                }
                let seeded = shared
                    .copied_once
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(name);
                // Triggers report changes from now on: nothing to copy first.
                if !seeded && shared.mode == Mode::Trigger {
                    shared
                        .copied_once
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone());
                } else if !seeded {
                    let me = ctx.me.borrow().clone();
                    if copy_from_sibling(shared, &me, name).await {
                        shared
                            .copied_once
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name.clone());
                    } else {
                        settled = false;
                    }
                }
                claims.insert(name.clone(), Claim::Mine { fence });
            }
            Ok(held @ Claim::HeldBy { machine }) => {
                // Another machine of this node is responsible: stream from it. If this view
                // does not show it alive yet (or any more), try again soon.
                let membership = ctx.membership.borrow().clone();
                if !membership.live().any(|p| p.id == machine) {
                    settled = false;
                }
                claims.insert(name.clone(), held);
            }
            Err(e) => {
                tracing::warn!(keygroup = %name, error = %e, "cannot claim the keygroup; retrying");
                waiting.push(format!("keygroup:{name}"));
            }
        }
    }
    settled &= waiting.is_empty();
    ctx.health.waiting_for(waiting);
    (claims, settled)
}

/// One subscription: streams `target`'s records until cancelled, reconnecting with backoff.
async fn subscribe(shared: Arc<Shared>, target: Target, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let url = match target.via {
            Via::Host => format!(
                "http://{}/internal/v1/roles/host/subscribe?keygroup={}&member={}",
                target.http_addr, target.keygroup, target.member
            ),
            Via::Holder => format!(
                "http://{}/internal/v1/roles/{}/stream?keygroup={}",
                target.http_addr,
                shared.mode.role(),
                target.keygroup
            ),
        };
        let mut request = shared.http.get(url);
        if let Some(secret) = &shared.cluster_secret {
            request = request.header(CLUSTER_SECRET_HEADER, secret);
        }
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = stream(&shared, &target, request) => outcome,
        };
        if let Err(e) = outcome {
            shared
                .counters
                .stream_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(host = %target.member, error = %e, "subscription interrupted; reconnecting");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Counts a stream as open for as long as it lives.
struct OpenStream<'a>(&'a AtomicU64);

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn stream(
    shared: &Shared,
    target: &Target,
    request: reqwest::RequestBuilder,
) -> Result<(), String> {
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("subscribe answered {}", response.status()));
    }
    shared.counters.streams_open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenStream(&shared.counters.streams_open);
    if target.via == Via::Holder {
        // The holder's stream opens with everything it holds: this machine is seeded, and
        // takes over without a copy if it becomes the holder.
        shared
            .copied_once
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.keygroup.clone());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        buf.extend_from_slice(&chunk);
        let frames =
            records::take_frames(&mut buf).map_err(|len| format!("frame of {len} bytes"))?;
        for sealed in frames {
            match shared.open(&target.keygroup, &sealed).await {
                Ok(record) => {
                    shared.heard_version(&target.keygroup, record.keygroup_version);
                    shared.apply(target, record);
                }
                Err(e) => {
                    // Not interpretable even with the config re-read: dropped and counted.
                    shared
                        .counters
                        .refused_sealed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(host = %target.member, keygroup = %target.keygroup, error = %e, "record refused");
                }
            }
        }
    }
    Err("the stream ended".into())
}

#[cfg(test)]
mod tests;
