//! [`AclCache`]: this member's copy of the ACL table, which `crate::http::acl` enforces and keeps
//! fresh; requests that need a fresher one wait here (bounded).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use hivemind_control_plane::access::Enforced;
use tokio::sync::{watch, Notify};

/// How long a request waits for a fresher table (an unknown token, or none read yet).
const WAIT_FOR_TABLE: Duration = Duration::from_secs(3);

/// This member's copy of the ACL table: `None` until first read.
pub struct AclCache {
    pub(crate) current: watch::Sender<Option<Arc<Enforced>>>,
    /// Asks the refresh loop for a read now.
    pub(crate) wake: Notify,
    /// Reads of the table that failed (`/metrics`).
    pub failures: AtomicU64,
}

impl Default for AclCache {
    fn default() -> Self {
        Self {
            current: watch::channel(None).0,
            wake: Notify::new(),
            failures: AtomicU64::new(0),
        }
    }
}

impl AclCache {
    /// The control plane's table changed: read it again now.
    pub(crate) fn changed(&self) {
        self.wake.notify_one();
    }

    /// The table, waiting for a first read (bounded) when none was made yet.
    pub(crate) async fn table(&self) -> Option<Arc<Enforced>> {
        if let Some(table) = self.current.borrow().clone() {
            return Some(table);
        }
        self.fresher(None).await
    }

    /// A table newer than `than` (another `Arc`), waiting at most [`WAIT_FOR_TABLE`].
    pub(crate) async fn fresher(&self, than: Option<&Arc<Enforced>>) -> Option<Arc<Enforced>> {
        let mut rx = self.current.subscribe();
        rx.mark_unchanged();
        self.wake.notify_one();
        let _ = tokio::time::timeout(WAIT_FOR_TABLE, rx.changed()).await;
        let now = rx.borrow().clone();
        match (now, than) {
            (Some(now), Some(than)) if Arc::ptr_eq(&now, than) => None,
            (now, _) => now,
        }
    }
}
