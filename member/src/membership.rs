//! [`Membership`]: this member's view of the cluster as the event feed built it, whether that
//! view has caught up with the control plane, and the feed follower's counters. The follower
//! (`cp::feed`) is its one writer, through the methods that say what happened (a page applied,
//! newer node configs taken, a snapshot taken in place of the view, the feed unread); everyone
//! else reads. Readers get the view whole (`Arc`): it is replaced, never changed under them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use hivemind_control_plane::registry::{Event, FeedPage, NodeConfig};
use tokio::sync::watch;

use crate::view::{MembershipView, PageOutcome};

pub(crate) struct Membership {
    view: watch::Sender<Arc<MembershipView>>,
    caught_up: AtomicBool,
    events_applied: AtomicU64,
    feed_errors: AtomicU64,
    rebootstraps: AtomicU64,
}

/// The follower's counters, as `/v1/status` and `/metrics` show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeedCounts {
    pub(crate) events_applied: u64,
    pub(crate) errors: u64,
    pub(crate) rebootstraps: u64,
}

impl Membership {
    pub(crate) fn new(view: watch::Sender<Arc<MembershipView>>) -> Self {
        Self {
            view,
            caught_up: AtomicBool::new(false),
            events_applied: AtomicU64::new(0),
            feed_errors: AtomicU64::new(0),
            rebootstraps: AtomicU64::new(0),
        }
    }

    /// The view now.
    pub(crate) fn view(&self) -> Arc<MembershipView> {
        self.view.borrow().clone()
    }

    /// Whether the view reached the applied index of the CP member that answered last.
    pub(crate) fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    pub(crate) fn counts(&self) -> FeedCounts {
        FeedCounts {
            events_applied: self.events_applied.load(Ordering::Relaxed),
            errors: self.feed_errors.load(Ordering::Relaxed),
            rebootstraps: self.rebootstraps.load(Ordering::Relaxed),
        }
    }

    /// A feed page, applied in place (the view is copied only while a reader holds it): what
    /// it brought, and the view after it. The view has caught up when it reached
    /// `page.applied_index`.
    pub(crate) fn apply_page(&self, page: &FeedPage) -> (PageOutcome, Arc<MembershipView>) {
        let mut outcome = PageOutcome::Applied(Vec::new());
        self.view.send_if_modified(|view| {
            let view = Arc::make_mut(view);
            let before = view.index;
            outcome = view.apply_page(page);
            matches!(&outcome, PageOutcome::Applied(events) if !events.is_empty() || view.index != before)
        });
        let view = self.view();
        if let PageOutcome::Applied(events) = &outcome {
            self.events_applied
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            self.caught_up
                .store(view.index >= page.applied_index, Ordering::Relaxed);
        }
        (outcome, view)
    }

    /// Node configs newer than the view's, taken into it (seed event [6]): the events they
    /// make, and the view after them.
    pub(crate) fn take_newer_nodes(
        &self,
        epoch: u64,
        nodes: &[NodeConfig],
    ) -> (Vec<Event>, Arc<MembershipView>) {
        let mut taken = Vec::new();
        self.view.send_if_modified(|view| {
            // Another epoch's configs: the feed brings its snapshot. The usual case, nothing
            // newer, copies nothing.
            if view.epoch != epoch || !nodes.iter().any(|n| view.is_newer(n)) {
                return false;
            }
            taken = Arc::make_mut(view).take_newer_nodes(nodes);
            !taken.is_empty()
        });
        (taken, self.view())
    }

    /// A registry snapshot replaces the view (a new epoch, or a position the feed no longer
    /// holds): not caught up until the next page says so.
    pub(crate) fn rebootstrapped(&self, view: MembershipView) {
        self.view.send_replace(Arc::new(view));
        self.caught_up.store(false, Ordering::Relaxed);
        self.rebootstraps.fetch_add(1, Ordering::Relaxed);
    }

    /// The feed could not be read: the view may be behind.
    pub(crate) fn unread(&self) {
        self.caught_up.store(false, Ordering::Relaxed);
    }

    /// A round of the follower that ended in an error (counted).
    pub(crate) fn failed_round(&self) {
        self.feed_errors.fetch_add(1, Ordering::Relaxed);
    }
}
