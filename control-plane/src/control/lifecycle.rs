//! A CP member's life: bootstrap discovery, retention (the feed trimmed once it is long),
//! background counters and shutdown.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ControlPlane;
use crate::bootstrap::{decide, Candidate, Decision, Hello};
use crate::ops;
use crate::registry::Command;

/// Counts leader changes from openraft's metrics until the control plane is dropped.
pub(super) async fn count_leader_changes(cp: std::sync::Weak<ControlPlane>) {
    let Some(mut metrics) = cp.upgrade().map(|cp| cp.raft.metrics()) else {
        return;
    };
    let mut leader = metrics.borrow().current_leader;
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow().current_leader;
        if now != leader {
            leader = now;
            match cp.upgrade() {
                Some(cp) => cp.leader_changes.fetch_add(1, Ordering::Relaxed),
                None => return,
            };
        }
    }
}

/// Sends a heartbeat as soon as a commit index that AppendEntries withheld from followers (it
/// was not yet on this member's disk, see `store::durable`) becomes durable, so that followers
/// apply it now rather than at the next regular heartbeat.
pub(super) async fn release_withheld_commits(cp: std::sync::Weak<ControlPlane>) {
    let Some(mut durable_moved) = cp.upgrade().map(|cp| cp.durable.subscribe()) else {
        return;
    };
    while durable_moved.changed().await.is_ok() {
        let Some(cp) = cp.upgrade() else { return };
        if cp.durable.take_released() {
            if let Err(e) = cp.raft.trigger().heartbeat().await {
                tracing::debug!(error = %e, "no heartbeat for a released commit: Raft stopped");
                return;
            }
        }
    }
}

impl ControlPlane {
    pub(super) fn candidate(&self, initialized: bool) -> Candidate {
        Candidate {
            id: self.config.id,
            name: self.config.name.clone(),
            http_addr: self.config.http_addr.clone(),
            initialized,
        }
    }

    pub(super) async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Answers a bootstrap hello and remembers the caller.
    pub(crate) async fn hello(&self, caller: Option<Candidate>) -> Hello {
        let me = self.candidate(self.is_initialized().await);
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = caller.filter(|c| c.id != self.config.id) {
            known.insert(c.id, c);
        }
        let known = known.values().cloned().collect();
        Hello { me, known }
    }

    /// Forms the cluster with `--bootstrap-expect` peers, unless Raft state already exists
    /// (a restarted member never re-initializes). Returns once this member is initialized.
    pub async fn run_bootstrap(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_reason = String::new();
        loop {
            if self.is_initialized().await {
                tracing::info!("control plane initialized");
                return;
            }
            if let Some(expect) = self.config.bootstrap_expect {
                let others = self.discover().await;
                match decide(&self.candidate(false), &others, expect) {
                    Decision::Initialize(voters) => {
                        tracing::info!(voters = ?voters.keys().map(|v| format!("{v:016x}")).collect::<Vec<_>>(), "initializing the control plane");
                        if let Err(e) = self.raft.initialize(voters).await {
                            tracing::warn!(error = %e, "initialize failed; retrying");
                        }
                    }
                    Decision::Wait(reason) => {
                        if reason != last_reason {
                            tracing::info!(%reason, "bootstrap waiting");
                            last_reason = reason;
                        }
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    }

    /// Says hello to every join address and every candidate heard of; returns the others.
    pub(super) async fn discover(&self) -> Vec<Candidate> {
        let mut addrs: BTreeSet<String> = self.config.join.iter().cloned().collect();
        addrs.extend(self.known_snapshot().into_iter().map(|c| c.http_addr));
        addrs.remove(&self.config.http_addr);
        let me = Some(self.candidate(false));
        let calls = addrs.iter().map(|addr| {
            self.client
                .op::<ops::HelloOp>(addr, &me, Duration::from_millis(500))
        });
        let answers = futures::future::join_all(calls).await;
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for hello in answers.into_iter().flatten() {
            for c in hello.known.into_iter().chain([hello.me]) {
                if c.id != self.config.id {
                    known.insert(c.id, c);
                }
            }
        }
        known.values().cloned().collect()
    }

    pub(super) fn known_snapshot(&self) -> Vec<Candidate> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// While this member leads, trims the event feed whenever it outgrows the retention
    /// (checked every second; `Registry::retention_trim_point` says through where).
    pub async fn run_retention(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if !self.is_leader() {
                continue;
            }
            let through = self
                .state
                .read()
                .registry
                .retention_trim_point(self.config.event_retention);
            let Some(through) = through else { continue };
            match self.write(Command::TrimFeed { through }).await {
                Ok(applied) => tracing::info!(outcome = ?applied.output, "trimmed the event feed"),
                Err(e) => tracing::warn!(error = %e, "could not trim the event feed; retrying"),
            }
        }
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
