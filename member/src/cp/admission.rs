//! How members get in and stay known: the join route every member serves, this member's own
//! admission (`Join`) and `Leave`, SWIM's verdicts carried to the control plane, and registry
//! members SWIM does not know announced to.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::response::IntoResponse;
use hivemind_common::backoff::Backoff;
#[cfg(feature = "control-plane")]
use hivemind_control_plane::authority;
use hivemind_control_plane::authority::Caller;
use hivemind_control_plane::http::ApiError;
use hivemind_control_plane::member_requests::MemberRequest;
use hivemind_control_plane::registry::CommandOutput;
use hivemind_control_plane::CpError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cp::cp_access::CpAccess;
use crate::cp::join::{cp_endpoints, outside_cp, JoinAccepted, JoinRequest};
use crate::gossip::{GossipCommand, GossipEvent, GossipId, Profile};

use crate::state::Agent;

/// `/internal/v1/join` on every member: a CP member has its control plane decide the request
/// (`ControlPlane::join`); any other member forwards it to the control plane.
///
/// With certificates a join names the caller itself (`authority::may_join`), and a member
/// outside the control plane does not speak for another: it sends the joiner to the
/// control-plane members (`join_elsewhere`), and the joiner asks them with its own certificate.
pub(crate) async fn join_route(
    State(agent): State<Arc<Agent>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let request: JoinRequest = match hivemind_common::decode(&body) {
        Ok(request) => request,
        Err(e) => {
            return ApiError::bad_request(format!("malformed join request: {e}")).into_response()
        }
    };
    let answer: Result<JoinAccepted, CpError> = match agent.cp.as_ref() {
        // The control plane decides who may join, and the certificate says who is asking.
        #[cfg(feature = "control-plane")]
        CpAccess::Member(cp) => match authority::may_join(&request.member, &caller) {
            Ok(()) => cp.join(request).await,
            Err(denied) => Err(denied.into()),
        },
        CpAccess::Client(client) if caller != Caller::SharedSecret => Err(CpError::JoinElsewhere {
            control_plane: client.endpoints(),
        }),
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

/// Commits `Leave` for this member (within the bounded wait; without a quorum the member leaves
/// anyway and SWIM reports it down instead).
pub(crate) async fn leave(agent: &Agent) {
    if !agent.incarnation.is_admitted() {
        return;
    }
    match agent
        .cp
        .apply(MemberRequest::Leave {
            id: agent.identity.id,
        })
        .await
    {
        Ok(_) => tracing::info!("left the cluster"),
        Err(e) => tracing::warn!(error = %e, "could not commit Leave; leaving anyway"),
    }
}

/// Commits this member's `Join` (its current incarnation) so that the registry lists it.
pub(crate) async fn admit(agent: Arc<Agent>, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let admit = MemberRequest::Admit {
            member: agent.info(),
        };
        match agent.cp.apply(admit).await {
            Ok(applied) => {
                let mut index = None;
                if let CommandOutput::Joined { epoch, index: at } = applied.output {
                    if let Err(e) = agent.store.set_epoch(epoch) {
                        tracing::warn!(error = %e, "cannot persist the epoch");
                    }
                    tracing::info!(epoch, index = at, "admitted to the registry");
                    index = Some(at);
                }
                agent.incarnation.admitted(index);
                return;
            }
            Err(e) => tracing::warn!(error = %e, code = e.code(), "admission failed; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}

/// Registry members unknown to SWIM announced to per round.
pub(crate) const ANNOUNCES_PER_ROUND: usize = 4;

/// How often registry members unknown to SWIM are announced to.
pub(crate) fn announce_period(profile: Profile) -> Duration {
    match profile {
        Profile::Local => Duration::from_millis(500),
        Profile::Lan => Duration::from_secs(2),
    }
}

/// Keeps the SWIM view in step with the registry (as the feed's membership view holds it):
/// live registry members that gossip does not know (yet, or any more) are announced to,
/// periodically.
pub(crate) async fn announce_to_registry_members(agent: Arc<Agent>, cancel: CancellationToken) {
    let every = announce_period(agent.config.gossip_profile);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // The membership view the feed keeps current: no control-plane call per round.
        let registry = agent.membership.view();
        if let Some(client) = agent.cp.client() {
            let infos = || registry.live_members().map(|m| &m.info);
            client.set_endpoints(cp_endpoints(infos()), outside_cp(infos()));
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
pub(crate) async fn handle_gossip_events(
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
                let fail = MemberRequest::ReportFailed {
                    id: id.id,
                    generation: id.generation,
                };
                // Under a partition every attempt from the minority side fails: one line when
                // the attempts are spent, not one per attempt (the other side reports it too).
                const ATTEMPTS: u32 = 5;
                for attempt in 0..ATTEMPTS {
                    match agent.cp.apply(fail.clone()).await {
                        Ok(applied) => {
                            tracing::info!(member = %id.id, generation = id.generation, outcome = ?applied.output, "reported a down member");
                            break;
                        }
                        Err(e) if attempt + 1 == ATTEMPTS => {
                            tracing::warn!(member = %id.id, error = %e, attempts = ATTEMPTS, "cannot report a down member; giving up (members that reach a quorum report it)");
                        }
                        Err(e) => {
                            tracing::debug!(member = %id.id, error = %e, attempt, "cannot report a down member; retrying");
                            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                        }
                    }
                }
            }
            GossipEvent::Renewed(id) => {
                // The cluster's recovery from a partition, not something to act on: the
                // failure is in the event feed already.
                tracing::info!(
                    generation = id.generation,
                    "declared down by the cluster; rejoining as a new incarnation"
                );
                agent.incarnation.renewed(id.generation);
                tokio::spawn(admit(agent.clone(), cancel.child_token()).in_current_span());
            }
        }
    }
}
