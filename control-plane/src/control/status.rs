//! `GET /v1/cp/status`, health, and voter changes (executed on the leader).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use super::ControlPlane;
use crate::cp_types::{CpStatus, Health, NodeRef, VoterChange, VoterView};
use crate::error::CpError;
use crate::ops;
use crate::types::{CpNode, NodeId};

impl ControlPlane {
    /// Adds or removes a CP member (on the leader, forwarded when needed).
    pub async fn change_voters(&self, change: VoterChange) -> Result<CpStatus, CpError> {
        self.on_leader::<ops::Admin, _, _, _>(
            self.config.request_timeout * 6,
            || self.local_change_voters(change.clone()),
            &change,
        )
        .await?;
        // Answer with this member's view once it applied the change (the change ran on the
        // leader; a follower would otherwise report the voters of a moment ago).
        self.read_barrier().await?;
        Ok(self.status().await)
    }

    pub(crate) async fn local_change_voters(&self, change: VoterChange) -> Result<(), CpError> {
        let map = |e: RaftError<NodeId, ClientWriteError<NodeId, CpNode>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => CpError::NotLeader {
                leader: f.leader_node.map(|n| n.http_addr),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                CpError::Membership(e.to_string())
            }
            RaftError::Fatal(f) => CpError::Fatal(f.to_string()),
        };
        match change {
            VoterChange::Add { id, node, voter } => {
                self.raft.add_learner(id, node, true).await.map_err(map)?;
                if voter {
                    let ids = BTreeSet::from([id]);
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(ids), false)
                        .await
                        .map_err(map)?;
                }
            }
            VoterChange::Remove { id } => {
                let membership = self.raft.metrics().borrow().membership_config.clone();
                let is_voter = membership.membership().voter_ids().any(|v| v == id);
                let is_node = membership.nodes().any(|(n, _)| *n == id);
                let ids = BTreeSet::from([id]);
                let change = if is_voter {
                    ChangeMembers::RemoveVoters(ids)
                } else if is_node {
                    ChangeMembers::RemoveNodes(ids)
                } else {
                    return Err(CpError::NotFound(format!("{id:016x} is not a CP member")));
                };
                self.raft
                    .change_membership(change, false)
                    .await
                    .map_err(map)?;
            }
        }
        Ok(())
    }

    /// Current Raft view of this member.
    pub async fn status(&self) -> CpStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let commit_index = self
            .raft
            .with_raft_state(|s| s.committed.map_or(0, |l| l.index))
            .await
            .unwrap_or(0);
        let membership = metrics.membership_config.membership();
        let view = |id: &NodeId| {
            let node = membership.get_node(id).cloned().unwrap_or_default();
            VoterView {
                id: format!("{id:016x}"),
                name: node.name,
                addr: node.http_addr,
            }
        };
        let leader = metrics.current_leader.map(|id| NodeRef {
            id: format!("{id:016x}"),
            name: membership
                .get_node(&id)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
        });
        CpStatus {
            id: format!("{:016x}", self.config.id),
            state: format!("{:?}", metrics.state).to_lowercase(),
            leader,
            term: metrics.current_term,
            voters: membership.voter_ids().map(|id| view(&id)).collect(),
            learners: membership.learner_ids().map(|id| view(&id)).collect(),
            commit_index,
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            health: self.health_from(&metrics),
            initialized: membership.voter_ids().next().is_some(),
        }
    }

    /// `healthy` when a leader exists and has heard from a quorum within twice the maximum
    /// election timeout.
    /// A leader knows that directly; a follower trusts a leader it heard from that recently.
    pub fn health(&self) -> Health {
        self.health_from(&self.raft.metrics().borrow())
    }

    pub(super) fn health_from(&self, metrics: &openraft::RaftMetrics<NodeId, CpNode>) -> Health {
        // Twice the election timeout: a busy machine delaying one heartbeat is not a lost quorum.
        let window = 2 * self.config.election_timeout.1.as_millis() as u64;
        let healthy = match metrics.state {
            ServerState::Leader => metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms <= window),
            ServerState::Follower | ServerState::Learner => {
                let last = self.last_leader_contact_ms.load(Ordering::Relaxed);
                let now = self.started.elapsed().as_millis() as u64;
                metrics.current_leader.is_some()
                    && last != u64::MAX
                    && now.saturating_sub(last) <= window
            }
            ServerState::Candidate | ServerState::Shutdown => false,
        };
        if healthy {
            Health::Healthy
        } else {
            Health::Degraded
        }
    }
}
