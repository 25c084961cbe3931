//! [`run`]: one agent process from start to graceful stop. Opens the identity store, starts the
//! control-plane member, serves HTTP (CP routes, the member's routes in `member_api`) behind the
//! admin-token check, forms or rejoins the cluster, and admits itself (`admission`).

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use hivemind_common::role::RoleSettings;
use hivemind_control_plane::network::InternalClient;
use hivemind_control_plane::ops::{self, Op};
use hivemind_tls::{Listener, Peer};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{AgentConfig, AgentError};
#[cfg(feature = "control-plane")]
use crate::cp::admission::admit;
use crate::cp::admission::{announce_to_registry_members, handle_gossip_events, join_route, leave};
use crate::cp::cp_access::{CpAccess, CpClient, RoleCp};
use crate::cp::join::{cp_endpoints, join_cluster, JoinAccepted, JoinRequest};
use crate::gossip::{self, GossipCommand, GossipId, GossipSettings};
use crate::http::auth::require_member_certificate;
use crate::http::member_api::{members, node, nodes, post_leave, status};
use crate::identity::{Identity, MemberStore};
use crate::incarnation::Incarnation;
use crate::membership::Membership;
use crate::role_runtime::{RoleBasis, Roles};
use crate::state::{me, member_info, Agent};
use crate::view::MembershipView;

/// This member's control-plane node, started (`--control-plane`).
#[cfg(feature = "control-plane")]
async fn start_control_plane(
    config: &AgentConfig,
    identity: &Identity,
) -> Result<CpAccess, AgentError> {
    use hivemind_control_plane::{ControlPlane, CpConfig};
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
    cp_config.admin_token = config.admin_token.clone();
    cp_config.tls = config.client_tls();
    cp_config.join_token = config.join_token.clone();
    cp_config.event_retention = config.event_retention;
    Ok(CpAccess::Member(ControlPlane::start(cp_config).await?))
}

/// A build without the control plane (`hivemind-lite`) cannot be a CP member.
#[cfg(not(feature = "control-plane"))]
async fn start_control_plane(
    _config: &AgentConfig,
    _identity: &Identity,
) -> Result<CpAccess, AgentError> {
    Err(AgentError::NoControlPlane)
}

/// A CP member starts its Raft node here; any other member joins through the `--join`
/// addresses and becomes a client of the control-plane members the answer lists.
async fn reach_control_plane(
    config: &AgentConfig,
    identity: &Identity,
    store: &MemberStore,
    client: &InternalClient,
    shutdown: &CancellationToken,
) -> Result<(CpAccess, Option<JoinAccepted>), AgentError> {
    if config.control_plane {
        Ok((start_control_plane(config, identity).await?, None))
    } else {
        let request = JoinRequest {
            member: member_info(config, config.advertise, identity, identity.generation),
            token: config.join_token.clone(),
            cluster_proof: config.cluster_secret(),
            epoch: store.epoch()?,
        };
        let wait = config.request_timeout + Duration::from_secs(2);
        let accepted = join_cluster(
            &config.join,
            request,
            client,
            wait,
            Duration::from_secs(60),
            shutdown,
        )
        .await
        .map_err(|(code, message)| AgentError::JoinRejected { code, message })?;
        if let Err(e) = store.set_epoch(accepted.epoch) {
            tracing::warn!(error = %e, "cannot persist the epoch");
        }
        // The control-plane members the join answer listed, in this member's order of
        // preference (rendezvous hashing, DESIGN.md §6f), then the --join addresses: a
        // cluster that is still forming may not have admitted its CP members yet, and a
        // member with no endpoint could never learn one. The membership view refines the
        // order (bounded loads, `cp_choice`) once the feed is followed.
        let cp_client = CpClient::new(
            client.clone(),
            identity.id,
            cp_endpoints(&accepted.members),
            config.join.clone(),
            config.request_timeout,
        );
        Ok((CpAccess::Client(Box::new(cp_client)), Some(accepted)))
    }
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
            .map_err(|source| AgentError::Bind { addr: bind, source })?;
        let gossip_cancel = CancellationToken::new();
        let gossip_bind = SocketAddr::new(config.bind, config.gossip_port);
        let socket = tokio::net::UdpSocket::bind(gossip_bind)
            .await
            .map_err(|source| AgentError::Bind {
                addr: gossip_bind,
                source,
            })?;
        let client = InternalClient::new(config.cluster_secret(), config.client_tls());
        let (cp, joined) =
            reach_control_plane(&config, &identity, &store, &client, &shutdown).await?;
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
            tls: config.client_tls(),
            data_dir: config.data_dir.clone(),
            nginx: config.nginx.clone(),
            backup: config.backup.clone(),
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
            incarnation: Incarnation::new(
                identity.generation,
                config_advertise,
                store.clone(),
                joined.as_ref().map(|j| j.index),
            ),
            identity,
            cp,
            store,
            gossip,
            membership: Membership::new(view),
            bootstrapped: AtomicBool::new(false),
            roles,
            join_outcomes: Default::default(),
            http_answers: Default::default(),
            shutdown: shutdown.clone(),
            listener_counters: Arc::default(),
            acl: Default::default(),
        });

        let mut app = role_routes;
        if let Some(cp_routes) = start_membership(&agent, joined.as_ref(), &tasks, &shutdown) {
            app = app.merge(cp_routes);
        }
        tasks.spawn(
            announce_to_registry_members(agent.clone(), shutdown.child_token()).in_current_span(),
        );
        tasks.spawn(
            handle_gossip_events(agent.clone(), gossip_events, shutdown.child_token())
                .in_current_span(),
        );
        tasks.spawn(
            crate::cp::feed::follow(agent.clone(), shutdown.child_token()).in_current_span(),
        );
        tasks.spawn(
            crate::http::acl::refresh(agent.clone(), shutdown.child_token()).in_current_span(),
        );
        tasks.spawn(crate::address::watch(agent.clone(), shutdown.child_token()).in_current_span());

        let app = http_app(&agent, app);
        tracing::info!(%bind, "serving HTTP");
        let served = serve_until_stopped(listener, app, &agent, gossip_cancel, tasks).await;
        tracing::info!("stopped");
        served.map_err(AgentError::Serve)
    }
    .instrument(span)
    .await
}

/// Starts what follows from how this member reached the control plane: a CP member runs its
/// bootstrap, retention and own admission and answers the CP routes (returned); a member that
/// joined announces itself to the members the join answer listed.
fn start_membership(
    agent: &Arc<Agent>,
    joined: Option<&JoinAccepted>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Option<Router> {
    #[cfg(not(feature = "control-plane"))]
    let _ = (tasks, shutdown);
    match (agent.cp.as_ref(), joined) {
        #[cfg(feature = "control-plane")]
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
            tasks.spawn(
                cp.clone()
                    .run_leases(shutdown.child_token())
                    .in_current_span(),
            );
            if let Some(grace) = agent.config.fail_unheard_after {
                let every = crate::cp::admission::announce_period(agent.config.gossip_profile);
                tasks.spawn(
                    crate::cp::unheard::report_unheard(
                        agent.clone(),
                        grace,
                        every,
                        shutdown.child_token(),
                    )
                    .in_current_span(),
                );
            }
            Some(hivemind_control_plane::http::router(cp.clone()))
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
            None
        }
        (CpAccess::Client(_), None) => unreachable!("a client member has joined"),
    }
}

/// Every HTTP route this member serves (`app`: the roles' and the control plane's), behind the
/// admin-token check and the access log.
fn http_app(agent: &Arc<Agent>, app: Router) -> Router {
    let member_routes = Router::new()
        .route(ops::Join::PATH, post(join_route))
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/v1/leave", post(post_leave))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{node}", get(node))
        .with_state(agent.clone());
    let metrics = Router::new()
        .route("/metrics", get(crate::http::metrics::route))
        .with_state(crate::http::metrics::registry(agent));
    let document = crate::http::openapi::document(agent.config.control_plane, &agent.config.roles);
    let document = Router::new()
        .route("/v1/openapi.json", get(crate::http::openapi::route))
        .with_state(Arc::new(
            serde_json::to_string(&document).expect("the OpenAPI document serializes"),
        ));
    app.merge(member_routes)
        .merge(crate::http::keygroups_api::routes(agent.clone()))
        .merge(crate::http::catalog::routes(agent.clone()))
        .merge(crate::http::backup_api::routes(agent.clone()))
        .merge(crate::http::acl_api::routes(agent.clone()))
        .merge(crate::http::dashboard::routes(agent.clone()))
        .merge(metrics)
        .merge(document)
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            crate::http::acl::enforce,
        ))
        .layer(axum::middleware::from_fn_with_state(
            agent.config.tls.is_some(),
            require_member_certificate,
        ))
        .layer(crate::http::access_log::layer(agent.http_answers.clone()))
}

/// How long requests in flight may finish once the member stops serving.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves until the agent's shutdown, then stops in order: commit Leave (while this member
/// still serves the others' Raft and forwarding traffic), leave the gossip, stop serving, let
/// background tasks notice, stop the CP member.
async fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    app: Router,
    agent: &Arc<Agent>,
    gossip_cancel: CancellationToken,
    tasks: TaskTracker,
) -> std::io::Result<()> {
    let listener = Listener::start(
        listener,
        agent.config.tls.clone(),
        agent.listener_counters.clone(),
    )?;
    let stopping = {
        let (agent, gossip_cancel) = (agent.clone(), gossip_cancel.clone());
        let shutdown = agent.shutdown.clone();
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
        served = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(stopping) => served,
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
    #[cfg(feature = "control-plane")]
    if let CpAccess::Member(cp) = agent.cp.as_ref() {
        cp.shutdown().await;
    }
    served
}
