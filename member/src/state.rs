//! The agent's shared state ([`Agent`]): what its HTTP handlers and background tasks share
//! (identity, the control-plane access, gossip, the membership, the roles). Each piece that
//! changes has one owner type with methods that say what happened: [`Incarnation`]
//! (generation, advertised address, admission), [`Membership`] (the view and the feed's
//! counters, written by the feed follower only), `AclCache`, the roles' and gossip's own
//! handles. Every module that serves or runs part of an agent takes an `Agent`; none of them
//! is imported back here, so the member's modules form no cycle.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use hivemind_common::role::Me;
use hivemind_control_plane::network::InternalClient;
use hivemind_control_plane::registry::MemberInfo;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::cp::cp_access::CpAccess;
use crate::gossip::Gossip;
use crate::identity::{Identity, MemberStore};
use crate::incarnation::Incarnation;
use crate::membership::Membership;
use crate::role_runtime::Roles;

/// Shared by the agent's HTTP handlers and background tasks.
pub(crate) struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) identity: Identity,
    /// Generation, advertised address and admission, changed only through its methods.
    pub(crate) incarnation: Incarnation,
    pub(crate) cp: Arc<CpAccess>,
    /// For calls to other members' internal routes (with the cluster secret).
    pub(crate) internal: InternalClient,
    pub(crate) store: MemberStore,
    pub(crate) gossip: Gossip,
    /// The membership as the event feed built it (the feed follower its one writer).
    pub(crate) membership: Membership,
    /// Whether `/v1/status` found this member ready once: from then on the roles it needs to
    /// bootstrap are no longer waited for (`common::role_specs`).
    pub(crate) bootstrapped: AtomicBool,
    pub(crate) roles: Roles,
    pub(crate) join_outcomes: JoinOutcomes,
    pub(crate) http_answers: Arc<crate::http::access_log::HttpAnswers>,
    /// Cancelled to stop this member (signals, `POST /v1/leave`).
    pub(crate) shutdown: CancellationToken,
    /// What the HTTP listener refused (failed TLS handshakes), for `/metrics`.
    pub(crate) listener_counters: Arc<hivemind_tls::listener::ListenerCounters>,
    /// This member's copy of the ACL table, which it enforces.
    pub(crate) acl: crate::http::acl_cache::AclCache,
}

impl Agent {
    pub(crate) fn info(&self) -> MemberInfo {
        member_info(
            &self.config,
            self.incarnation.advertise(),
            &self.identity,
            self.incarnation.generation(),
        )
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
