//! The member's own HTTP routes: `GET /v1/status`, `/v1/members`, `/v1/nodes`, `POST
//! /v1/leave`, and their OpenAPI document.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hivemind_control_plane::http::views::{ErrorBody, MachineView, MemberView, NodeView};
use hivemind_control_plane::http::{views, ApiError};
use hivemind_control_plane::ops::ViewAt;
use hivemind_control_plane::registry::{MemberState, RegistryDigest};
use hivemind_control_plane::Health;

use crate::state::Agent;

/// The member's own routes, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(status, members, post_leave, nodes, node, crate::http::metrics::route),
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
pub(crate) async fn post_leave(State(agent): State<Arc<Agent>>) -> (StatusCode, Json<Leaving>) {
    agent.shutdown.cancel();
    (StatusCode::ACCEPTED, Json(Leaving { leaving: true }))
}

/// This member's gossip counters in `/v1/status`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct GossipStatus {
    /// Other members SWIM does not consider down.
    pub members: usize,
    pub packets_in: u64,
    pub packets_out: u64,
    pub dropped_unopened: u64,
}

/// This member's feed position in `/v1/status`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FeedStatus {
    pub epoch: u64,
    pub index: u64,
    pub caught_up: bool,
    pub events_applied: u64,
    pub errors: u64,
    pub rebootstraps: u64,
}

/// `GET /v1/status`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    /// Who this member trusts inside the cluster: `tls+identity`, `shared-secret` or `open`
    /// (DESIGN.md §6e-2).
    #[serde(default)]
    pub trust: String,
}

/// This member: identity, readiness and why not, gossip, feed, control plane.
#[utoipa::path(get, path = "/v1/status", tag = "members",
    responses((status = 200, description = "This member's status", body = StatusView)))]
pub(crate) async fn status(State(agent): State<Arc<Agent>>) -> Json<StatusView> {
    let cp = agent.cp.status().await;
    let admitted = agent.incarnation.is_admitted();
    let mut waiting_for = Vec::new();
    if cp.as_ref().map(|s| s.health) != Some(Health::Healthy) {
        waiting_for.push("control_plane_quorum".to_string());
    }
    if !admitted {
        waiting_for.push("admission".to_string());
    }
    let caught_up = agent.membership.caught_up();
    if !caught_up {
        waiting_for.push("event_feed".to_string());
    }
    waiting_for.extend(agent.roles.waiting_for());
    // One registry read serves both the epoch and the role requirements (for a member outside
    // the control plane it is a remote call).
    let registry = agent
        .cp
        .view(&agent.config.node, ViewAt::Applied(0))
        .await
        .ok();
    if let Some(registry) = &registry {
        let live = registry
            .members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .flat_map(|m| m.info.roles.iter().map(String::as_str));
        waiting_for.extend(hivemind_common::role_specs::missing_requirements(
            &agent.config.roles,
            live,
            agent.bootstrapped.load(Ordering::Relaxed),
        ));
    }
    // Needs for bootstrap are waited for until the member was ready once.
    if waiting_for.is_empty() && registry.is_some() {
        agent.bootstrapped.store(true, Ordering::Relaxed);
    }
    let epoch = registry.map(|r| r.epoch);
    let info = agent.info();
    let view = agent.membership.view();
    let counts = agent.membership.counts();
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
            events_applied: counts.events_applied,
            errors: counts.errors,
            rebootstraps: counts.rebootstraps,
        },
        waiting_for,
        control_plane: cp,
        trust: agent.config.trust_mode().to_string(),
    })
}

/// This member's view of the registry, or a 503 when no control-plane member answers.
pub(crate) async fn registry(agent: &Agent) -> Result<RegistryDigest, ApiError> {
    agent
        .cp
        .view(&agent.config.node, ViewAt::Applied(0))
        .await
        .map_err(ApiError::from)
}

/// `GET /v1/members`: the registry's members, with the state SWIM sees for the live ones
/// (`suspect`, or `failed` before the registry recorded it).
#[utoipa::path(get, path = "/v1/members", tag = "members",
    responses((status = 200, description = "Every member the registry knows", body = [MemberView]),
        (status = 503, description = "No control plane reachable", body = ErrorBody)))]
pub(crate) async fn members(
    State(agent): State<Arc<Agent>>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    let registry = registry(&agent).await?;
    let swim_view = agent.gossip.view.borrow().clone();
    let list = registry
        .members
        .iter()
        .map(|m| {
            let mut view = views::member(m);
            view.state = seen_state(&agent, &swim_view, m).into();
            view
        })
        .collect();
    Ok(Json(list))
}

/// A member's state as this member sees it: the registry's, or for a member the registry
/// holds alive, what SWIM says of it here (`suspect`, or `failed` before the registry
/// recorded it).
pub(crate) fn seen_state(
    agent: &Agent,
    swim_view: &crate::gossip::runtime::View,
    m: &hivemind_control_plane::registry::MemberRecord,
) -> &'static str {
    if m.state == MemberState::Alive && m.info.id != agent.identity.id {
        if let Some((seen, swim)) = swim_view.get(&m.info.id) {
            if seen.generation >= m.info.generation {
                return match swim {
                    foca::State::Alive => "alive",
                    foca::State::Suspect => "suspect",
                    foca::State::Down => "failed",
                };
            }
        }
    }
    m.state.as_str()
}

/// A member's name as the registry lists it.
pub(crate) fn name_in(
    registry: &RegistryDigest,
) -> impl Fn(hivemind_common::MemberId) -> Option<String> + '_ {
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
pub(crate) async fn nodes(
    State(agent): State<Arc<Agent>>,
) -> Result<Json<Vec<NodeView>>, ApiError> {
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
pub(crate) async fn node(
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
