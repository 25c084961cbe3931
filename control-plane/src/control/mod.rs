//! [`ControlPlane`]: one CP member's Raft node and the request paths around it. This file owns
//! starting the node, its counters and the rule for reaching the leader ([`ControlPlane::on_leader`]);
//! the rest lives beside it:
//! - `writes`: writes, forwarded to the leader or proposed here, and the KV group commit.
//! - `reads`: linearizable read barriers (shared read-index rounds), the feed, KV and digests.
//! - `status`: `/v1/cp/status`, health, voter changes.
//! - `lifecycle`: bootstrap discovery, retention (trimming the feed), background counters, shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{ServerState, SnapshotPolicy};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::bootstrap::Candidate;
use crate::error::CpError;
use crate::feed_pages::FeedPages;
use crate::network::{CallError, InternalClient};
use crate::ops::{self, Op};
use crate::raft_network::NetworkFactory;
use crate::read_rounds::ReadRounds;
use crate::registry::MAX_BATCH;
use crate::store::{self, SharedState};
use crate::types::{NodeId, Raft};

/// Pause between attempts while no leader is known.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

mod carry_out;
pub mod elections;
mod join;
mod lease_keeper;
mod lifecycle;
mod reads;
mod status;
mod writes;

pub use crate::cp_types::{Applied, CpStatus, Health, NodeRef, VoterChange, VoterView};
pub use join::admission_check;
use lifecycle::{count_leader_changes, release_withheld_commits};
pub use reads::FeedFollower;
use reads::ReadWaiter;
use writes::{run_batcher, PendingWrite};

/// How a CP member is set up.
#[derive(Debug, Clone)]
pub struct CpConfig {
    pub id: NodeId,
    pub name: String,
    /// Advertised `IP:PORT` of this member's HTTP server (Raft RPC travels over it).
    pub http_addr: String,
    /// Where the Raft storage (a fjall database) lives (`<data-dir>/cp`).
    pub dir: PathBuf,
    /// Form a new cluster once this many candidates know each other; `None`: wait to be added.
    pub bootstrap_expect: Option<usize>,
    /// Other members' `HOST:HTTP_PORT` to find candidates through.
    pub join: Vec<String>,
    /// Bounded wait of writes and linearizable reads before `no_quorum`.
    pub request_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub election_timeout: (Duration, Duration),
    /// Take a Raft snapshot (and let the log be purged) every this many applied entries.
    pub snapshot_every: u64,
    pub cluster_secret: Option<String>,
    /// TLS to the other members (`--tls-*`); plain HTTP when `None`.
    pub tls: Option<hivemind_common::tls::ClientTls>,
    /// The token a join must present (`--join-token`); `None`: no token needed.
    pub join_token: Option<String>,
    /// `--admin-token`: a management token when a member forwards a client's token for a
    /// request it makes for the client (`crate::authority`).
    pub admin_token: Option<String>,
    /// The leader trims the event feed once it holds more events than this (to the newest half).
    pub event_retention: usize,
    /// Most KV-write batches of this member in flight at once (1 measured best: the writes
    /// arriving during a round trip form the next batch).
    pub max_batches_in_flight: usize,
    /// TEST ONLY, unsafe: a follower reports its appends before they are on disk (a missing
    /// fsync, for the fault harness to catch: RELIABILITY.md).
    pub unsafe_ack_before_persist: bool,
}

impl CpConfig {
    /// Defaults tuned for a LAN: 50 ms heartbeats, 200–400 ms election timeout, 5 s bounded
    /// wait. openraft campaigns only after the leader lease (= the maximum election timeout)
    /// plus a random election timeout, so failover takes about 600–800 ms plus the election.
    pub fn new(id: NodeId, name: String, http_addr: String, dir: PathBuf) -> Self {
        Self {
            id,
            name,
            http_addr,
            dir,
            bootstrap_expect: None,
            join: Vec::new(),
            request_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
            snapshot_every: 5000,
            cluster_secret: None,
            tls: None,
            join_token: None,
            admin_token: None,
            max_batches_in_flight: 1,
            unsafe_ack_before_persist: false,
            event_retention: 10_000,
        }
    }
}

/// One control-plane member.
pub struct ControlPlane {
    config: CpConfig,
    raft: Raft,
    state: Arc<SharedState>,
    client: InternalClient,
    started: Instant,
    /// Milliseconds since `started` of the last AppendEntries accepted from a leader.
    last_leader_contact_ms: AtomicU64,
    /// Pre-votes and whether this follower is cut off (see `elections.rs`).
    elections: crate::control::elections::ElectionState,
    /// Requests answered `no_quorum` at once because this member knew it was cut off.
    cut_off_answers: AtomicU64,
    /// Forwarded requests given up because leadership moved while they were with the leader.
    abandoned_forwards: AtomicU64,
    /// Candidates heard of during bootstrap.
    known: Mutex<BTreeMap<NodeId, Candidate>>,
    /// KV writes waiting to be proposed in a batch.
    kv_writes: mpsc::Sender<PendingWrite>,
    /// Batches in flight (at most `max_batches_in_flight`); a write that finds a slot free
    /// proposes itself at once.
    in_flight: Arc<tokio::sync::Semaphore>,
    append_latency: Arc<hivemind_common::histogram::LatencyHistogram>,
    /// Purges of the Raft log the background purger could not complete.
    purge_failures: Arc<AtomicU64>,
    leader_changes: AtomicU64,
    committed: Arc<AtomicU64>,
    /// How far this member's Raft log is on disk (see `store::durable`).
    durable: Arc<store::durable::Durable>,
    /// Linearizable reads waiting for a read-index round (see [`ReadRounds`]).
    read_rounds: Mutex<ReadRounds<ReadWaiter>>,
    /// Linearizable reads on this member (its clients' and its own read barriers), and the
    /// rounds that answered them.
    reads: AtomicU64,
    read_index_rounds: AtomicU64,
    /// Feed long-polls of members outside the control plane waiting here now (see
    /// [`ControlPlane::feed_follower`]): how many members chose this CP member.
    feed_followers: AtomicU64,
    /// Encoded feed pages shared by the long-polls that ask for the same one (see
    /// [`FeedPages`]), and how many were encoded and how many answers reused one.
    feed_pages: Mutex<FeedPages<bytes::Bytes>>,
    feed_pages_encoded: AtomicU64,
    /// The leader's lease deadlines (see `crate::leases`); empty on followers.
    lease_clock: Mutex<crate::leases::LeaseClock>,
    /// Leases this member, as leader, proposed to expire and saw applied.
    leases_expired: AtomicU64,
    feed_pages_shared: AtomicU64,
    /// This member, for the tasks it spawns.
    me: std::sync::Weak<ControlPlane>,
}

impl ControlPlane {
    /// Raft log appends until durable, for `/metrics`.
    pub fn append_latency(&self) -> &hivemind_common::histogram::LatencyHistogram {
        &self.append_latency
    }

    /// Opens the Raft storage and starts the Raft node. Does not initialize a cluster: see
    /// [`ControlPlane::run_bootstrap`].
    pub async fn start(config: CpConfig) -> Result<Arc<Self>, CpError> {
        let (mut log, sm) =
            store::open(&config.dir, config.id).map_err(|e| CpError::Fatal(e.to_string()))?;
        if config.unsafe_ack_before_persist {
            tracing::warn!("--unsafe-ack-before-persist: follower appends are acknowledged before they are durable, persisted about once a second (test only)");
            log.acknowledge_before_persist();
        }
        let durable = log.durable();
        let state = sm.shared();
        let append_latency = log.append_latency();
        let purge_failures = log.purge_failures();
        let committed = log.committed_index();
        let raft_config = openraft::Config {
            cluster_name: "hivemind".to_string(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            // Entries may be batches of up to 1 MiB: keep one AppendEntries well below that x 64.
            max_payload_entries: 64,
            // Elections are started by `elections.rs`, after a pre-vote.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| CpError::BadRequest(format!("Raft settings: {e}")))?;
        let client = InternalClient::new(config.cluster_secret.clone(), config.tls.clone());
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            NetworkFactory::new(client.clone(), durable.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| CpError::Fatal(e.to_string()))?;
        let (kv_writes, pending) = mpsc::channel(MAX_BATCH * 4);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(
            config.max_batches_in_flight.max(1),
        ));
        let cp = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            read_rounds: Mutex::new(ReadRounds::default()),
            reads: AtomicU64::new(0),
            read_index_rounds: AtomicU64::new(0),
            feed_followers: AtomicU64::new(0),
            feed_pages: Mutex::default(),
            feed_pages_encoded: AtomicU64::new(0),
            lease_clock: Mutex::default(),
            leases_expired: AtomicU64::new(0),
            feed_pages_shared: AtomicU64::new(0),
            append_latency,
            purge_failures,
            config,
            raft,
            state,
            client,
            started: Instant::now(),
            last_leader_contact_ms: AtomicU64::new(u64::MAX),
            elections: Default::default(),
            cut_off_answers: AtomicU64::new(0),
            abandoned_forwards: AtomicU64::new(0),
            known: Mutex::new(BTreeMap::new()),
            kv_writes,
            in_flight: in_flight.clone(),
            leader_changes: AtomicU64::new(0),
            committed,
            durable,
        });
        tokio::spawn(run_batcher(Arc::downgrade(&cp), pending, in_flight));
        tokio::spawn(count_leader_changes(Arc::downgrade(&cp)));
        tokio::spawn(release_withheld_commits(Arc::downgrade(&cp)));
        tokio::spawn(crate::control::elections::run(Arc::downgrade(&cp)));
        Ok(cp)
    }

    /// The last commit index this member saved (for `/metrics`; `status` asks Raft itself).
    pub fn commit_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Removals of purged log entries that failed (the next purge retries), for `/metrics`.
    pub fn purge_failures(&self) -> u64 {
        self.purge_failures.load(Ordering::Relaxed)
    }

    /// AppendEntries whose commit index was lowered to what this member had on disk (it led
    /// and its own fsync was slower than a follower's), for `/metrics`.
    pub fn commits_withheld(&self) -> u64 {
        self.durable.withheld_total()
    }

    fn read_rounds(&self) -> std::sync::MutexGuard<'_, ReadRounds<ReadWaiter>> {
        // Its methods do not panic, so a poisoned lock still holds consistent state.
        self.read_rounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Linearizable reads on this member (its clients' and its own read barriers), for
    /// `/metrics`.
    pub fn linearizable_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Read-index rounds this member ran for them (fewer than the reads when reads arrive
    /// together, see [`ReadRounds`]), for `/metrics`.
    pub fn read_index_rounds(&self) -> u64 {
        self.read_index_rounds.load(Ordering::Relaxed)
    }

    /// Times this member saw the leader change (to another member or to none), for
    /// `/metrics`.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &CpConfig {
        &self.config
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The applied state (registry), for local (stale) reads.
    pub fn state(&self) -> &Arc<SharedState> {
        &self.state
    }

    pub(crate) fn client(&self) -> &InternalClient {
        &self.client
    }

    /// Called by the internal AppendEntries route when a leader's append was accepted, by the
    /// vote route when this member granted a vote, and by the election driver while this
    /// member leads: each restarts the election timer.
    pub(crate) fn note_leader_contact(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_leader_contact_ms.store(now, Ordering::Relaxed);
    }

    /// Milliseconds since this member last heard from a leader, or since it started if it never
    /// did (a member just started waits a full election timeout before it campaigns, and does
    /// not grant pre-votes within a lease of starting, while its peers may still be starting).
    pub(crate) fn leader_silence_ms(&self) -> u64 {
        let last = self.last_leader_contact_ms.load(Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(if last == u64::MAX { 0 } else { last })
    }

    /// Requests answered `no_quorum` at once because this member knew it was cut off, and
    /// forwarded requests given up because leadership moved away from their leader.
    pub fn fast_failures(&self) -> (u64, u64) {
        (
            self.cut_off_answers.load(Ordering::Relaxed),
            self.abandoned_forwards.load(Ordering::Relaxed),
        )
    }

    /// The election driver's state: pre-votes and whether this follower is cut off.
    pub fn elections(&self) -> &crate::control::elections::ElectionState {
        &self.elections
    }

    /// Whether this member knows it is cut off from a majority, so that a request fails with
    /// `no_quorum` at once rather than after the bounded wait (see `crate::pre_vote`).
    fn cut_off(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let lease = crate::control::elections::lease_ms(self);
        match metrics.state {
            ServerState::Leader => {
                metrics.membership_config.membership().voter_ids().count() > 1
                    && crate::pre_vote::leader_cut_off(metrics.millis_since_quorum_ack, lease)
            }
            _ => crate::pre_vote::follower_cut_off(
                self.elections.last_round_unreachable(),
                self.leader_silence_ms(),
                lease,
            ),
        }
    }

    fn no_quorum(&self, detail: impl Into<String>) -> CpError {
        CpError::NoQuorum {
            waited_ms: self.config.request_timeout.as_millis() as u64,
            detail: detail.into(),
        }
    }

    /// Runs `local` here; when this member is not the leader, sends `body` to the leader as
    /// operation `O` instead. Retries while no leader is known, all within the bounded wait.
    async fn on_leader<O, T, F, Fut>(
        &self,
        wait: Duration,
        local: F,
        body: &O::Request,
    ) -> Result<T, CpError>
    where
        O: Op<Answer = Result<T, CpError>>,
        T: DeserializeOwned,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CpError>>,
    {
        let deadline = tokio::time::Instant::now() + wait;
        let mut last_detail = String::from("the leader did not reach a quorum");
        loop {
            if self.cut_off() {
                self.cut_off_answers.fetch_add(1, Ordering::Relaxed);
                return Err(self.no_quorum("this member is cut off from a majority of the voters"));
            }
            let attempt = async {
                // A follower that knows the leader forwards at once, without first asking its
                // own Raft core (a round trip through a task that is busy with appends).
                let first = match self.leader_elsewhere() {
                    Some(addr) => Err(CpError::NotLeader { leader: Some(addr) }),
                    None => local().await,
                };
                match first {
                    Err(CpError::NotLeader { leader: Some(addr) })
                        if addr != self.config.http_addr =>
                    {
                        let remaining =
                            deadline.saturating_duration_since(tokio::time::Instant::now());
                        let call = self.client.call_framed::<O::Request, O::Answer>(
                            &addr,
                            O::PATH,
                            body,
                            remaining,
                        );
                        tokio::select! {
                            answer = call => match answer {
                                Ok(answer) => answer,
                                // Surely not delivered: safe to retry once a leader is known again.
                                Err(e @ CallError::Unreachable { .. }) => {
                                    tracing::debug!(error = %e, "leader unreachable");
                                    Err(CpError::NotLeader { leader: None })
                                }
                                Err(e @ CallError::Failed { .. }) => Err(self.no_quorum(e.to_string())),
                                // A CP member's certificate the leader refuses: say so.
                                Err(CallError::Refused { code, message, .. }) => {
                                    Err(CpError::Forbidden(crate::authority::Denied::Heard { code, message }))
                                }
                            },
                            // The request may sit with a leader that is gone (paused, isolated):
                            // a read asks the new one; a write's fate is unknown.
                            () = self.leader_moved_from(&addr) => {
                                self.abandoned_forwards.fetch_add(1, Ordering::Relaxed);
                                if O::PATH == ops::ReadIndex::PATH {
                                    Err(CpError::NotLeader { leader: None })
                                } else {
                                    Err(self.no_quorum(format!(
                                        "leadership moved away from {addr} while the request was \
                                         with it: it may or may not take effect"
                                    )))
                                }
                            }
                        }
                    }
                    other => other,
                }
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(self.no_quorum(last_detail)),
                Ok(Err(CpError::NotLeader { leader })) => {
                    last_detail = match leader {
                        Some(addr) => format!("leader {addr} did not answer"),
                        None => "no leader elected".to_string(),
                    };
                    // Retry soon: an election takes a few hundred milliseconds.
                    if tokio::time::Instant::now() + RETRY_INTERVAL >= deadline {
                        return Err(self.no_quorum(last_detail));
                    }
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
                Ok(result) => return result,
            }
        }
    }

    /// Resolves once this member knows a leader other than the one at `addr` (itself included).
    async fn leader_moved_from(&self, addr: &str) {
        let mut metrics = self.raft.metrics();
        let stopped = metrics
            .wait_for(|m| {
                let Some(leader) = m.current_leader else {
                    return false;
                };
                let leader_addr = m.membership_config.membership().get_node(&leader);
                leader_addr.is_some_and(|n| n.http_addr != addr)
            })
            .await
            .is_err();
        if stopped {
            // Raft stopped: nothing will move any more.
            std::future::pending::<()>().await;
        }
    }
}
