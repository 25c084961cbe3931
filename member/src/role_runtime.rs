//! The role runtime: loads the roles named by `--roles`, starts each with its
//! [`RoleContext`], mounts its routes under `/v1/roles/<name>/`, and feeds it membership
//! changes in feed order. The translation from registry events to role events is a pure
//! function ([`role_events`]), tested without a runtime.

use std::sync::Arc;

use hivemind_common::role::{
    HistogramSample, HostRecords, Me, Membership, Node, Peer, PeerState, Role, RoleContext,
    RoleEvent, RoleHealth, RoleMetrics, RoleSettings, Sample,
};
use hivemind_control_plane::registry::{Event, EventKind, MemberRecord, MemberState, NodeConfig};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cp::cp_access::RoleCp;
use crate::identity::{IdentityError, MemberStore};
use crate::view::MembershipView;

/// The role implementation behind a `--roles` name.
pub fn load(name: &str) -> Option<Box<dyn Role>> {
    match name {
        "host" => Some(Box::new(hivemind_host_role::HostRole)),
        "dns" => Some(Box::new(hivemind_dns_role::DnsRole)),
        "trigger" => Some(Box::new(hivemind_trigger_role::TriggerRole)),
        "nginx" => Some(Box::new(hivemind_nginx_role::NginxRole)),
        "backup" => Some(Box::new(hivemind_backup_role::BackupRole)),
        _ => None,
    }
}

/// The OpenAPI document of a role's routes.
pub fn openapi(name: &str) -> Option<utoipa::openapi::OpenApi> {
    match name {
        "host" => Some(hivemind_host_role::openapi()),
        "dns" => Some(hivemind_dns_role::openapi()),
        "trigger" => Some(hivemind_trigger_role::openapi()),
        "nginx" => Some(hivemind_nginx_role::openapi()),
        "backup" => Some(hivemind_backup_role::openapi()),
        _ => None,
    }
}

pub fn peer(record: &MemberRecord) -> Peer {
    Peer {
        id: record.info.id,
        name: record.info.name.clone(),
        node: record.info.node.clone(),
        roles: record.info.roles.clone(),
        http_addr: record.info.http_addr.clone(),
        gossip_addr: record.info.gossip_addr.clone(),
        generation: record.info.generation,
        state: match record.state {
            MemberState::Alive => PeerState::Alive,
            MemberState::Failed => PeerState::Failed,
            MemberState::Left => PeerState::Left,
        },
    }
}

fn node(config: &NodeConfig) -> Node {
    Node {
        node: config.node.clone(),
        machines: config.machines.clone(),
        version: config.version,
    }
}

pub fn membership(view: &MembershipView) -> Membership {
    Membership {
        epoch: view.epoch,
        index: view.index,
        peers: view.members.values().map(peer).collect(),
        nodes: view.nodes.values().map(node).collect(),
    }
}

/// What roles hear about `events`, just applied to `view` (which already reflects them).
pub fn role_events(events: &[Event], view: &MembershipView) -> Vec<RoleEvent> {
    events
        .iter()
        .filter_map(|event| {
            let index = event.index;
            match &event.kind {
                EventKind::MemberJoined { member } => Some(RoleEvent::Joined {
                    index,
                    peer: Peer {
                        state: PeerState::Alive,
                        ..peer(&MemberRecord {
                            info: member.clone(),
                            state: MemberState::Alive,
                            updated_index: index,
                        })
                    },
                }),
                EventKind::MemberLeft { id, .. } => Some(RoleEvent::Gone {
                    index,
                    id: *id,
                    state: PeerState::Left,
                }),
                EventKind::MemberFailed { id, .. } => Some(RoleEvent::Gone {
                    index,
                    id: *id,
                    state: PeerState::Failed,
                }),
                EventKind::MemberAddressChanged { id, .. } => {
                    view.members
                        .get(id)
                        .map(|record| RoleEvent::AddressChanged {
                            index,
                            peer: peer(record),
                        })
                }
                EventKind::NodeConfigUpdated {
                    node,
                    version,
                    machines,
                } => Some(RoleEvent::NodeChanged {
                    index,
                    node: Node {
                        node: node.clone(),
                        machines: machines.clone(),
                        version: *version,
                    },
                }),
                // A new epoch reaches roles as `Rebootstrapped` once the view is rebuilt.
                EventKind::EpochStarted { .. } | EventKind::AclChanged { .. } => None,
                EventKind::RoleReported {
                    member,
                    name,
                    report,
                } => Some(RoleEvent::Reported {
                    index,
                    member: *member,
                    name: name.clone(),
                    report: report.clone(),
                }),
                EventKind::KeygroupCreated { name, version }
                | EventKind::KeygroupUpdated { name, version } => {
                    Some(RoleEvent::KeygroupChanged {
                        index,
                        name: name.clone(),
                        version: *version,
                        deleted: false,
                    })
                }
                EventKind::KeygroupDeleted { name, version } => Some(RoleEvent::KeygroupChanged {
                    index,
                    name: name.clone(),
                    version: *version,
                    deleted: true,
                }),
                EventKind::ResponsibilityClaimed {
                    node,
                    keygroup,
                    machine,
                    ..
                } => Some(RoleEvent::ResponsibilityChanged {
                    index,
                    node: node.clone(),
                    keygroup: keygroup.clone(),
                    machine: Some(*machine),
                }),
                EventKind::ResponsibilityReleased { node, keygroup, .. } => {
                    Some(RoleEvent::ResponsibilityChanged {
                        index,
                        node: node.clone(),
                        keygroup: keygroup.clone(),
                        machine: None,
                    })
                }
            }
        })
        .collect()
}

struct Running {
    name: String,
    metrics: Option<Arc<dyn RoleMetrics>>,
    events: mpsc::UnboundedSender<RoleEvent>,
    health: watch::Receiver<Vec<String>>,
}

/// The started roles and the channels that feed them.
pub struct Roles {
    running: Vec<Running>,
    membership: watch::Sender<Arc<Membership>>,
    me: watch::Sender<Me>,
    /// The host records of the first consuming role (the catalog serves them).
    records: Option<Arc<dyn HostRecords>>,
}

/// What every role of this member shares: who it is, how it reaches the CP, its settings.
pub struct RoleBasis {
    pub names: Vec<String>,
    pub settings: RoleSettings,
    pub cp: RoleCp,
    pub me: Me,
}

impl Roles {
    /// Starts the roles named in `basis` (validated by the CLI) on `tasks`; answers the
    /// runtime and the router of every role's routes, nested under `/v1/roles/<name>` and
    /// `/internal/v1/roles/<name>`.
    pub fn start(
        basis: RoleBasis,
        view: &MembershipView,
        store: &MemberStore,
        shutdown: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<(Self, axum::Router), IdentityError> {
        let RoleBasis {
            names,
            settings,
            cp,
            me,
        } = basis;
        let (membership, _) = watch::channel(Arc::new(membership(view)));
        let (me, _) = watch::channel(me);
        let cp: Arc<RoleCp> = Arc::new(cp);
        let mut router = axum::Router::new();
        let mut running = Vec::new();
        let mut records = None;
        for name in &names {
            let Some(role) = load(name) else {
                tracing::error!(role = %name, "unknown role; not loaded");
                continue;
            };
            let (events_tx, events) = mpsc::unbounded_channel();
            let (health, health_rx) = RoleHealth::new();
            let started = role.start(RoleContext {
                me: me.subscribe(),
                membership: membership.subscribe(),
                events,
                cp: cp.clone(),
                settings: settings.clone(),
                store: store.role_store(name)?,
                health,
                shutdown: shutdown.child_token(),
            });
            // A role stops at shutdown even when it is awaiting something slow (a CP call
            // while the control plane itself is stopping).
            let stop = shutdown.clone();
            if records.is_none() {
                records = started.records.clone();
            }
            let task = started.task;
            tasks.spawn(
                async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = task => {}
                    }
                }
                .instrument(tracing::info_span!("role", role = %name)),
            );
            router = router.nest(&format!("/v1/roles/{name}"), started.routes);
            if let Some(consul_agent) = started.consul_agent {
                router = router.merge(consul_agent);
            }
            let secret = settings.cluster_secret.clone();
            router = router.nest(
                &format!("/internal/v1/roles/{name}"),
                started.internal.layer(axum::middleware::from_fn(
                    move |request: axum::extract::Request, next: axum::middleware::Next| {
                        crate::http::auth::require_cluster_secret(secret.clone(), request, next)
                    },
                )),
            );
            running.push(Running {
                name: name.clone(),
                metrics: started.metrics.clone(),
                events: events_tx,
                health: health_rx,
            });
            tracing::info!(role = %name, "role started");
        }
        Ok((
            Self {
                running,
                membership,
                me,
                records,
            },
            router,
        ))
    }

    /// The host records a consuming role of this member holds (`None` without one).
    pub fn host_records(&self) -> Option<Arc<dyn HostRecords>> {
        self.records.clone()
    }

    /// The membership as the roles see it now, and its changes.
    pub fn membership(&self) -> Arc<Membership> {
        self.membership.borrow().clone()
    }

    pub fn membership_changes(&self) -> watch::Receiver<Arc<Membership>> {
        self.membership.subscribe()
    }

    fn send(&self, events: &[RoleEvent]) {
        for role in &self.running {
            for event in events {
                // A role whose task ended no longer listens; nothing to deliver to.
                let _ = role.events.send(event.clone());
            }
        }
    }

    /// `events` were just applied to `view`: update the membership first, then tell the roles.
    pub fn applied(&self, events: &[Event], view: &MembershipView) {
        self.membership.send_replace(Arc::new(membership(view)));
        self.send(&role_events(events, view));
    }

    pub fn rebootstrapped(&self, view: &MembershipView) {
        let membership = Arc::new(membership(view));
        self.membership.send_replace(membership.clone());
        self.send(&[RoleEvent::Rebootstrapped { membership }]);
    }

    pub fn address_changed(&self, me: Me) {
        self.me.send_replace(me.clone());
        self.send(&[RoleEvent::SelfAddressChanged { me }]);
    }

    /// Every role's metric samples, with the role's name.
    pub fn metrics(&self) -> Vec<(String, Vec<Sample>)> {
        self.running
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.metrics.as_ref()?.samples())))
            .collect()
    }

    pub fn histograms(&self) -> Vec<(String, Vec<HistogramSample>)> {
        self.running
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.metrics.as_ref()?.histograms())))
            .collect()
    }

    /// What the roles wait for, as `role:<name>:<reason>`.
    pub fn waiting_for(&self) -> Vec<String> {
        self.running
            .iter()
            .flat_map(|r| {
                r.health
                    .borrow()
                    .iter()
                    .map(|reason| format!("role:{}:{reason}", r.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::MemberId;
    use hivemind_control_plane::member_requests::{self, MemberRequest};
    use hivemind_control_plane::registry::{MemberInfo, Registry, RegistryDigest};

    fn info(id: u64) -> MemberInfo {
        MemberInfo {
            id: MemberId::new(id).unwrap(),
            name: format!("m{id}"),
            node: format!("n{id}"),
            roles: vec!["host".into()],
            http_addr: format!("127.0.0.1:{}", 7000 + id),
            gossip_addr: format!("127.0.0.1:{}", 8000 + id),
            generation: 1,
            control_plane: false,
        }
    }

    /// Applies `commands` to a registry and a view that follows its feed; answers the role
    /// events of the last command.
    fn run(requests: &[MemberRequest]) -> Vec<RoleEvent> {
        let commands: Vec<_> = requests
            .iter()
            .map(|r| member_requests::command(r.clone(), 0).expect("one command"))
            .collect();
        let mut registry = Registry::default();
        let mut view = MembershipView::from_digest(RegistryDigest::of(&registry, 0));
        let mut last = Vec::new();
        for (i, command) in commands.iter().enumerate() {
            let index = i as u64 + 1;
            registry.apply(index, command).unwrap();
            let page = hivemind_control_plane::registry::FeedPage {
                epoch: registry.epoch(),
                first_index: 0,
                applied_index: index,
                next_after: index,
                events: registry
                    .events_after(index - 1, None, 100)
                    .unwrap()
                    .to_vec(),
            };
            let crate::view::PageOutcome::Applied(events) = view.apply_page(&page) else {
                panic!("same epoch")
            };
            last = role_events(&events, &view);
        }
        last
    }

    #[test]
    fn a_failed_member_reaches_roles_as_gone_after_its_node_shrank() {
        let id = MemberId::new(1).unwrap();
        let events = run(&[
            MemberRequest::Admit { member: info(1) },
            MemberRequest::ReportFailed { id, generation: 1 },
        ]);
        assert!(events.contains(&RoleEvent::Gone {
            index: 2,
            id,
            state: PeerState::Failed
        }));
        assert!(events
            .iter()
            .any(|e| matches!(e, RoleEvent::NodeChanged { node, .. } if node.machines.is_empty())));
    }

    #[test]
    fn an_address_change_carries_the_new_address() {
        let id = MemberId::new(1).unwrap();
        let events = run(&[
            MemberRequest::Admit { member: info(1) },
            MemberRequest::MoveAddress {
                id,
                generation: 2,
                http_addr: "127.0.0.2:7001".into(),
                gossip_addr: "127.0.0.2:8001".into(),
            },
        ]);
        assert!(matches!(
            &events[..],
            [RoleEvent::AddressChanged { peer, .. }] if peer.http_addr == "127.0.0.2:7001" && peer.generation == 2
        ));
    }

    #[test]
    fn a_join_is_announced_alive() {
        let events = run(&[MemberRequest::Admit { member: info(1) }]);
        assert!(
            matches!(&events[0], RoleEvent::Joined { peer, .. } if peer.state == PeerState::Alive && peer.roles == ["host"])
        );
    }
}
