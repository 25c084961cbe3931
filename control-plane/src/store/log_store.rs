//! The Raft log on fjall: entries keyed by big-endian index, plus vote, committed and purged ids.
//!
//! Two threads keep the disk off the Raft core's path: the flusher (group commit, see
//! [`run_flusher`]) and the purger, which removes the entries a snapshot made redundant (see
//! [`run_purger`]).

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hivemind_common::histogram::LatencyHistogram;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use tokio::sync::{mpsc, oneshot};

use super::durable::{acknowledge_early, Durable};
use super::{persist, read_err, write_err};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The purger removes at most this many entries per journal write, so that it holds fjall's
/// journal (which appends need too) only briefly, and notices a closed store between chunks.
const PURGE_CHUNK: usize = 1024;

/// The log store. Cloning is cheap (fjall handles are shared); clones are log readers.
#[derive(Clone)]
pub struct LogStore {
    db: fjall::Database,
    logs: fjall::Keyspace,
    meta: fjall::Keyspace,
    flusher: mpsc::UnboundedSender<FlushJob>,
    /// Append → durable, per append (shown in `/metrics`).
    latency: Arc<LatencyHistogram>,
    /// The last commit index openraft saved (shown in `/metrics`).
    committed: Arc<AtomicU64>,
    /// The same, on its way to the journal.
    commits: CommitRecord,
    /// This member's node id: its own appends, as leader, are acknowledged before the fsync.
    me: NodeId,
    /// The vote as last saved, to tell the leader's own appends from a follower's.
    vote: Arc<std::sync::Mutex<Option<Vote>>>,
    /// How far the log is on disk (see [`super::durable`]).
    durable: Arc<Durable>,
    /// Purge points for the purger thread.
    purger: std::sync::mpsc::Sender<u64>,
    /// The first index not purged (0: nothing purged). Entries before it may still be on disk
    /// until the purger reaches them; readers never see them.
    first_kept: Arc<AtomicU64>,
    /// Purges the purger could not complete (shown in `/metrics`; the next purge retries).
    purge_failures: Arc<AtomicU64>,
    /// Passed before every persist of the log (tests hold it to stand for a slow disk).
    pub(super) flush_gate: TestGate,
    /// Test only (`--unsafe-ack-before-persist`): report a follower's appends before they
    /// are persisted (they are, about once a second), as a store that acknowledged writes on
    /// a periodic fsync would.
    unsafe_early_ack: bool,
    unsafe_synced: Option<Instant>,
    /// Passed before the purger removes entries (tests hold it to delay the removal).
    pub(super) purge_gate: TestGate,
}

/// A point a background thread passes before it touches the disk. Tests hold it to stop the
/// thread there; in a build without tests it is nothing.
#[derive(Clone, Default)]
pub(super) struct TestGate {
    #[cfg(test)]
    gate: Arc<std::sync::Mutex<()>>,
}

impl TestGate {
    /// Waits while a test holds the gate.
    fn pass(&self) {
        #[cfg(test)]
        drop(self.gate.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Stops every thread at the gate until the guard drops.
    #[cfg(test)]
    pub(super) fn hold(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Work for the flusher task, done strictly in order.
enum FlushJob {
    /// The leader's own entries up to `last`, already written to the journal (and reported to
    /// openraft, which replicates them meanwhile): record them durable after the next persist.
    Appended { last: LogId, appended: Instant },
    /// A follower's entries up to `last`, written to the journal on a single-threaded member:
    /// report them to openraft (`reported`) after the next persist, so that the member's one
    /// thread goes on serving (gossip, HTTP, relayed answers) while the disk works.
    Followed {
        last: LogId,
        appended: Instant,
        reported: LogFlushed<TypeConfig>,
    },
    /// Answered once every earlier job completed.
    Barrier(oneshot::Sender<()>),
}

/// How often a member under `--unsafe-ack-before-persist` persists its follower appends.
const UNSAFE_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The commit index openraft last saved, recorded in the journal by the flusher just before
/// its next persist rather than on the Raft core. It is only a hint for the next start (how far
/// to re-apply before a leader says more), and writing it on the core meant waiting for fjall's
/// journal whenever the flusher held it for an fsync. It names an entry appended earlier, so the
/// persist that follows covers the entry as well.
#[derive(Clone)]
struct CommitRecord {
    meta: fjall::Keyspace,
    unsaved: Arc<std::sync::Mutex<Option<LogId>>>,
}

impl CommitRecord {
    fn note(&self, committed: LogId) {
        *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()) = Some(committed);
    }

    /// The commit index noted but not yet written.
    fn unsaved(&self) -> Option<LogId> {
        *self.unsaved.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> Result<(), fjall::Error> {
        let unsaved = self
            .unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match unsaved {
            Some(committed) => self
                .meta
                .insert(COMMITTED, hivemind_common::encode(&Some(committed))),
            None => Ok(()),
        }
    }
}

/// Persists the journal (one `fdatasync`), which makes everything written to it so far
/// durable, the entries up to `last` among it; records the commit index just before. Durable
/// first, then reported: whoever hears of an append can wait for it.
fn persist_through(
    db: &fjall::Database,
    commits: &CommitRecord,
    durable: &Durable,
    last: LogId,
) -> Result<(), String> {
    if let Err(e) = commits.write() {
        tracing::warn!(error = %e, "the commit index could not be recorded");
    }
    let flushed = persist(db).map_err(|e| e.to_string());
    match &flushed {
        Ok(()) => durable.advance(last),
        Err(e) => {
            tracing::error!(error = %e, "the Raft log could not be made durable");
            durable.fail(e.clone());
        }
    }
    flushed
}

fn flusher_stopped() -> StorageError {
    write_err(&std::io::Error::other("log flusher stopped"))
}

/// Starts one of the store's background threads (it ends when the last store clone drops).
fn spawn_thread(name: &str, run: impl FnOnce() + Send + 'static) -> Result<(), StorageError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map(drop)
        .map_err(|e| write_err(&e))
}

/// Whether the caller runs on tokio's multi-threaded runtime (`--worker-threads` above 1), where
/// `block_in_place` is allowed.
fn in_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Group commit on a dedicated thread: waits for appended entries (the leader's own, and a
/// single-threaded follower's), persists the journal once (one `fdatasync`) for everything
/// queued since the last time, records how far the log is durable, then reports the follower's
/// appends. The leader's core never waits on the disk (it replicates meanwhile), and under load
/// one fsync covers many appends. Barriers are answered in order.
fn run_flusher(
    db: fjall::Database,
    mut jobs: mpsc::UnboundedReceiver<FlushJob>,
    latency: Arc<LatencyHistogram>,
    durable: Arc<Durable>,
    commits: CommitRecord,
    gate: TestGate,
) {
    let mut batch = Vec::new();
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while let Ok(next) = jobs.try_recv() {
            batch.push(next);
        }
        let last = batch
            .iter()
            .filter_map(|j| match j {
                FlushJob::Appended { last, .. } | FlushJob::Followed { last, .. } => Some(*last),
                FlushJob::Barrier(_) => None,
            })
            .max_by_key(|l| l.index);
        // A failure is recorded in `durable` (and logged): every later append refuses.
        let persisted = match last {
            Some(last) => {
                gate.pass();
                persist_through(&db, &commits, &durable, last)
            }
            None => Ok(()),
        };
        for job in batch.drain(..) {
            match job {
                FlushJob::Appended { appended, .. } => latency.observe(appended.elapsed()),
                FlushJob::Followed {
                    appended, reported, ..
                } => {
                    latency.observe(appended.elapsed());
                    reported.log_io_completed(persisted.clone().map_err(std::io::Error::other));
                }
                FlushJob::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

impl LogStore {
    /// Test only (`--unsafe-ack-before-persist`): from now on a follower's appends are
    /// reported before their persist, breaking this store's durability on purpose.
    pub fn acknowledge_before_persist(&mut self) {
        self.unsafe_early_ack = true;
    }

    /// Opens the log trees and starts the flusher thread (it ends when the last clone drops).
    /// `me` is this member's node id.
    pub(super) fn new(db: &fjall::Database, me: NodeId) -> Result<Self, StorageError> {
        let logs = db
            .keyspace("raft_log", super::keyspace_options)
            .map_err(|e| read_err(&e))?;
        let meta = db
            .keyspace("raft_meta", super::keyspace_options)
            .map_err(|e| read_err(&e))?;
        // What was recovered may have reached only the page cache before a crash of the
        // process: one fsync makes all of it durable before anything is built on it.
        persist(db).map_err(|e| write_err(&e))?;
        let (flusher, jobs) = mpsc::unbounded_channel();
        let (purger, purge_points) = std::sync::mpsc::channel();
        let latency = Arc::new(LatencyHistogram::default());
        let store = Self {
            db: db.clone(),
            logs,
            meta: meta.clone(),
            flusher,
            latency: latency.clone(),
            committed: Arc::default(),
            me,
            vote: Arc::default(),
            durable: Arc::new(Durable::new(None)),
            commits: CommitRecord {
                meta: meta.clone(),
                unsaved: Arc::default(),
            },
            purger,
            first_kept: Arc::default(),
            purge_failures: Arc::default(),
            flush_gate: TestGate::default(),
            unsafe_early_ack: false,
            unsafe_synced: None,
            purge_gate: TestGate::default(),
        };
        if let Some(purged) = store.get_meta::<LogId>(LAST_PURGED)? {
            store.first_kept.store(purged.index + 1, Ordering::Relaxed);
            // A purge the previous run did not finish: its entries are removed in the background.
            let _ = store.purger.send(purged.index);
        }
        let (purge_db, purge_logs, failures, gate) = (
            db.clone(),
            store.logs.clone(),
            store.purge_failures.clone(),
            store.purge_gate.clone(),
        );
        spawn_thread("hivemind-log-purge", move || {
            run_purger(purge_db, purge_logs, purge_points, failures, gate)
        })?;
        store.durable.reset(store.last_log_id()?);
        *store.vote.lock().unwrap_or_else(|p| p.into_inner()) =
            store.get_meta(VOTE)?.map(super::restart::restored_vote);
        let (flusher_db, durable, commits, gate) = (
            db.clone(),
            store.durable.clone(),
            store.commits.clone(),
            store.flush_gate.clone(),
        );
        spawn_thread("hivemind-log-flush", move || {
            run_flusher(flusher_db, jobs, latency, durable, commits, gate)
        })?;
        Ok(store)
    }

    /// How far the log is on disk, shared with the state machine and the Raft network.
    pub fn durable(&self) -> Arc<Durable> {
        self.durable.clone()
    }

    /// The id of the last entry in the log, or of the last purged one if the log is empty.
    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        self.last_log_id_after(self.get_meta(LAST_PURGED)?)
    }

    /// [`LogStore::last_log_id`] when the last purged id is already at hand.
    fn last_log_id_after(&self, last_purged: Option<LogId>) -> Result<Option<LogId>, StorageError> {
        let last_in_log = match self.logs.last_key_value() {
            Some(item) => {
                let bytes = item.value().map_err(|e| read_err(&e))?;
                Some(decode_entry(&bytes)?.log_id)
            }
            None => None,
        };
        Ok(match (last_in_log, last_purged) {
            // Everything left is purged, but the purger has not removed it yet.
            (Some(last), Some(purged)) if last.index <= purged.index => Some(purged),
            (last, purged) => last.or(purged),
        })
    }

    /// The indexes of the entries on disk, purged or not (for tests of the purger).
    #[cfg(test)]
    pub(super) fn stored_indexes(&self) -> Vec<u64> {
        self.logs
            .iter()
            .map(|item| u64::from_be_bytes(item.key().unwrap().as_ref().try_into().unwrap()))
            .collect()
    }

    /// Records `purged` as the purge point and nothing else, as a crash right after it would
    /// leave the store (for tests of the purger).
    #[cfg(test)]
    pub(super) fn record_purge_point_only(&self, purged: LogId) {
        self.put_meta(LAST_PURGED, &purged).unwrap();
    }

    /// Purges the purger could not complete, for `/metrics`.
    pub fn purge_failures(&self) -> Arc<AtomicU64> {
        self.purge_failures.clone()
    }

    /// The commit index as last saved, shared.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// The append latency histogram (append → durable).
    pub fn append_latency(&self) -> Arc<LatencyHistogram> {
        self.latency.clone()
    }

    /// Waits until every append queued before this call was reported to openraft.
    async fn drain_flusher(&self) -> Result<(), StorageError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.to_flusher(FlushJob::Barrier(done_tx))?;
        done_rx.await.map_err(|_| flusher_stopped())
    }

    /// Queues `job` for the flusher thread.
    fn to_flusher(&self, job: FlushJob) -> Result<(), StorageError> {
        self.flusher.send(job).map_err(|_| flusher_stopped())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(|e| read_err(&e))? {
            None => Ok(None),
            Some(bytes) => hivemind_common::decode(&bytes)
                .map(Some)
                .map_err(|e| read_err(&e)),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        self.meta
            .insert(key, hivemind_common::encode(value))
            .map_err(|e| write_err(&e))?;
        Ok(())
    }

    /// Makes everything written so far durable. Blocking, but only votes, truncations and
    /// purges wait on it (appends go through the flusher).
    fn flush(&self) -> Result<(), StorageError> {
        persist(&self.db).map_err(|e| write_err(&e))
    }

    /// Removes the entries from `from` on, in one atomic batch.
    fn remove_from(&self, from: u64) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        for item in self.logs.range(from.to_be_bytes()..) {
            let key = item.key().map_err(|e| read_err(&e))?;
            batch.remove(&self.logs, key);
        }
        batch.commit().map_err(|e| write_err(&e))
    }
}

/// Removes purged entries on a thread of its own. `purge` records the purge point and hides
/// the entries before it at once; removing them is housekeeping that must not stall the Raft
/// core (measured: removing the 4,000 entries one snapshot freed took 6–9 ms, and with the fsync
/// that followed it the core stood still for up to 10 ms every 5,000 writes).
///
/// Nothing here is fsynced: fjall's journal is written in order and a crash keeps a prefix of
/// it, in which the purge point comes before every removal it allows (and the next flush of
/// an append persists both). A removal that fails is logged and counted; the next purge point,
/// or the next start, covers the same entries again.
fn run_purger(
    db: fjall::Database,
    logs: fjall::Keyspace,
    points: std::sync::mpsc::Receiver<u64>,
    failures: Arc<AtomicU64>,
    gate: TestGate,
) {
    while let Ok(upto) = points.recv() {
        gate.pass();
        if let Err(e) = remove_through(&db, &logs, upto, &points) {
            failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, upto, "purged Raft log entries could not be removed; the next purge retries");
        }
    }
}

/// Removes the entries up to `upto` (or a later point that arrives meanwhile), in chunks; stops
/// early when the log store is gone (the next start finishes the job).
fn remove_through(
    db: &fjall::Database,
    logs: &fjall::Keyspace,
    mut upto: u64,
    points: &std::sync::mpsc::Receiver<u64>,
) -> Result<(), fjall::Error> {
    loop {
        let mut batch = db.batch();
        let mut removed = 0;
        for item in logs.range(..=upto.to_be_bytes()).take(PURGE_CHUNK) {
            batch.remove(logs, item.key()?);
            removed += 1;
        }
        if removed == 0 {
            return Ok(());
        }
        batch.commit()?;
        loop {
            match points.try_recv() {
                Ok(later) => upto = upto.max(later),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Ok(()),
            }
        }
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError> {
    hivemind_common::decode(bytes).map_err(|e| StorageIOError::read_logs(AnyError::new(&e)).into())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        }
        // Purged entries the purger has not removed yet are not part of the log.
        .max(self.first_kept.load(Ordering::Relaxed));
        let mut entries = Vec::new();
        for item in self.logs.range(start.to_be_bytes()..) {
            let (key, value) = item.into_inner().map_err(|e| read_err(&e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().expect("8-byte keys"));
            if !range.contains(&index) {
                break;
            }
            entries.push(decode_entry(&value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.get_meta(LAST_PURGED)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.last_log_id_after(last_purged_log_id)?,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)?;
        // A vote must be durable before it is acted on, like a log append.
        self.flush()?;
        *self.vote.lock().unwrap_or_else(|p| p.into_inner()) = Some(*vote);
        Ok(())
    }

    /// openraft reads the vote only when it starts: a leader's authority does not survive the
    /// restart (see `super::restart`).
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.get_meta(VOTE)?.map(super::restart::restored_vote))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Recorded with the next flush (see `CommitRecord`): losing it only means re-applying
        // from the last snapshot is delayed until the leader tells us the commit index again.
        if let Some(c) = committed {
            self.committed.store(c.index, Ordering::Relaxed);
            self.commits.note(c);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(unsaved) = self.commits.unsaved() {
            return Ok(Some(unsaved));
        }
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let appended = Instant::now();
        if let Some(reason) = self.durable.failure() {
            return Err(write_err(&std::io::Error::other(reason)));
        }
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let mut batch = self.db.batch();
        for entry in &entries {
            batch.insert(
                &self.logs,
                &entry.log_id.index.to_be_bytes()[..],
                hivemind_common::encode(entry),
            );
        }
        batch.commit().map_err(|e| write_err(&e))?;
        // Readable now, so replication may send them. A follower's append is reported only
        // after the persist that covers it (below). The leader's own is reported at once so
        // that openraft replicates it while the flusher fsyncs (see `super::durable` for why
        // no one sees it committed before it is durable).
        let early = {
            let vote = self.vote.lock().unwrap_or_else(|p| p.into_inner());
            acknowledge_early(self.me, vote.as_ref(), &entries)
        };
        if self.unsafe_early_ack && !early {
            // The bug this switch plants: a follower's append reported at once and persisted
            // only about once a second (a "periodic fsync" setting).
            let due = self
                .unsafe_synced
                .is_none_or(|t| t.elapsed() > UNSAFE_SYNC_EVERY);
            if due {
                persist_through(&self.db, &self.commits, &self.durable, last)
                    .map_err(|e| write_err(&std::io::Error::other(e)))?;
                self.unsafe_synced = Some(Instant::now());
            }
            self.durable.advance(last);
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        if early {
            callback.log_io_completed(Ok(()));
            return self.to_flusher(FlushJob::Appended { last, appended });
        }
        // A follower's append, reported only once it is durable.
        if !in_multi_thread_runtime() {
            // A single-threaded member: the flusher persists it, and the member's one thread
            // serves its other tasks meanwhile rather than stalling on the disk.
            return self.to_flusher(FlushJob::Followed {
                last,
                appended,
                reported: callback,
            });
        }
        // openraft's core awaits the report before it does anything else, so on a multi-threaded
        // member the fsync runs right here (its worker's other tasks move to another thread
        // meanwhile) rather than on the flusher: that saves waking the flusher and then the
        // core (about 50-100 µs per AppendEntries, traced).
        let flushed = tokio::task::block_in_place(|| {
            self.flush_gate.pass();
            persist_through(&self.db, &self.commits, &self.durable, last)
        });
        self.latency.observe(appended.elapsed());
        callback.log_io_completed(flushed.map_err(std::io::Error::other));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // No callback may report entries durable after they were removed.
        self.drain_flusher().await?;
        self.remove_from(log_id.index)?;
        self.flush()?;
        self.durable.reset(self.last_log_id()?);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point goes into the journal ahead of every removal it allows, so a crash
        // never leaves a log whose start is unknown; from now on readers skip what it covers.
        self.put_meta(LAST_PURGED, &log_id)?;
        self.first_kept
            .fetch_max(log_id.index + 1, Ordering::Relaxed);
        self.purger
            .send(log_id.index)
            .map_err(|_| write_err(&std::io::Error::other("log purger stopped")))
    }
}
