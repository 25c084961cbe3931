//! The leader's side of leases (DESIGN.md §6h): the loop that follows the registry's leases and
//! proposes `LeaseExpire` for those past their deadline, and keep-alives, which only the leader
//! takes (other CP members forward them). The rules are `crate::leases`'.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::ControlPlane;
use crate::error::CpError;
use crate::leases::LeaseClock;
use crate::ops;
use crate::registry::{Command, RegistryError};

/// How often the leader looks for expired leases.
const TICK: Duration = Duration::from_millis(100);

impl ControlPlane {
    fn lease_clock(&self) -> MutexGuard<'_, LeaseClock> {
        self.lease_clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The term this member leads now, if it does and has applied an entry of that term
    /// (the blank one a leader appends first). Until then, entries of earlier terms may still
    /// apply: a `LeaseExpire` an earlier leader decided can be committed by this one, so this
    /// member must not promise any lease a deadline (restart TTLs, take keep-alives) before it.
    fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leads = m.state == ServerState::Leader && m.current_leader == Some(self.config.id);
        let caught_up = m
            .last_applied
            .is_some_and(|l| l.leader_id.term == m.current_term);
        (leads && caught_up).then_some(m.current_term)
    }

    /// Follows the leases while this member leads, and proposes the expiry of those past their
    /// deadline; forgets every deadline while it does not lead.
    pub async fn run_leases(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let Some(term) = self.leading_term() else {
                self.lease_clock().follow();
                continue;
            };
            let expired = {
                let state = self.state.read();
                let mut clock = self.lease_clock();
                clock.lead(term, state.registry.kv().leases(), Instant::now());
                clock.expired(Instant::now())
            };
            for id in expired {
                match self.write(Command::LeaseExpire { id, term }).await {
                    Ok(_) => {
                        self.leases_expired.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(lease = id, "lease expired");
                    }
                    // Revoked meanwhile: nothing to expire.
                    Err(CpError::Rejected(RegistryError::UnknownLease { .. })) => {}
                    // This member no longer leads: the expiry was not its to decide.
                    Err(CpError::Rejected(RegistryError::StaleExpiry { .. })) => break,
                    Err(e) => {
                        tracing::debug!(lease = id, error = %e, "could not expire a lease; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// A keep-alive of lease `id`, on whichever CP member: taken by the leader. Answers the TTL.
    pub async fn keep_alive(&self, id: u64) -> Result<u64, CpError> {
        let answers = self.keep_alive_many(vec![id]).await?;
        answers
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| RegistryError::UnknownLease { id }.into())
    }

    /// Keep-alives of several leases at once (one leadership confirmation for all): each
    /// lease's TTL, or `None` for one that is gone.
    pub async fn keep_alive_many(&self, ids: Vec<u64>) -> Result<Vec<Option<u64>>, CpError> {
        self.on_leader::<ops::LeaseKeepAlive, _, _, _>(
            self.config.request_timeout,
            || self.local_keep_alive(ids.clone()),
            &ids,
        )
        .await
    }

    /// Keep-alives on this member, which must lead: each lease's TTL starts over (unless it is
    /// unknown or already past its deadline, its expiry on its way through the log), then the
    /// leader confirms with a quorum that it still leads before it answers, so no later leader
    /// can hold an earlier deadline than the one the client is told.
    pub(crate) async fn local_keep_alive(
        &self,
        ids: Vec<u64>,
    ) -> Result<Vec<Option<u64>>, CpError> {
        let answers = {
            let state = self.state.read();
            let leases = state.registry.kv().leases();
            let mut clock = self.lease_clock();
            if !clock.leading() {
                return Err(CpError::NotLeader { leader: None });
            }
            let now = Instant::now();
            ids.iter()
                .map(|id| clock.keep_alive(*id, leases, now))
                .collect::<Vec<_>>()
        };
        self.local_read_index().await?;
        Ok(answers)
    }

    /// How long lease `id` has left, as this member knows it (only the leader knows).
    pub fn lease_remaining(&self, id: u64) -> Option<Duration> {
        self.lease_clock().remaining(id, Instant::now())
    }

    /// Leases this member, as leader, saw expire.
    pub fn leases_expired(&self) -> u64 {
        self.leases_expired.load(Ordering::Relaxed)
    }
}
