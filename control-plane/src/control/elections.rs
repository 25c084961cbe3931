//! The election driver: when a CP member campaigns (IO edge of [`crate::pre_vote`]).
//!
//! openraft's own election timer is off (`enable_elect: false`). One task per member checks
//! every heartbeat interval whether its leader has been silent for the lease plus a randomized
//! election timeout; if so it asks every other voter for a pre-vote and triggers a real
//! election only when a majority of every voter configuration would grant it. The voters answer
//! on the internal operation `ops::PreVote` ([`answer`]). The outcome also tells whether a
//! follower is cut off from a majority (`pre_vote::follower_cut_off`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use openraft::ServerState;
use rand::Rng;

use crate::control::ControlPlane;
use crate::ops;
use crate::pre_vote::{self, PreVoteAnswer, PreVoteRequest, RoundOutcome, VoterView};
use crate::types::{CpNode, NodeId};
use openraft::Membership;

/// What the driver learned, for the request paths and `/metrics`.
#[derive(Debug, Default)]
pub struct ElectionState {
    /// The last pre-vote round of this member could not reach a majority (cleared once it
    /// hears a leader, leads, or stops being a voter).
    last_round_unreachable: AtomicBool,
    pre_votes: AtomicU64,
    pre_votes_won: AtomicU64,
    /// This member's pre-vote request while it asks for pre-votes.
    asking: std::sync::Mutex<Option<PreVoteRequest>>,
}

impl ElectionState {
    fn asking(&self) -> std::sync::MutexGuard<'_, Option<PreVoteRequest>> {
        self.asking.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this member's last pre-vote round could not reach a majority.
    pub fn last_round_unreachable(&self) -> bool {
        self.last_round_unreachable.load(Ordering::Relaxed)
    }

    /// Pre-vote rounds this member ran, and those a majority granted (each became an election).
    pub fn pre_votes(&self) -> (u64, u64) {
        (
            self.pre_votes.load(Ordering::Relaxed),
            self.pre_votes_won.load(Ordering::Relaxed),
        )
    }
}

/// A voter's answer to a pre-vote request.
pub(crate) fn answer(cp: &ControlPlane, request: &PreVoteRequest) -> PreVoteAnswer {
    let lease = lease_ms(cp);
    let metrics = cp.raft().metrics().borrow().clone();
    let leader_heard_ms_ago = match metrics.state {
        // A leader is a leader heard: it never helps to depose itself.
        ServerState::Leader => 0,
        _ => cp.leader_silence_ms(),
    };
    let last_log = cp.raft().data_metrics().borrow().last_log;
    // A candidate campaigns as much as a member asking for pre-votes does.
    let asking = match metrics.state {
        ServerState::Candidate => Some(PreVoteRequest {
            candidate: cp.config().id,
            last_log,
        }),
        _ => cp.elections().asking().clone(),
    };
    let voter = VoterView {
        last_log,
        leader_heard_ms_ago,
        asking,
    };
    let granted = pre_vote::grant(request, &voter, lease);
    tracing::debug!(candidate = request.candidate, granted, "pre-vote asked");
    PreVoteAnswer { granted }
}

/// The leader lease of openraft's engine (its maximum election timeout), in milliseconds.
pub(crate) fn lease_ms(cp: &ControlPlane) -> u64 {
    cp.config().election_timeout.1.as_millis() as u64
}

/// Runs until the control plane is dropped.
pub(crate) async fn run(cp: Weak<ControlPlane>) {
    let mut timeout_ms = None;
    let mut last_attempt: Option<tokio::time::Instant> = None;
    loop {
        let Some(cp) = cp.upgrade() else { return };
        let tick = cp.config().heartbeat_interval;
        let (min, max) = cp.config().election_timeout;
        let timeout = *timeout_ms.get_or_insert_with(|| random_timeout(min, max));
        let metrics = cp.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let me = cp.config().id;
        let state = cp.elections();
        if metrics.state == ServerState::Leader || !membership.voter_ids().any(|v| v == me) {
            // A leader is its own leader contact: once deposed it waits a full timeout.
            if metrics.state == ServerState::Leader {
                cp.note_leader_contact();
            }
            state.last_round_unreachable.store(false, Ordering::Relaxed);
        } else {
            let silent = cp.leader_silence_ms();
            if silent < lease_ms(&cp) {
                // A leader heard since the failed round: that round is history.
                state.last_round_unreachable.store(false, Ordering::Relaxed);
            }
            let since_attempt = last_attempt.map(|t| t.elapsed().as_millis() as u64);
            if pre_vote::election_due(silent, since_attempt, lease_ms(&cp), timeout) {
                last_attempt = Some(tokio::time::Instant::now());
                timeout_ms = None;
                let outcome = pre_vote_round(&cp, membership, min).await;
                // A leader heard, or a vote granted, while the round ran: stand down.
                let won = outcome == RoundOutcome::Won && cp.leader_silence_ms() >= silent;
                state.pre_votes.fetch_add(1, Ordering::Relaxed);
                state
                    .last_round_unreachable
                    .store(outcome == RoundOutcome::Unreachable, Ordering::Relaxed);
                if won {
                    state.pre_votes_won.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(silent_ms = silent, "pre-vote won: starting an election");
                    if let Err(e) = cp.raft().trigger().elect().await {
                        tracing::debug!(error = %e, "no election: Raft stopped");
                        return;
                    }
                } else {
                    tracing::debug!(silent_ms = silent, ?outcome, "pre-vote not won");
                }
            }
        }
        drop(cp);
        tokio::time::sleep(tick).await;
    }
}

fn random_timeout(min: Duration, max: Duration) -> u64 {
    let (min, max) = (min.as_millis() as u64, max.as_millis() as u64);
    rand::thread_rng().gen_range(min..=max.max(min))
}

/// Asks every other voter of `membership` (each within `wait`) whether it would grant; the
/// round's outcome counts this member as answering and granting.
async fn pre_vote_round(
    cp: &ControlPlane,
    membership: &Membership<NodeId, CpNode>,
    wait: Duration,
) -> RoundOutcome {
    let me = cp.config().id;
    let request = PreVoteRequest {
        candidate: me,
        last_log: cp.raft().data_metrics().borrow().last_log,
    };
    *cp.elections().asking() = Some(request.clone());
    let configs = membership.get_joint_config();
    let others: BTreeSet<u64> = configs
        .iter()
        .flatten()
        .copied()
        .filter(|v| *v != me)
        .collect();
    let asks = others.iter().filter_map(|id| {
        let addr = membership.get_node(id)?.http_addr.clone();
        let request = &request;
        Some(async move {
            let answer = cp.client().op::<ops::PreVote>(&addr, request, wait).await;
            answer.ok().map(|a| (*id, a.granted))
        })
    });
    let answers = futures::future::join_all(asks).await;
    *cp.elections().asking() = None;
    let mut answered: BTreeSet<NodeId> = answers.iter().flatten().map(|(id, _)| *id).collect();
    let mut granted: BTreeSet<NodeId> = answers
        .iter()
        .flatten()
        .filter(|(_, granted)| *granted)
        .map(|(id, _)| *id)
        .collect();
    answered.insert(me);
    granted.insert(me);
    pre_vote::round_outcome(configs, &answered, &granted)
}
