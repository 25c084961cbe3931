//! [`ControlPlane`]: one CP member's Raft node and the request paths around it: writes
//! forwarded to the leader, linearizable read barriers, bounded waits, health, voter changes
//! and the bootstrap loop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{decide, Candidate, Decision, Hello};
use crate::error::CpError;
use crate::network::{paths, CallError, InternalClient, NetworkFactory};
use crate::read_rounds::{Arrival, ReadRounds};
use crate::registry::{
    Command, CommandOutput, FeedError, FeedPage, KvEntry, RegistryDigest, MAX_BATCH,
    MAX_BATCH_BYTES,
};
use crate::store::{self, SharedState};
use crate::types::{CpNode, NodeId, Raft};

/// Pause between attempts while no leader is known.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// Takes the KV writes waiting right now (up to [`MAX_BATCH`] writes and [`MAX_BATCH_BYTES`]
/// of values, never the same key twice; the rest waits for the next batch) as one batch.
fn take_batch(
    first: PendingWrite,
    queue: &mut mpsc::Receiver<PendingWrite>,
    held: &mut VecDeque<PendingWrite>,
) -> Vec<PendingWrite> {
    let mut batch = vec![first];
    let mut keys: BTreeSet<String> = batch[0]
        .command
        .kv_key()
        .map(str::to_string)
        .into_iter()
        .collect();
    let mut bytes = batch[0].command.value_len();
    let mut deferred = VecDeque::new();
    while batch.len() < MAX_BATCH {
        let Some(next) = held.pop_front().or_else(|| queue.try_recv().ok()) else {
            break;
        };
        if next.reply.is_closed() {
            continue; // its caller gave up (bounded wait): never propose it
        }
        let size = next.command.value_len();
        if bytes + size > MAX_BATCH_BYTES {
            deferred.push_back(next);
            break;
        }
        let key = next.command.kv_key().unwrap_or_default().to_string();
        if keys.insert(key) {
            bytes += size;
            batch.push(next);
        } else {
            deferred.push_back(next);
        }
    }
    deferred.extend(held.drain(..));
    *held = deferred;
    batch
}

/// Group commit at the proposal layer, on the leader: concurrent KV writes (its own clients'
/// and those forwarded by other members) become one `Command::Batch` entry, so one append, one
/// fsync and one replication round carry them all. At most `max_batches_in_flight` batches (default 1) are in flight; the
/// writes that arrive meanwhile form the next batch, so batches grow with the load by
/// themselves. A write that finds no batch in flight is proposed at once on its caller's task
/// (see [`ControlPlane::batched_write`]).
async fn run_batcher(
    cp: std::sync::Weak<ControlPlane>,
    mut queue: mpsc::Receiver<PendingWrite>,
    in_flight: Arc<tokio::sync::Semaphore>,
) {
    let mut held = VecDeque::new();
    loop {
        let first = match held.pop_front() {
            Some(write) => write,
            None => match queue.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Writes that arrived while we waited for a slot join this batch.
        let batch = take_batch(first, &mut queue, &mut held);
        if batch.iter().all(|w| w.reply.is_closed()) {
            continue;
        }
        let Some(cp) = cp.upgrade() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            let (command, replies): (Command, Vec<_>) = if batch.len() == 1 {
                let write = batch.into_iter().next().expect("one write");
                (write.command, vec![(write.reply, write.forwarded, None)])
            } else {
                let (commands, replies) = batch
                    .into_iter()
                    .map(|w| (w.command.clone(), (w.reply, w.forwarded, Some(w.command))))
                    .unzip();
                (Command::Batch(commands), replies)
            };
            let single = replies.len() == 1;
            let retry = command.clone();
            let outcome = cp.bounded_local_write(command).await;
            match outcome {
                Ok(Applied {
                    index,
                    output: CommandOutput::Batch(results),
                }) if !single => {
                    for ((reply, _, _), result) in replies.into_iter().zip(results) {
                        let _ = reply.send(
                            result
                                .map(|output| Applied { index, output })
                                .map_err(CpError::from),
                        );
                    }
                }
                // Leadership moved: forwarded writes go back to their sender (it retries towards
                // the new leader); this member's own clients' writes are forwarded from here.
                Err(CpError::NotLeader { leader }) => {
                    for (reply, forwarded, command) in replies {
                        if forwarded {
                            let _ = reply.send(Err(CpError::NotLeader {
                                leader: leader.clone(),
                            }));
                        } else {
                            let cp = cp.clone();
                            let command = command.unwrap_or_else(|| retry.clone());
                            tokio::spawn(
                                async move { drop(reply.send(cp.propose(command).await)) },
                            );
                        }
                    }
                }
                other => {
                    for (reply, _, _) in replies {
                        let _ = reply.send(other.clone());
                    }
                }
            }
        });
    }
}

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
    /// The leader starts a new epoch once the event feed holds more events than this.
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
            max_batches_in_flight: 1,
            unsafe_ack_before_persist: false,
            event_retention: 10_000,
        }
    }
}

/// A committed and applied command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub output: CommandOutput,
}

/// A change of the Raft voter set, executed on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoterChange {
    /// Add as learner (waits until it caught up), then promote when `voter`.
    Add {
        id: NodeId,
        node: CpNode,
        voter: bool,
    },
    /// Remove a voter or learner.
    Remove { id: NodeId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VoterView {
    pub id: String,
    pub name: String,
    pub addr: String,
}

/// `GET /v1/cp/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CpStatus {
    pub id: String,
    pub state: String,
    pub leader: Option<NodeRef>,
    pub term: u64,
    pub voters: Vec<VoterView>,
    pub learners: Vec<VoterView>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub health: Health,
    pub initialized: bool,
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
    elections: crate::elections::ElectionState,
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
    /// This member, for the tasks it spawns.
    me: std::sync::Weak<ControlPlane>,
}

/// Where a linearizable read waits for its read index.
type ReadWaiter = oneshot::Sender<Result<u64, CpError>>;

/// Runs read-index rounds one after the other while reads wait for one (see [`ReadRounds`]),
/// answering each round's reads with its outcome.
async fn run_read_rounds(cp: Arc<ControlPlane>) {
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
            .on_leader(
                cp.config.request_timeout,
                || cp.local_read_index(),
                paths::READ_INDEX,
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

/// Counts leader changes from openraft's metrics until the control plane is dropped.
async fn count_leader_changes(cp: std::sync::Weak<ControlPlane>) {
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
async fn release_withheld_commits(cp: std::sync::Weak<ControlPlane>) {
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

/// A KV write waiting for its batch, and where its verdict goes.
struct PendingWrite {
    command: Command,
    reply: oneshot::Sender<Result<Applied, CpError>>,
    /// Forwarded by another member: if this member lost the leadership, answer `NotLeader` (the
    /// sender retries towards the new leader) rather than forwarding again.
    forwarded: bool,
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
        let client = InternalClient::new(config.cluster_secret.clone());
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
        tokio::spawn(crate::elections::run(Arc::downgrade(&cp)));
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
    pub fn elections(&self) -> &crate::elections::ElectionState {
        &self.elections
    }

    /// Whether this member knows it is cut off from a majority, so that a request fails with
    /// `no_quorum` at once rather than after the bounded wait (see `crate::pre_vote`).
    fn cut_off(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let lease = crate::elections::lease_ms(self);
        match metrics.state {
            ServerState::Leader => {
                metrics.membership_config.membership().voter_ids().count() > 1
                    && crate::pre_vote::leader_cut_off(metrics.millis_since_quorum_ack, lease)
            }
            _ => crate::pre_vote::follower_cut_off(
                self.elections.last_round_failed(),
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

    /// Runs `local` here; when this member is not the leader, sends `body` to the leader's
    /// internal `path` instead. Retries while no leader is known, all within the bounded wait.
    async fn on_leader<T, F, Fut, B>(
        &self,
        wait: Duration,
        local: F,
        path: &str,
        body: &B,
    ) -> Result<T, CpError>
    where
        T: DeserializeOwned,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CpError>>,
        B: Serialize,
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
                        let call = self
                            .client
                            .call_framed::<B, Result<T, CpError>>(&addr, path, body, remaining);
                        tokio::select! {
                            answer = call => match answer {
                                Ok(answer) => answer,
                                // Surely not delivered: safe to retry once a leader is known again.
                                Err(e @ CallError::Unreachable { .. }) => {
                                    tracing::debug!(error = %e, "leader unreachable");
                                    Err(CpError::NotLeader { leader: None })
                                }
                                Err(e @ CallError::Failed { .. }) => Err(self.no_quorum(e.to_string())),
                            },
                            // The request may sit with a leader that is gone (paused, isolated):
                            // a read asks the new one; a write's fate is unknown.
                            () = self.leader_moved_from(&addr) => {
                                self.abandoned_forwards.fetch_add(1, Ordering::Relaxed);
                                if path == paths::READ_INDEX {
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

    /// Commits `command` through the leader (forwarding when needed) and returns its outcome.
    /// On the leader, KV writes are batched with concurrent ones into one log entry (see
    /// [`run_batcher`]); other members forward each write, so that all of the cluster's
    /// concurrent writes meet in the leader's batches.
    #[tracing::instrument(skip_all, fields(member = %format_args!("{:016x}", self.config.id), command = command.name()))]
    pub async fn write(&self, command: Command) -> Result<Applied, CpError> {
        if command.kv_key().is_some() && self.is_leader() {
            return self.batched_write(command, false).await;
        }
        self.propose(command).await
    }

    /// The leader's HTTP address when this member's metrics name another member as leader.
    fn leader_elsewhere(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        if leader == self.config.id {
            return None;
        }
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.http_addr.clone())
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.config.id)
    }

    /// Queues a KV write for the leader's next batch and waits for its verdict, all within the
    /// bounded wait (a write that times out before its batch is taken is never proposed).
    async fn batched_write(&self, command: Command, forwarded: bool) -> Result<Applied, CpError> {
        // No batch in flight: this write is a batch of one, proposed on this task rather than
        // handed to the batcher and on to a task of its own. (The semaphore is fair: while the
        // batcher waits for a slot, released slots go to it, so queued writes never starve.)
        if let Ok(slot) = self.in_flight.clone().try_acquire_owned() {
            let outcome = self.bounded_local_write(command.clone()).await;
            drop(slot);
            return match outcome {
                // Leadership moved: as in the batcher, a forwarded write goes back to its sender,
                // this member's own client's write is forwarded from here.
                Err(CpError::NotLeader { .. }) if !forwarded => self.propose(command).await,
                other => other,
            };
        }
        let (reply, verdict) = oneshot::channel();
        let stopped = || CpError::Fatal("the write batcher stopped".into());
        let queued_and_answered = async {
            let pending = PendingWrite {
                command,
                reply,
                forwarded,
            };
            self.kv_writes.send(pending).await.map_err(|_| stopped())?;
            verdict.await.map_err(|_| stopped())?
        };
        tokio::time::timeout(self.config.request_timeout, queued_and_answered)
            .await
            .unwrap_or_else(|_| Err(self.no_quorum("the write waited for its batch too long")))
    }

    /// A write forwarded to this member as the leader: KV writes join the batch, others are
    /// proposed directly; never forwarded again.
    pub(crate) async fn forwarded_write(&self, command: Command) -> Result<Applied, CpError> {
        if command.kv_key().is_some() {
            self.batched_write(command, true).await
        } else {
            self.local_write(command).await
        }
    }

    /// Commits `command` as one log entry.
    async fn propose(&self, command: Command) -> Result<Applied, CpError> {
        self.on_leader(
            self.config.request_timeout,
            || self.local_write(command.clone()),
            paths::WRITE,
            &command,
        )
        .await
    }

    /// [`ControlPlane::local_write`] of a KV write or batch, bounded like every other wait: a
    /// leader deposed mid-write may never hear back about its entry, and a stuck write would
    /// hold a batch slot forever.
    async fn bounded_local_write(&self, command: Command) -> Result<Applied, CpError> {
        tokio::time::timeout(self.config.request_timeout, self.local_write(command))
            .await
            .unwrap_or_else(|_| Err(self.no_quorum("the write was not committed in time")))
    }

    /// Proposes on this member; `NotLeader` when it is not the leader.
    pub(crate) async fn local_write(&self, command: Command) -> Result<Applied, CpError> {
        match self.raft.client_write(command).await {
            Ok(response) => {
                let index = response.log_id.index;
                let output = response.data.0?;
                Ok(Applied { index, output })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(CpError::NotLeader {
                    leader: f.leader_node.map(|n| n.http_addr),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(CpError::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(CpError::Fatal(f.to_string())),
        }
    }

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

    /// Adds or removes a CP member (on the leader, forwarded when needed).
    pub async fn change_voters(&self, change: VoterChange) -> Result<CpStatus, CpError> {
        self.on_leader(
            self.config.request_timeout * 6,
            || self.local_change_voters(change.clone()),
            paths::ADMIN,
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

    /// The event feed after `after`, from this member's applied state: long-polls up to `wait`
    /// for events, then answers (possibly empty). `Gone` when the reader must re-bootstrap.
    pub async fn feed(
        &self,
        after: u64,
        epoch: Option<u64>,
        limit: usize,
        wait: Duration,
    ) -> Result<FeedPage, FeedError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut applied = self.state.subscribe_applied();
        loop {
            applied.borrow_and_update();
            {
                let state = self.state.read();
                let registry = &state.registry;
                let applied_index = state.last_applied.map_or(0, |l| l.index);
                let events = registry.events_after(after, epoch, limit)?;
                if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                    // Every event up to the applied index is in this page or before `after`,
                    // unless the page is full: then the reader continues after its last event.
                    let next_after = if events.len() >= limit {
                        events.last().map_or(after, |e| e.index)
                    } else {
                        applied_index.max(after)
                    };
                    return Ok(FeedPage {
                        epoch: registry.epoch(),
                        first_index: registry.epoch_start_index(),
                        applied_index,
                        next_after,
                        events: events.to_vec(),
                    });
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

    /// The registry's membership at this member's applied index (a stale read).
    pub fn digest(&self) -> RegistryDigest {
        let state = self.state.read();
        RegistryDigest::of(&state.registry, state.last_applied.map_or(0, |l| l.index))
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

    fn health_from(&self, metrics: &openraft::RaftMetrics<NodeId, CpNode>) -> Health {
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

    fn candidate(&self, initialized: bool) -> Candidate {
        Candidate {
            id: self.config.id,
            name: self.config.name.clone(),
            http_addr: self.config.http_addr.clone(),
            initialized,
        }
    }

    async fn is_initialized(&self) -> bool {
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
    async fn discover(&self) -> Vec<Candidate> {
        let mut addrs: BTreeSet<String> = self.config.join.iter().cloned().collect();
        addrs.extend(self.known_snapshot().into_iter().map(|c| c.http_addr));
        addrs.remove(&self.config.http_addr);
        let me = Some(self.candidate(false));
        let calls = addrs.iter().map(|addr| {
            self.client
                .call::<_, Hello>(addr, paths::HELLO, &me, Duration::from_millis(500))
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

    fn known_snapshot(&self) -> Vec<Candidate> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// While this member leads, starts a new epoch whenever the event feed outgrows the
    /// retention (checked every second; the feed of the old epoch is dropped by the bump).
    pub async fn run_retention(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let feed_len = self.state.read().registry.feed_len();
            if !needs_new_epoch(feed_len, self.config.event_retention, self.is_leader()) {
                continue;
            }
            let reason = format!(
                "the feed holds {feed_len} events, retention {}",
                self.config.event_retention
            );
            match self.write(Command::EpochBump { reason }).await {
                Ok(applied) => {
                    tracing::info!(outcome = ?applied.output, feed_len, "started a new epoch")
                }
                Err(e) => tracing::warn!(error = %e, "could not start a new epoch; retrying"),
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

/// Whether the leader should start a new epoch (sans IO).
pub fn needs_new_epoch(feed_len: usize, retention: usize, is_leader: bool) -> bool {
    is_leader && feed_len > retention
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_leader_bumps_and_only_past_the_retention() {
        assert!(needs_new_epoch(11, 10, true));
        assert!(!needs_new_epoch(10, 10, true));
        assert!(!needs_new_epoch(11, 10, false));
    }

    fn write(key: &str) -> (PendingWrite, oneshot::Receiver<Result<Applied, CpError>>) {
        let (reply, verdict) = oneshot::channel();
        let command = Command::KvPut {
            key: key.to_string(),
            value: Vec::new(),
            cas: None,
        };
        (
            PendingWrite {
                command,
                reply,
                forwarded: false,
            },
            verdict,
        )
    }

    fn keys(batch: &[PendingWrite]) -> Vec<&str> {
        batch.iter().map(|w| w.command.kv_key().unwrap()).collect()
    }

    #[tokio::test]
    async fn a_batch_never_holds_a_key_twice_and_keeps_arrival_order() {
        let (tx, mut queue) = mpsc::channel(16);
        let mut verdicts = Vec::new();
        for key in ["b", "a", "b", "c", "a"] {
            let (w, v) = write(key);
            tx.send(w).await.unwrap();
            verdicts.push(v);
        }
        let mut held = VecDeque::new();
        let (first, _v) = write("a");
        let batch = take_batch(first, &mut queue, &mut held);
        assert_eq!(keys(&batch), ["a", "b", "c"]);
        // The repeated keys wait, in order, for the next batch.
        let next = held.pop_front().unwrap();
        let batch = take_batch(next, &mut queue, &mut held);
        assert_eq!(keys(&batch), ["a", "b"]);
        let next = held.pop_front().unwrap();
        assert_eq!(keys(&take_batch(next, &mut queue, &mut held)), ["a"]);
        assert!(held.is_empty());
    }

    #[tokio::test]
    async fn a_batch_stays_within_its_byte_budget() {
        let (tx, mut queue) = mpsc::channel(16);
        let mut verdicts = Vec::new();
        for key in ["b", "c", "d"] {
            let (reply, verdict) = oneshot::channel();
            let command = Command::KvPut {
                key: key.to_string(),
                value: vec![0; MAX_BATCH_BYTES / 2 + 1],
                cas: None,
            };
            tx.send(PendingWrite {
                command,
                reply,
                forwarded: false,
            })
            .await
            .unwrap();
            verdicts.push(verdict);
        }
        let (first, _v) = write("a");
        let mut held = VecDeque::new();
        assert_eq!(keys(&take_batch(first, &mut queue, &mut held)), ["a", "b"]);
        let next = held.pop_front().unwrap();
        assert_eq!(keys(&take_batch(next, &mut queue, &mut held)), ["c"]);
        let next = held.pop_front().unwrap();
        assert_eq!(keys(&take_batch(next, &mut queue, &mut held)), ["d"]);
    }

    #[tokio::test]
    async fn writes_whose_caller_gave_up_are_not_proposed() {
        let (tx, mut queue) = mpsc::channel(16);
        let (abandoned, verdict) = write("x");
        drop(verdict);
        tx.send(abandoned).await.unwrap();
        let (kept, _v) = write("y");
        tx.send(kept).await.unwrap();
        let (first, _v1) = write("z");
        let mut held = VecDeque::new();
        assert_eq!(keys(&take_batch(first, &mut queue, &mut held)), ["z", "y"]);
    }
}
