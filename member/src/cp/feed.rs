//! The event-feed follower: keeps this member's [`MembershipView`] current by long-polling the
//! control plane's feed from the persisted position, applying pages in order, persisting the
//! view, and handing the changes to the roles. When the feed answers `gone` (a new epoch, or a
//! position before the epoch's start) it re-bootstraps from a registry snapshot and, if the
//! snapshot no longer lists this member alive, joins fresh.

use std::sync::Arc;
use std::time::Duration;

use hivemind_common::backoff::Backoff;
use hivemind_control_plane::ops::ViewAt;
use hivemind_control_plane::registry::{EventKind, FeedError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cp::admission::admit;
use crate::state::Agent;
use crate::view::{MembershipView, PageOutcome};

/// How long one feed request waits for new events.
const LONG_POLL: Duration = Duration::from_secs(30);

/// The view is saved at most this often while events arrive (and when the feed stops).
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// When the view is due to be saved (sans IO). Saving encodes the whole view (O(members)) and
/// syncs it; doing that for every page made a member with 1,000 others write and sync
/// hundreds of KB per event. A view saved a moment late costs only a longer catch-up from the
/// older position after a restart (the position is saved with the view it belongs to).
#[derive(Debug, Default)]
pub(crate) struct SaveSchedule {
    last: Option<tokio::time::Instant>,
    dirty: bool,
}

impl SaveSchedule {
    /// The view changed.
    pub(crate) fn changed(&mut self) {
        self.dirty = true;
    }

    /// Whether to save the view now; if so, it counts as saved.
    pub(crate) fn due(&mut self, now: tokio::time::Instant) -> bool {
        let due = self.dirty && self.last.is_none_or(|last| now >= last + PERSIST_EVERY);
        if due {
            self.dirty = false;
            self.last = Some(now);
        }
        due
    }

    /// Whether a change is still unsaved (saved when the feed stops).
    pub(crate) fn unsaved(&self) -> bool {
        self.dirty
    }
}

pub(crate) async fn follow(agent: Arc<Agent>, cancel: CancellationToken) {
    let mut saves = SaveSchedule::default();
    let mut last_reread = tokio::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let (after, epoch) = {
            let view = agent.membership.view();
            (view.index, view.epoch)
        };
        // Until caught up, ask without waiting: the answer says how far the feed is. With
        // a change unsaved, wait no longer than until it is due.
        let wait = if !agent.membership.caught_up() {
            Duration::ZERO
        } else if saves.unsaved() {
            PERSIST_EVERY
        } else {
            LONG_POLL
        };
        let answer = tokio::select! {
            _ = cancel.cancelled() => break,
            answer = agent.cp.feed(after, Some(epoch), wait) => answer,
        };
        let ok = match answer {
            Ok(Ok(page)) => {
                let (outcome, view) = agent.membership.apply_page(&page);
                match outcome {
                    PageOutcome::Applied(events) => {
                        if events
                            .iter()
                            .any(|e| matches!(e.kind, EventKind::AclChanged { .. }))
                        {
                            agent.acl.changed();
                        }
                        if !events.is_empty() || view.index != after {
                            saves.changed();
                            agent.roles.applied(&events, &view);
                        }
                        true
                    }
                    PageOutcome::EpochChanged { epoch: new } if new > epoch => {
                        rebootstrap(&agent, &cancel).await
                    }
                    // The answering CP member lags behind an epoch we already saw.
                    PageOutcome::EpochChanged { .. } => false,
                }
            }
            Ok(Err(FeedError::Gone {
                epoch: new,
                first_index,
            })) => {
                if new > epoch || (new == epoch && first_index > after) {
                    rebootstrap(&agent, &cancel).await
                } else {
                    false // a lagging CP member; ask again
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event feed; retrying");
                // Unread, the feed may be behind: say so (the status lists `event_feed`, and the
                // ACL table goes back to timed reads until a page arrives).
                agent.membership.unread();
                false
            }
        };
        if ok && last_reread.elapsed() >= agent.config.reread_every {
            last_reread = tokio::time::Instant::now();
            if reread_nodes(&agent).await {
                saves.changed();
            }
        }
        if saves.due(tokio::time::Instant::now()) {
            persist(&agent, &agent.membership.view());
        }
        if ok {
            backoff.reset();
        } else {
            agent.membership.failed_round();
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }
    // Stopping: what changed since the last save is saved now.
    if saves.unsaved() {
        persist(&agent, &agent.membership.view());
    }
}

/// Seed event [6] for node configs: every `--reread-every` the node configs are read from the
/// registry and any newer than the view's reach the view and the roles, so a member converges
/// even on a change whose event it never applied. Answers whether anything changed.
async fn reread_nodes(agent: &Arc<Agent>) -> bool {
    let digest = match agent.cp.view(&agent.config.node, ViewAt::Applied(0)).await {
        Ok(digest) => digest,
        Err(e) => {
            tracing::debug!(error = %e, "cannot re-read the node configs; at the next interval");
            return false;
        }
    };
    let (taken, view) = agent
        .membership
        .take_newer_nodes(digest.epoch, &digest.nodes);
    if taken.is_empty() {
        return false;
    }
    tracing::info!(
        nodes = taken.len(),
        "node configs re-read: newer than the view's"
    );
    agent.roles.applied(&taken, &view);
    true
}

/// Replaces the view with a registry snapshot newer than it; answers whether it did.
async fn rebootstrap(agent: &Arc<Agent>, cancel: &CancellationToken) -> bool {
    let digest = match agent.cp.view(&agent.config.node, ViewAt::Applied(0)).await {
        Ok(digest) => digest,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a registry snapshot; retrying");
            return false;
        }
    };
    let current = agent.membership.view();
    if (digest.epoch, digest.index) < (current.epoch, current.index) {
        return false; // an older snapshot than what we hold: ask again
    }
    let view = MembershipView::from_digest(digest);
    tracing::info!(
        epoch = view.epoch,
        index = view.index,
        "re-bootstrapped the membership view from a snapshot"
    );
    persist(agent, &view);
    if let Err(e) = agent.store.set_epoch(view.epoch) {
        tracing::warn!(error = %e, "cannot persist the epoch");
    }
    agent.membership.rebootstrapped(view.clone());
    agent.roles.rebootstrapped(&view);
    let listed = view.admits(agent.identity.id, agent.incarnation.generation());
    if agent.incarnation.judged_by(view.index, listed) {
        tracing::warn!("the new epoch does not list us alive: joining fresh");
        tokio::spawn(admit(agent.clone(), cancel.child_token()).in_current_span());
    }
    true
}

fn persist(agent: &Agent, view: &MembershipView) {
    if let Err(e) = agent.store.set_view(view) {
        // The view is rebuilt from the feed or a snapshot after a restart; losing the saved
        // copy costs a re-bootstrap, never correctness.
        tracing::warn!(error = %e, "cannot persist the membership view");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_is_saved_at_most_once_a_second_and_never_when_unchanged() {
        let start = tokio::time::Instant::now();
        let mut saves = SaveSchedule::default();
        assert!(!saves.due(start), "nothing changed");
        saves.changed();
        assert!(saves.due(start), "the first change is saved at once");
        saves.changed();
        assert!(!saves.due(start + Duration::from_millis(500)));
        assert!(saves.unsaved());
        assert!(saves.due(start + PERSIST_EVERY));
        assert!(!saves.unsaved());
        assert!(
            !saves.due(start + PERSIST_EVERY * 5),
            "saved, unchanged since"
        );
    }
}
