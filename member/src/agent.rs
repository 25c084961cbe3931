//! [`run`]: one agent process from start to graceful stop. Opens the identity store, starts the
//! control-plane member, serves HTTP (CP routes, `/v1/status`, `/v1/members`, `/v1/nodes`)
//! behind the admin-token check, forms or rejoins the cluster, and admits itself.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use hivemind_common::role::{Me, RoleSettings};
use hivemind_common::secret;
use hivemind_control_plane::http::views::{ErrorBody, MachineView, MemberView, NodeView};
use hivemind_control_plane::http::{views, ApiError};
use hivemind_control_plane::network::{paths, InternalClient};
use hivemind_control_plane::registry::{
    Command, CommandOutput, MemberInfo, MemberState, RegistryDigest,
};
use hivemind_control_plane::{Applied, ControlPlane, CpConfig, CpError, Health};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::require_admin_token;
use crate::cp_access::{CpAccess, CpClient, RoleCp};
use crate::gossip::{self, Gossip, GossipCommand, GossipEvent, GossipId, GossipSettings, Profile};
use crate::identity::{Identity, IdentityError, MemberStore};
use crate::join::{cp_endpoints, join_cluster, JoinAccepted, JoinRequest};
use crate::role_runtime::{RoleBasis, Roles};
use crate::view::MembershipView;

/// Everything `hivemind agent` was told on the command line, in a config file or the env.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub node: String,
    pub data_dir: PathBuf,
    pub bind: IpAddr,
    /// The address advertised at start.
    pub advertise: IpAddr,
    /// Whether `advertise` was given (`--advertise`, or `--bind` of a specific IP); if not, the
    /// address watchdog detects it.
    pub advertise_forced: bool,
    /// Runtime changes of the forced address (a config reload); `None` inside: detect.
    pub advertise_updates: Option<watch::Receiver<Option<IpAddr>>>,
    /// How often the address watchdog compares the advertised address with the current one.
    pub address_check: Duration,
    /// How often roles re-read their keygroup and node configs (seed event [6]).
    pub reread_every: Duration,
    /// Where the `trigger` role POSTs each change.
    pub trigger_webhook: Option<String>,
    pub http_port: u16,
    pub gossip_port: u16,
    pub control_plane: bool,
    pub bootstrap_expect: Option<usize>,
    pub join: Vec<String>,
    pub roles: Vec<String>,
    /// Keygroups the roles serve (`--keygroup`; default `hivemind/default/hosts`).
    pub keygroups: Vec<String>,
    /// The domain the dns role answers for (`--domain`, e.g. `hivemind.`).
    pub domain: String,
    pub dns_port: u16,
    pub admin_token: Option<String>,
    /// Joiners must present this token (checked by the CP member that receives the join).
    pub join_token: Option<String>,
    /// Bounded wait of CP writes and linearizable reads (`no_quorum` after it).
    pub request_timeout: Duration,
    pub raft_snapshot_every: u64,
    /// Test only: see `CpConfig::unsafe_ack_before_persist`.
    pub unsafe_ack_before_persist: bool,
    /// Events kept in the feed before the CP leader starts a new epoch.
    pub event_retention: usize,
    /// Commit `Leave` when stopping (off only for throwaway clusters such as `hivemind dev`).
    pub leave_on_shutdown: bool,
    /// Seals gossip packets when set.
    pub gossip_key: Option<[u8; 32]>,
    pub gossip_profile: Profile,
}

impl AgentConfig {
    /// The secret internal routes require: derived from the gossip key, none without one.
    pub fn cluster_secret(&self) -> Option<String> {
        self.gossip_key.as_ref().map(gossip::seal::cluster_secret)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("control plane: {0}")]
    ControlPlane(#[from] CpError),
    #[error("cannot create data dir {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
    #[error("join rejected: {code}: {message}")]
    JoinRejected { code: String, message: String },
}

/// Shared by the agent's HTTP handlers and background tasks.
pub(crate) struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) identity: Identity,
    /// Current generation: the start's, or higher after a renewal.
    pub(crate) generation: AtomicU64,
    pub(crate) cp: Arc<CpAccess>,
    /// For calls to other members' internal routes (with the cluster secret).
    pub(crate) internal: InternalClient,
    pub(crate) store: MemberStore,
    pub(crate) admitted: AtomicBool,
    /// Index of the `Join` that admitted the current incarnation.
    pub(crate) admitted_index: AtomicU64,
    pub(crate) gossip: Gossip,
    /// The membership as the event feed built it; replaced whole on every change.
    pub(crate) view: watch::Sender<Arc<MembershipView>>,
    /// Whether the view reached the applied index of the CP member that answered last.
    pub(crate) caught_up: AtomicBool,
    pub(crate) roles: Roles,
    pub(crate) counters: FeedCounters,
    pub(crate) join_outcomes: crate::metrics::JoinOutcomes,
    pub(crate) http_answers: Arc<crate::access_log::HttpAnswers>,
    /// The address advertised now (changed by the address watchdog).
    pub(crate) advertise: std::sync::RwLock<IpAddr>,
    /// Cancelled to stop this member (signals, `POST /v1/leave`).
    pub(crate) shutdown: CancellationToken,
}

/// The feed follower's counters (in `/v1/status` and `/metrics`).
#[derive(Default)]
pub(crate) struct FeedCounters {
    pub(crate) events_applied: AtomicU64,
    pub(crate) feed_errors: AtomicU64,
    pub(crate) rebootstraps: AtomicU64,
}

impl Agent {
    pub(crate) fn info(&self) -> MemberInfo {
        member_info(
            &self.config,
            self.advertise(),
            &self.identity,
            self.generation.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn advertise(&self) -> IpAddr {
        *self.advertise.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_advertise(&self, ip: IpAddr) {
        *self.advertise.write().unwrap_or_else(|p| p.into_inner()) = ip;
    }
}

/// `info` as roles see themselves.
pub(crate) fn me(info: &MemberInfo) -> Me {
    let addr = |a: &str| {
        a.parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    Me {
        id: info.id,
        name: info.name.clone(),
        node: info.node.clone(),
        generation: info.generation,
        http_addr: addr(&info.http_addr),
        gossip_addr: addr(&info.gossip_addr),
    }
}

fn member_info(
    config: &AgentConfig,
    advertise: IpAddr,
    identity: &Identity,
    generation: u64,
) -> MemberInfo {
    MemberInfo {
        id: identity.id,
        name: config.name.clone(),
        node: config.node.clone(),
        roles: config.roles.clone(),
        http_addr: SocketAddr::new(advertise, config.http_port).to_string(),
        gossip_addr: SocketAddr::new(advertise, config.gossip_port).to_string(),
        generation,
        control_plane: config.control_plane,
    }
}

/// `/internal/v1/join` on every member: a CP member checks the token and commits `Join`; any
/// other member forwards the request to the control plane.
async fn join_route(
    State(agent): State<Arc<Agent>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let request: JoinRequest = match hivemind_common::decode(&body) {
        Ok(request) => request,
        Err(e) => {
            return ApiError::bad_request(format!("malformed join request: {e}")).into_response()
        }
    };
    let answer: Result<JoinAccepted, CpError> = match agent.cp.as_ref() {
        CpAccess::Member(cp) => {
            if !secret::satisfies(agent.config.join_token.as_deref(), request.token.as_deref()) {
                Err(CpError::BadToken)
            } else if !secret::same(
                request.cluster_proof.as_deref(),
                agent.config.cluster_secret().as_deref(),
            ) {
                // A member without our gossip key could not gossip with us: refuse it before
                // anything is proposed, so it leaves no trace.
                Err(CpError::BadGossipKey)
            } else {
                let join = Command::Join {
                    member: request.member,
                    epoch: request.epoch,
                };
                match cp.write(join).await {
                    Ok(Applied {
                        output: CommandOutput::Joined { epoch, index },
                        ..
                    }) => {
                        let state = cp.state().read();
                        let members = state
                            .registry
                            .members()
                            .values()
                            .filter(|m| m.state == MemberState::Alive)
                            .map(|m| m.info.clone())
                            .collect();
                        Ok(JoinAccepted {
                            epoch,
                            index,
                            members,
                        })
                    }
                    Ok(other) => Err(CpError::Fatal(format!(
                        "unexpected join outcome {:?}",
                        other.output
                    ))),
                    Err(e) => Err(e),
                }
            }
        }
        CpAccess::Client(client) => client.forward_join(&request).await,
    };
    agent.join_outcomes.record(match &answer {
        Ok(_) => "accepted",
        Err(e) => e.code(),
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        hivemind_common::encode(&answer),
    )
        .into_response()
}

/// Runs the agent until `shutdown` is cancelled, then stops it gracefully.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = MemberStore::open(&config.data_dir.join("member"))?;
    let identity = store.start_incarnation(&mut rand::thread_rng())?;
    let span = tracing::info_span!("member", member = %identity.id, name = %config.name);
    async move {
        tracing::info!(generation = identity.generation, "starting");
        let bind = SocketAddr::new(config.bind, config.http_port);
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|source| AgentError::Bind { addr: bind, source })?
            // Without TCP_NODELAY, small answers (Raft acks, forwarded writes) wait for the
            // peer's delayed ACK: ~40 ms per replication round under load.
            .tap_io(|stream| {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
        let gossip_cancel = CancellationToken::new();
        let gossip_bind = SocketAddr::new(config.bind, config.gossip_port);
        let socket = tokio::net::UdpSocket::bind(gossip_bind)
            .await
            .map_err(|source| AgentError::Bind {
                addr: gossip_bind,
                source,
            })?;
        let client = InternalClient::new(config.cluster_secret());
        // A CP member runs Raft here; any other member joins through the --join addresses.
        let (cp, joined) = if config.control_plane {
            let http_addr = SocketAddr::new(config.advertise, config.http_port);
            let mut cp_config = CpConfig::new(
                identity.id.get(),
                config.name.clone(),
                http_addr.to_string(),
                config.data_dir.join("cp"),
            );
            cp_config.bootstrap_expect = config.bootstrap_expect;
            cp_config.join = config.join.clone();
            cp_config.request_timeout = config.request_timeout;
            cp_config.snapshot_every = config.raft_snapshot_every;
            cp_config.unsafe_ack_before_persist = config.unsafe_ack_before_persist;
            cp_config.cluster_secret = config.cluster_secret();
            cp_config.event_retention = config.event_retention;
            (
                CpAccess::Member(ControlPlane::start(cp_config).await?),
                None,
            )
        } else {
            let request = JoinRequest {
                member: member_info(&config, config.advertise, &identity, identity.generation),
                token: config.join_token.clone(),
                cluster_proof: config.cluster_secret(),
                epoch: store.epoch()?,
            };
            let wait = config.request_timeout + Duration::from_secs(2);
            let accepted = join_cluster(
                &config.join,
                request,
                &client,
                wait,
                Duration::from_secs(60),
                &shutdown,
            )
            .await
            .map_err(|(code, message)| AgentError::JoinRejected { code, message })?;
            if let Err(e) = store.set_epoch(accepted.epoch) {
                tracing::warn!(error = %e, "cannot persist the epoch");
            }
            // The control-plane members the join answer listed, then the --join addresses: a
            // cluster that is still forming may not have admitted its CP members yet, and a
            // member with no endpoint could never learn one.
            let mut endpoints = cp_endpoints(&accepted.members);
            for join in &config.join {
                if !endpoints.contains(join) {
                    endpoints.push(join.clone());
                }
            }
            let cp_client = CpClient::new(client.clone(), endpoints, config.request_timeout);
            (CpAccess::Client(cp_client), Some(accepted))
        };
        let (gossip_events_tx, gossip_events) = mpsc::unbounded_channel();
        let gossip = gossip::runtime::spawn(
            GossipSettings {
                identity: GossipId {
                    id: identity.id,
                    addr: SocketAddr::new(config.advertise, config.gossip_port),
                    generation: identity.generation,
                },
                profile: config.gossip_profile,
                key: config.gossip_key,
                cluster_size_hint: 16,
            },
            socket,
            gossip_events_tx,
            // Not a child of `shutdown`: the member leaves the gossip only after its Leave
            // is committed.
            gossip_cancel.clone(),
        );
        let tasks = TaskTracker::new();
        // Resume from the saved view; a member without one (or in an older epoch) is told
        // `gone` by the feed and bootstraps from a snapshot.
        let view = match store.view() {
            Ok(Some(view)) => view,
            Ok(None) => MembershipView::empty(),
            Err(e) => {
                tracing::warn!(error = %e, "saved membership view unreadable; bootstrapping");
                MembershipView::empty()
            }
        };
        let cp = Arc::new(cp);
        let settings = RoleSettings {
            keygroups: config.keygroups.clone(),
            domain: config.domain.clone(),
            bind: config.bind,
            dns_port: config.dns_port,
            reread_every: config.reread_every,
            trigger_webhook: config.trigger_webhook.clone(),
            cluster_secret: config.cluster_secret(),
        };
        let (view_tx, view_rx) = watch::channel(Arc::new(view.clone()));
        let basis = RoleBasis {
            names: config.roles.clone(),
            settings,
            cp: RoleCp {
                cp: cp.clone(),
                node: config.node.clone(),
                id: identity.id,
                seen: view_rx,
            },
            me: me(&member_info(
                &config,
                config.advertise,
                &identity,
                identity.generation,
            )),
        };
        let (roles, role_routes) = Roles::start(basis, &view, &store, &shutdown, &tasks)?;
        let view = view_tx;
        let config_advertise = config.advertise;
        let agent = Arc::new(Agent {
            internal: client.clone(),
            config,
            generation: AtomicU64::new(identity.generation),
            identity,
            cp,
            store,
            admitted: AtomicBool::new(joined.is_some()),
            admitted_index: AtomicU64::new(joined.as_ref().map_or(0, |j| j.index)),
            gossip,
            view,
            caught_up: AtomicBool::new(false),
            roles,
            counters: FeedCounters::default(),
            join_outcomes: Default::default(),
            http_answers: Default::default(),
            advertise: std::sync::RwLock::new(config_advertise),
            shutdown: shutdown.clone(),
        });

        let mut app = role_routes;
        match (agent.cp.as_ref(), &joined) {
            (CpAccess::Member(cp), _) => {
                tasks.spawn(
                    cp.clone()
                        .run_bootstrap(shutdown.child_token())
                        .in_current_span(),
                );
                tasks.spawn(admit(agent.clone(), shutdown.child_token()).in_current_span());
                tasks.spawn(
                    cp.clone()
                        .run_retention(shutdown.child_token())
                        .in_current_span(),
                );
                app = app.merge(hivemind_control_plane::http::router(cp.clone()));
            }
            (CpAccess::Client(_), Some(accepted)) => {
                tracing::info!(
                    epoch = accepted.epoch,
                    index = accepted.index,
                    members = accepted.members.len(),
                    "joined"
                );
                for member in accepted
                    .members
                    .iter()
                    .filter(|m| m.id != agent.identity.id)
                {
                    if let Ok(addr) = member.gossip_addr.parse() {
                        let target = GossipId {
                            id: member.id,
                            addr,
                            generation: member.generation,
                        };
                        let _ = agent
                            .gossip
                            .commands
                            .try_send(GossipCommand::Announce(target));
                    }
                }
            }
            (CpAccess::Client(_), None) => unreachable!("a client member has joined"),
        }
        tasks.spawn(
            announce_to_registry_members(agent.clone(), shutdown.child_token()).in_current_span(),
        );
        tasks.spawn(
            handle_gossip_events(agent.clone(), gossip_events, shutdown.child_token())
                .in_current_span(),
        );
        tasks.spawn(crate::feed::follow(agent.clone(), shutdown.child_token()).in_current_span());
        tasks.spawn(crate::address::watch(agent.clone(), shutdown.child_token()).in_current_span());

        let token = agent.config.admin_token.clone();
        let member_routes = Router::new()
            .route(paths::JOIN, post(join_route))
            .route("/v1/status", get(status))
            .route("/v1/members", get(members))
            .route("/v1/leave", post(post_leave))
            .route("/v1/nodes", get(nodes))
            .route("/v1/nodes/{node}", get(node))
            .with_state(agent.clone());
        let metrics = Router::new()
            .route("/", get(dashboard))
            .route("/metrics", get(crate::metrics::route))
            .with_state(crate::metrics::registry(&agent));
        let document = crate::openapi::document(agent.config.control_plane, &agent.config.roles);
        let document = Router::new()
            .route("/v1/openapi.json", get(crate::openapi::route))
            .with_state(Arc::new(
                serde_json::to_string(&document).expect("the OpenAPI document serializes"),
            ));
        let app = app
            .merge(member_routes)
            .merge(crate::keygroups_api::routes(agent.clone()))
            .merge(metrics)
            .merge(document)
            .layer(axum::middleware::from_fn(move |req, next| {
                require_admin_token(token.clone(), req, next)
            }))
            .layer(crate::access_log::layer(agent.http_answers.clone()));
        tracing::info!(%bind, "serving HTTP");
        // Graceful leave, in order: commit Leave (while this member still serves the others'
        // Raft and forwarding traffic), leave the gossip, stop serving, stop the CP member.
        let stopping = {
            let (agent, shutdown, gossip_cancel) =
                (agent.clone(), shutdown.clone(), gossip_cancel.clone());
            async move {
                shutdown.cancelled().await;
                if agent.config.leave_on_shutdown {
                    leave(&agent).await;
                }
                gossip_cancel.cancel();
            }
        };
        // Requests in flight get a grace period to finish; long-polls and subscription streams
        // of other members would otherwise hold the stop for as long as they wait.
        let served = tokio::select! {
            served = axum::serve(listener, app).with_graceful_shutdown(stopping) => served,
            _ = async {
                gossip_cancel.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::info!("open requests cut after the shutdown grace period");
                Ok(())
            }
        };
        gossip_cancel.cancel();
        tasks.close();
        // Background work gets the grace period to notice the stop (a report to a control
        // plane that is itself stopping may not finish); what remains ends with the process.
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
            .await
            .is_err()
        {
            tracing::info!("background tasks still running after the grace period; leaving them");
        }
        if let CpAccess::Member(cp) = agent.cp.as_ref() {
            cp.shutdown().await;
        }
        tracing::info!("stopped");
        served.map_err(AgentError::Serve)
    }
    .instrument(span)
    .await
}

/// `GET /`: the dashboard, one page served from the binary; it reads the `/v1` API (asking for
/// the admin token when the API answers 401) and refreshes every second.
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 200, description = "The dashboard (one self-contained HTML page)", content_type = "text/html", body = String)))]
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

/// Commits `Leave` for this member (within the bounded wait; without a quorum the member leaves
/// anyway and SWIM reports it down instead).
async fn leave(agent: &Agent) {
    if !agent.admitted.load(Ordering::Relaxed) {
        return;
    }
    match agent
        .cp
        .write(Command::Leave {
            id: agent.identity.id,
        })
        .await
    {
        Ok(_) => tracing::info!("left the cluster"),
        Err(e) => tracing::warn!(error = %e, "could not commit Leave; leaving anyway"),
    }
}

/// The member's own routes, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(status, members, post_leave, nodes, node, dashboard, crate::metrics::route),
    components(schemas(StatusView, GossipStatus, FeedStatus, Leaving, MemberView, NodeView, MachineView, ErrorBody)),
    tags((name = "members", description = "This member, the membership and nodes"), (name = "operations", description = "Dashboard and metrics"))
)]
pub struct MemberApi;

/// Answer of `POST /v1/leave`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Leaving {
    pub leaving: bool,
}

/// Leave gracefully and stop; answers before the member goes.
#[utoipa::path(post, path = "/v1/leave", tag = "members",
    responses((status = 202, description = "Leaving", body = Leaving)))]
async fn post_leave(State(agent): State<Arc<Agent>>) -> (StatusCode, Json<Leaving>) {
    agent.shutdown.cancel();
    (StatusCode::ACCEPTED, Json(Leaving { leaving: true }))
}

/// Commits this member's `Join` (its current incarnation) so that the registry lists it.
pub(crate) async fn admit(agent: Arc<Agent>, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let join = Command::Join {
            member: agent.info(),
            epoch: None,
        };
        match agent.cp.write(join).await {
            Ok(applied) => {
                if let CommandOutput::Joined { epoch, index } = applied.output {
                    if let Err(e) = agent.store.set_epoch(epoch) {
                        tracing::warn!(error = %e, "cannot persist the epoch");
                    }
                    agent.admitted_index.store(index, Ordering::Relaxed);
                    tracing::info!(epoch, index, "admitted to the registry");
                }
                agent.admitted.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => tracing::warn!(error = %e, code = e.code(), "admission failed; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How long requests in flight may finish once the member stops serving.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Registry members unknown to SWIM announced to per round.
const ANNOUNCES_PER_ROUND: usize = 4;

/// Keeps the SWIM view in step with the registry (as the feed's membership view holds it):
/// live registry members that gossip does not know (yet, or any more) are announced to,
/// periodically.
async fn announce_to_registry_members(agent: Arc<Agent>, cancel: CancellationToken) {
    let every = match agent.config.gossip_profile {
        Profile::Local => Duration::from_millis(500),
        Profile::Lan => Duration::from_secs(2),
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // The membership view the feed keeps current: no control-plane call per round.
        let registry = agent.view.borrow().clone();
        if let CpAccess::Client(client) = agent.cp.as_ref() {
            let infos: Vec<MemberInfo> = registry.live_members().map(|m| m.info.clone()).collect();
            client.set_endpoints(cp_endpoints(&infos));
        }
        let targets: Vec<GossipId> = {
            let view = agent.gossip.view.borrow();
            registry
                .live_members()
                .filter(|m| m.info.id != agent.identity.id)
                .filter(|m| {
                    !matches!(
                        view.get(&m.info.id),
                        Some((_, foca::State::Alive | foca::State::Suspect))
                    )
                })
                .filter_map(|m| {
                    Some(GossipId {
                        id: m.info.id,
                        addr: m.info.gossip_addr.parse().ok()?,
                        generation: m.info.generation,
                    })
                })
                .collect()
        };
        // One answered announce teaches SWIM the whole membership: a few random targets per
        // round repair the view without flooding members that are not there.
        use rand::seq::SliceRandom;
        for target in targets.choose_multiple(&mut rand::thread_rng(), ANNOUNCES_PER_ROUND) {
            let _ = agent
                .gossip
                .commands
                .try_send(GossipCommand::Announce(*target));
        }
    }
}

/// SWIM's verdicts, carried to the control plane: a member seen down is reported as
/// `Fail{id, generation}` (the CP commits it once however many report it); when we ourselves
/// were declared down and rejoined under a renewed identity, we are admitted again.
async fn handle_gossip_events(
    agent: Arc<Agent>,
    mut events: mpsc::UnboundedReceiver<GossipEvent>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = events.recv() => match event { Some(e) => e, None => return },
        };
        match event {
            GossipEvent::Down(id) => {
                let fail = Command::Fail {
                    id: id.id,
                    generation: id.generation,
                };
                for attempt in 0..5u32 {
                    match agent.cp.write(fail.clone()).await {
                        Ok(applied) => {
                            tracing::info!(member = %id.id, generation = id.generation, outcome = ?applied.output, "reported a down member");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(member = %id.id, error = %e, attempt, "cannot report a down member; retrying");
                            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                        }
                    }
                }
            }
            GossipEvent::Renewed(id) => {
                tracing::warn!(
                    generation = id.generation,
                    "declared down by the cluster; rejoining as a new incarnation"
                );
                agent.generation.fetch_max(id.generation, Ordering::Relaxed);
                if let Err(e) = agent.store.set_generation(id.generation) {
                    tracing::warn!(error = %e, "cannot persist the renewed generation");
                }
                agent.admitted.store(false, Ordering::Relaxed);
                tokio::spawn(admit(agent.clone(), cancel.child_token()).in_current_span());
            }
        }
    }
}

/// This member's gossip counters in `/v1/status`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GossipStatus {
    /// Other members SWIM does not consider down.
    pub members: usize,
    pub packets_in: u64,
    pub packets_out: u64,
    pub dropped_unopened: u64,
}

/// This member's feed position in `/v1/status`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct FeedStatus {
    pub epoch: u64,
    pub index: u64,
    pub caught_up: bool,
    pub events_applied: u64,
    pub errors: u64,
    pub rebootstraps: u64,
}

/// `GET /v1/status`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StatusView {
    pub id: String,
    pub name: String,
    pub node: String,
    pub roles: Vec<String>,
    pub generation: u64,
    /// The registry's epoch (`null` when no control plane answered).
    pub epoch: Option<u64>,
    pub http: String,
    pub addr: String,
    pub admitted: bool,
    /// True when `waiting_for` is empty.
    pub ready: bool,
    pub gossip: GossipStatus,
    pub feed: FeedStatus,
    /// `admission`, `control_plane_quorum`, `event_feed`, `role:<name>`,
    /// `role:<name>:<reason>`.
    pub waiting_for: Vec<String>,
    /// The control plane as this member sees it (`null` when none answered).
    pub control_plane: Option<hivemind_control_plane::CpStatus>,
}

/// This member: identity, readiness and why not, gossip, feed, control plane.
#[utoipa::path(get, path = "/v1/status", tag = "members",
    responses((status = 200, description = "This member's status", body = StatusView)))]
async fn status(State(agent): State<Arc<Agent>>) -> Json<StatusView> {
    let cp = agent.cp.status().await;
    let admitted = agent.admitted.load(Ordering::Relaxed);
    let mut waiting_for = Vec::new();
    if cp.as_ref().map(|s| s.health) != Some(Health::Healthy) {
        waiting_for.push("control_plane_quorum".to_string());
    }
    if !admitted {
        waiting_for.push("admission".to_string());
    }
    let caught_up = agent.caught_up.load(Ordering::Relaxed);
    if !caught_up {
        waiting_for.push("event_feed".to_string());
    }
    waiting_for.extend(agent.roles.waiting_for());
    // One registry read serves both the epoch and the role requirements (for a member outside
    // the control plane it is a remote call).
    let registry = agent.cp.registry().await.ok();
    if let Some(registry) = &registry {
        let live = registry
            .members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .flat_map(|m| m.info.roles.iter().map(String::as_str));
        waiting_for.extend(hivemind_common::roles::missing_requirements(
            &agent.config.roles,
            live,
        ));
    }
    let epoch = registry.map(|r| r.epoch);
    let info = agent.info();
    let view = agent.view.borrow().clone();
    let g = &agent.gossip.counters;
    Json(StatusView {
        id: info.id.to_string(),
        name: info.name,
        node: info.node,
        roles: info.roles,
        generation: info.generation,
        epoch,
        http: info.http_addr,
        addr: info.gossip_addr,
        admitted,
        ready: waiting_for.is_empty(),
        gossip: GossipStatus {
            members: agent
                .gossip
                .view
                .borrow()
                .values()
                .filter(|(_, s)| *s != foca::State::Down)
                .count(),
            packets_in: g.packets_in.load(Ordering::Relaxed),
            packets_out: g.packets_out.load(Ordering::Relaxed),
            dropped_unopened: g.dropped_unopened.load(Ordering::Relaxed),
        },
        feed: FeedStatus {
            epoch: view.epoch,
            index: view.index,
            caught_up,
            events_applied: agent.counters.events_applied.load(Ordering::Relaxed),
            errors: agent.counters.feed_errors.load(Ordering::Relaxed),
            rebootstraps: agent.counters.rebootstraps.load(Ordering::Relaxed),
        },
        waiting_for,
        control_plane: cp,
    })
}

/// The registry, or a 503 when no control-plane member answers.
pub(crate) async fn registry(agent: &Agent) -> Result<RegistryDigest, ApiError> {
    agent.cp.registry().await.map_err(ApiError::from)
}

/// `GET /v1/members`: the registry's members, with the state SWIM sees for the live ones
/// (`suspect`, or `failed` before the registry recorded it).
#[utoipa::path(get, path = "/v1/members", tag = "members",
    responses((status = 200, description = "Every member the registry knows", body = [MemberView]),
        (status = 503, description = "No control plane reachable", body = ErrorBody)))]
async fn members(State(agent): State<Arc<Agent>>) -> Result<Json<Vec<MemberView>>, ApiError> {
    let registry = registry(&agent).await?;
    let swim_view = agent.gossip.view.borrow().clone();
    let list = registry
        .members
        .iter()
        .map(|m| {
            let mut view = views::member(m);
            if m.state == MemberState::Alive && m.info.id != agent.identity.id {
                if let Some((seen, swim)) = swim_view.get(&m.info.id) {
                    if seen.generation >= m.info.generation {
                        view.state = match swim {
                            foca::State::Alive => "alive",
                            foca::State::Suspect => "suspect",
                            foca::State::Down => "failed",
                        }
                        .into();
                    }
                }
            }
            view
        })
        .collect();
    Ok(Json(list))
}

/// A member's name as the registry lists it.
fn name_in(registry: &RegistryDigest) -> impl Fn(hivemind_common::MemberId) -> Option<String> + '_ {
    |id| {
        registry
            .members
            .iter()
            .find(|m| m.info.id == id)
            .map(|m| m.info.name.clone())
    }
}

#[utoipa::path(get, path = "/v1/nodes", tag = "members",
    responses((status = 200, description = "Every node and its machines", body = [NodeView]),
        (status = 503, description = "No control plane reachable", body = ErrorBody)))]
async fn nodes(State(agent): State<Arc<Agent>>) -> Result<Json<Vec<NodeView>>, ApiError> {
    let registry = registry(&agent).await?;
    Ok(Json(
        registry
            .nodes
            .iter()
            .map(|n| views::node(n, name_in(&registry)))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/nodes/{node}", tag = "members",
    params(("node" = String, Path, description = "The node's name")),
    responses((status = 200, description = "The node", body = NodeView),
        (status = 404, description = "No such node", body = ErrorBody)))]
async fn node(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let registry = registry(&agent).await?;
    registry
        .nodes
        .iter()
        .find(|n| n.node == name)
        .map(|n| Json(views::node(n, name_in(&registry))))
        .ok_or_else(|| ApiError::not_found(format!("no node {name:?}")))
}
