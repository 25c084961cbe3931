//! The Raft log on fjall: entries keyed by big-endian index, plus vote, committed and purged ids.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Instant;

use hivemind_common::histogram::LatencyHistogram;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use tokio::sync::{mpsc, oneshot};

use super::{persist, read_err, write_err};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

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
    committed: Arc<std::sync::atomic::AtomicU64>,
}

/// Work for the flusher task, done strictly in order.
enum FlushJob {
    /// Entries already written to the journal: report them durable after the next persist.
    Appended(LogFlushed<TypeConfig>, Instant),
    /// Answered once every earlier job completed.
    Barrier(oneshot::Sender<()>),
}

/// Group commit on a dedicated thread: waits for appended entries, persists the journal once
/// (one `fdatasync`) for everything queued since the last time, then completes the callbacks in
/// order. Raft's core never waits on the disk, and under load one fsync covers many appends.
fn run_flusher(
    db: fjall::Database,
    mut jobs: mpsc::UnboundedReceiver<FlushJob>,
    latency: Arc<LatencyHistogram>,
) {
    let mut batch = Vec::new();
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while let Ok(next) = jobs.try_recv() {
            batch.push(next);
        }
        let flushed = if batch.iter().any(|j| matches!(j, FlushJob::Appended(..))) {
            persist(&db).map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        for job in batch.drain(..) {
            match job {
                FlushJob::Appended(callback, appended) => {
                    latency.observe(appended.elapsed());
                    callback.log_io_completed(flushed.clone().map_err(std::io::Error::other))
                }
                FlushJob::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

impl LogStore {
    /// Opens the log trees and starts the flusher thread (it ends when the last clone drops).
    pub(super) fn new(db: &fjall::Database) -> Result<Self, StorageError> {
        let (flusher, jobs) = mpsc::unbounded_channel();
        let flusher_db = db.clone();
        let latency = Arc::new(LatencyHistogram::default());
        let flusher_latency = latency.clone();
        std::thread::Builder::new()
            .name("hivemind-log-flush".into())
            .spawn(move || run_flusher(flusher_db, jobs, flusher_latency))
            .map_err(|e| write_err(&e))?;
        Ok(Self {
            db: db.clone(),
            logs: db
                .keyspace("raft_log", super::keyspace_options)
                .map_err(|e| read_err(&e))?,
            meta: db
                .keyspace("raft_meta", super::keyspace_options)
                .map_err(|e| read_err(&e))?,
            flusher,
            latency,
            committed: Arc::default(),
        })
    }

    /// The commit index as last saved, shared.
    pub fn committed_index(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.committed.clone()
    }

    /// The append latency histogram (append → durable).
    pub fn append_latency(&self) -> Arc<LatencyHistogram> {
        self.latency.clone()
    }

    /// Waits until every append queued before this call was reported to openraft.
    async fn drain_flusher(&self) -> Result<(), StorageError> {
        let (done_tx, done_rx) = oneshot::channel();
        let stopped = || write_err(&std::io::Error::other("log flusher stopped"));
        self.flusher
            .send(FlushJob::Barrier(done_tx))
            .map_err(|_| stopped())?;
        done_rx.await.map_err(|_| stopped())
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

    /// Removes the entries whose index lies in `range`, in one atomic batch.
    fn remove_entries(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        for item in self.logs.range(range) {
            let key = item.key().map_err(|e| read_err(&e))?;
            batch.remove(&self.logs, key);
        }
        batch.commit().map_err(|e| write_err(&e))
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
        };
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
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last_in_log = match self.logs.last_key_value() {
            Some(item) => {
                let bytes = item.value().map_err(|e| read_err(&e))?;
                Some(decode_entry(&bytes)?.log_id)
            }
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last_in_log.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)?;
        // A vote must be durable before it is acted on, like a log append.
        self.flush()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: losing it only means re-applying from the last snapshot is delayed until
        // the leader tells us the commit index again.
        if let Some(c) = committed {
            self.committed
                .store(c.index, std::sync::atomic::Ordering::Relaxed);
        }
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
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
        let mut batch = self.db.batch();
        for entry in entries {
            batch.insert(
                &self.logs,
                &entry.log_id.index.to_be_bytes()[..],
                hivemind_common::encode(&entry),
            );
        }
        batch.commit().map_err(|e| write_err(&e))?;
        // Readable now (replication may send them), acknowledged as durable only by the
        // flusher, after the flush that covers them.
        self.flusher
            .send(FlushJob::Appended(callback, appended))
            .map_err(|_| write_err(&std::io::Error::other("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // No callback may report entries durable after they were removed.
        self.drain_flusher().await?;
        self.remove_entries(log_id.index.to_be_bytes()..)?;
        self.flush()
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two steps leaves extra entries
        // (harmless), never a log whose start is unknown.
        self.put_meta(LAST_PURGED, &log_id)?;
        self.remove_entries(..=log_id.index.to_be_bytes())?;
        self.flush()
    }
}
