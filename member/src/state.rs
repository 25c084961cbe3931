//! The agent's shared state ([`Agent`]): what its HTTP handlers and background tasks share
//! (identity, the control-plane access, gossip, the membership view, the roles) and the
//! counters they keep. Every module that serves or runs part of an agent takes an `Agent`;
//! none of them is imported back here, so the member's modules form no cycle.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hivemind_common::role::Me;
use hivemind_control_plane::network::InternalClient;
use hivemind_control_plane::registry::MemberInfo;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::cp::cp_access::CpAccess;
use crate::gossip::Gossip;
use crate::identity::{Identity, MemberStore};
use crate::role_runtime::Roles;
use crate::view::MembershipView;

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
    /// Whether `/v1/status` found this member ready once: from then on the roles it needs to
    /// bootstrap are no longer waited for (`common::role_specs`).
    pub(crate) bootstrapped: AtomicBool,
    pub(crate) roles: Roles,
    pub(crate) counters: FeedCounters,
    pub(crate) join_outcomes: JoinOutcomes,
    pub(crate) http_answers: Arc<crate::http::access_log::HttpAnswers>,
    /// The address advertised now (changed by the address watchdog).
    pub(crate) advertise: std::sync::RwLock<IpAddr>,
    /// Cancelled to stop this member (signals, `POST /v1/leave`).
    pub(crate) shutdown: CancellationToken,
    /// What the HTTP listener refused (failed TLS handshakes), for `/metrics`.
    pub(crate) listener_counters: Arc<hivemind_tls::listener::ListenerCounters>,
    /// This member's copy of the ACL table, which it enforces.
    pub(crate) acl: crate::http::acl_cache::AclCache,
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

pub(crate) fn member_info(
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

/// Join answers this member gave, by outcome (`accepted` or the rejection's code).
#[derive(Debug, Default)]
pub struct JoinOutcomes(Mutex<BTreeMap<String, u64>>);

impl JoinOutcomes {
    pub fn record(&self, outcome: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome.to_string())
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
