//! Reads: linearizable read barriers answered by shared read-index rounds, the event feed
//! (with its shared encoded pages), KV reads and registry digests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use super::ControlPlane;
use crate::error::CpError;
use crate::feed_pages::{FeedPages, PageKey};
use crate::ops;
use crate::read_rounds::Arrival;
use crate::registry::Actor;
use crate::registry::{FeedError, FeedPage, KvEntry, RegistryDigest};
use crate::store::SmData;

/// Where a linearizable read waits for its read index.
pub(super) type ReadWaiter = oneshot::Sender<Result<u64, CpError>>;

/// Runs read-index rounds one after the other while reads wait for one (see [`ReadRounds`]),
/// answering each round's reads with its outcome.
pub(super) async fn run_read_rounds(cp: Arc<ControlPlane>) {
    // Should this task be dropped mid-round (the runtime shuts down), the waiting reads are
    // told so and the next read starts rounds afresh, rather than waiting behind a round that
    // will never finish.
    struct Abandon<'a>(&'a ControlPlane);
    impl Drop for Abandon<'_> {
        fn drop(&mut self) {
            let abandoned = self.0.read_rounds().abandon();
            drop(abandoned); // their callers see the channel closed
        }
    }
    let guard = Abandon(&cp);
    loop {
        cp.read_index_rounds.fetch_add(1, Ordering::Relaxed);
        let outcome = cp
            .on_leader::<ops::ReadIndex, _, _, _>(
                cp.config.request_timeout,
                || cp.local_read_index(),
                &(),
            )
            .await;
        let finished = cp.read_rounds().finish();
        for read in finished.answered {
            let _ = read.send(outcome.clone());
        }
        if !finished.start_next {
            break;
        }
    }
    std::mem::forget(guard);
}

impl ControlPlane {
    /// The leader's read index, confirmed by a quorum round; `NotLeader` elsewhere.
    pub(crate) async fn local_read_index(&self) -> Result<u64, CpError> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(CpError::NotLeader {
                    leader: f.leader_node.map(|n| n.http_addr),
                })
            }
            // The leader could not confirm it still leads: retry until the deadline.
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(CpError::NotLeader { leader: None })
            }
            Err(RaftError::Fatal(f)) => Err(CpError::Fatal(f.to_string())),
        }
    }

    /// Linearizable read barrier: obtains the leader's read index (a quorum-confirmed commit
    /// index) and waits until this member has applied it. Returns the index.
    ///
    /// Concurrent reads share read-index rounds (see [`ReadRounds`]): one round in flight per
    /// member, and the reads that arrive meanwhile share the next.
    pub async fn read_barrier(&self) -> Result<u64, CpError> {
        let started = tokio::time::Instant::now();
        self.reads.fetch_add(1, Ordering::Relaxed);
        let (reply, index) = oneshot::channel();
        if self.read_rounds().arrive(reply) == Arrival::StartRound {
            match self.me.upgrade() {
                Some(cp) => drop(tokio::spawn(run_read_rounds(cp))),
                // Only while the last handle drops: no round will run, release the read.
                None => drop(self.read_rounds().abandon()),
            }
        }
        let index = match tokio::time::timeout(self.config.request_timeout, index).await {
            Ok(Ok(answer)) => answer?,
            Ok(Err(_)) => return Err(CpError::Fatal("the read-index rounds stopped".into())),
            Err(_) => return Err(self.no_quorum("no read index in time")),
        };
        let remaining = self
            .config
            .request_timeout
            .saturating_sub(started.elapsed());
        let mut applied = self.state.subscribe_applied();
        let waited = tokio::time::timeout(remaining, applied.wait_for(|i| *i >= index))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(index),
            Ok(Err(_)) => Err(CpError::Fatal("state machine closed".into())),
            Err(_) => {
                Err(self.no_quorum(format!("did not apply up to read index {index} in time")))
            }
        }
    }

    /// Counts one feed long-poll of a member outside the control plane while the guard lives
    /// (`hivemind_feed_followers`): each such member keeps one waiting on the CP member it
    /// chose, so the gauge is this member's share of them.
    pub fn feed_follower(&self) -> FeedFollower<'_> {
        self.feed_followers.fetch_add(1, Ordering::Relaxed);
        FeedFollower(&self.feed_followers)
    }

    /// Feed long-polls of members outside the control plane waiting here now.
    pub fn feed_followers(&self) -> u64 {
        self.feed_followers.load(Ordering::Relaxed)
    }

    /// The event feed after `after`, from this member's applied state: long-polls up to `wait`
    /// for events, then answers (possibly empty). `Gone` when the reader must re-bootstrap.
    pub async fn feed(
        &self,
        after: u64,
        epoch: Option<u64>,
        limit: usize,
        wait: Duration,
    ) -> Result<FeedPage, FeedError> {
        let key = PageKey {
            after,
            epoch,
            limit,
        };
        self.when_feed_ready(&key, wait, |state| page_of(state, &key))
            .await
    }

    /// [`ControlPlane::feed`] encoded (bincode of `Result<FeedPage, FeedError>`, the answer of
    /// [`ops::Feed`]). The long-polls that ask for the same page at the same applied index
    /// share one encoding ([`FeedPages`]): caught up, all of this member's followers do.
    pub async fn feed_encoded(
        &self,
        after: u64,
        epoch: Option<u64>,
        limit: usize,
        wait: Duration,
    ) -> Bytes {
        let key = PageKey {
            after,
            epoch,
            limit,
        };
        let built = self
            .when_feed_ready(&key, wait, |state| {
                let index = state.applied_index();
                match self.feed_pages().get(index, &key) {
                    Some(shared) => Ok(shared),
                    None => Err((index, page_of(state, &key))),
                }
            })
            .await;
        match built {
            Ok(shared) => {
                self.feed_pages_shared.fetch_add(1, Ordering::Relaxed);
                shared
            }
            Err((index, page)) => {
                // Encoded outside the state lock: apply waits for its readers.
                let encoded = Bytes::from(hivemind_common::encode(&page));
                self.feed_pages_encoded.fetch_add(1, Ordering::Relaxed);
                self.feed_pages().insert(index, key, encoded.clone());
                encoded
            }
        }
    }

    /// Feed pages this member encoded, and answers that reused one ([`FeedPages`]).
    pub fn feed_pages_counts(&self) -> (u64, u64) {
        (
            self.feed_pages_encoded.load(Ordering::Relaxed),
            self.feed_pages_shared.load(Ordering::Relaxed),
        )
    }

    fn feed_pages(&self) -> std::sync::MutexGuard<'_, FeedPages<Bytes>> {
        self.feed_pages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits up to `wait` until the feed has something for `key` (events after its position,
    /// or `Gone`), then answers with `answer` of the applied state at that moment; at the
    /// deadline, answers anyway.
    async fn when_feed_ready<T>(
        &self,
        key: &PageKey,
        wait: Duration,
        answer: impl Fn(&SmData) -> T,
    ) -> T {
        let deadline = tokio::time::Instant::now() + wait;
        let mut applied = self.state.subscribe_applied();
        loop {
            applied.borrow_and_update();
            {
                let state = self.state.read();
                let ready = state
                    .registry
                    .events_after(key.after, key.epoch, key.limit)
                    .map_or(true, |events| !events.is_empty());
                if ready || tokio::time::Instant::now() >= deadline {
                    return answer(&state);
                }
            }
            // At the deadline, answer (empty) on the next turn.
            let _ = tokio::time::timeout_at(deadline, applied.changed()).await;
        }
    }

    /// A linearizable read of one KV entry.
    pub async fn kv_get(&self, key: &str) -> Result<Option<KvEntry>, CpError> {
        self.read_barrier().await?;
        Ok(self.state.read().registry.kv_get(key).cloned())
    }

    /// The registry once this member applied `index` (waits within the request timeout), so a
    /// writer reads its own write wherever it reads.
    /// A linearizable read of the registry's membership (read index, then local apply).
    pub async fn digest_now(&self) -> Result<RegistryDigest, CpError> {
        let index = self.read_barrier().await?;
        self.digest_at(index).await
    }

    pub async fn digest_at(&self, index: u64) -> Result<RegistryDigest, CpError> {
        let mut applied = self.state.subscribe_applied();
        let waited = tokio::time::timeout(
            self.config.request_timeout,
            applied.wait_for(|i| *i >= index),
        )
        .await
        .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(self.digest()),
            Ok(Err(_)) => Err(CpError::Fatal("state machine closed".into())),
            Err(_) => Err(self.no_quorum(format!("did not apply index {index} in time"))),
        }
    }

    /// A member's view ([`crate::ops::View`]): the digest at `at`, with the secrets `reader`
    /// may see only.
    pub async fn view(
        &self,
        at: crate::ops::ViewAt,
        reader: Option<&Actor>,
    ) -> Result<RegistryDigest, CpError> {
        let digest = match at {
            crate::ops::ViewAt::Applied(index) => self.digest_at(index).await?,
            crate::ops::ViewAt::Now => self.digest_now().await?,
        };
        Ok(digest.scoped(reader))
    }

    /// One keygroup, linearizable, with its secret only if `reader` may see it.
    pub async fn keygroup_now(
        &self,
        name: &str,
        reader: Option<&Actor>,
    ) -> Result<Option<crate::registry::KeygroupConfig>, CpError> {
        self.read_barrier().await?;
        let state = self.state.read();
        Ok(state
            .registry
            .keygroup(name)
            .map(|k| k.clone().scoped(reader)))
    }

    /// The ACL table as applied here (not linearizable: enforcement tolerates a short lag).
    pub fn acl(&self) -> crate::registry::AclTable {
        self.state.read().registry.acl().clone()
    }

    pub fn digest(&self) -> RegistryDigest {
        let state = self.state.read();
        RegistryDigest::of(&state.registry, state.applied_index())
    }
}

/// One feed long-poll counted in [`ControlPlane::feed_followers`] until dropped.
pub struct FeedFollower<'a>(&'a AtomicU64);

impl Drop for FeedFollower<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The feed page for `key` in the applied state `state`.
fn page_of(state: &SmData, key: &PageKey) -> Result<FeedPage, FeedError> {
    let registry = &state.registry;
    let applied_index = state.applied_index();
    let events = registry.events_after(key.after, key.epoch, key.limit)?;
    // Every event up to the applied index is in this page or before `after`, unless the page
    // is full: then the reader continues after its last event.
    let next_after = if events.len() >= key.limit {
        events.last().map_or(key.after, |e| e.index)
    } else {
        applied_index.max(key.after)
    };
    Ok(FeedPage {
        epoch: registry.epoch(),
        first_index: registry.feed_start_index(),
        applied_index,
        next_after,
        events: events.to_vec(),
    })
}
