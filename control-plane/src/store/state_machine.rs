//! The Raft state machine: the registry in memory, persisted as snapshots in the store.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::durable::Durable;
use super::{persist, read_err, write_err};
use crate::registry::{CommandOutput, Registry};
use crate::types::{
    CommandResponse, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

const CURRENT_SNAPSHOT: &[u8] = b"current";

/// Everything a snapshot holds: the registry and where in the log it stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub registry: Registry,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The applied state, shared with readers (HTTP handlers) behind a short-held lock, and a
/// watch of the applied index so that long-polls and read barriers wake on progress.
pub struct SharedState {
    data: RwLock<SmData>,
    applied_tx: watch::Sender<u64>,
}

impl SharedState {
    /// Read access to the applied state. Hold it briefly: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.data
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn applied_index(&self) -> u64 {
        *self.applied_tx.borrow()
    }

    /// Wakes whenever the applied index moves.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn replace(&self, new: SmData) {
        let index = new.last_applied.map_or(0, |l| l.index);
        *self.data.write().unwrap_or_else(|p| p.into_inner()) = new;
        self.applied_tx.send_replace(index);
    }
}

/// The state machine handle given to openraft; clones share the same state.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<SharedState>,
    db: fjall::Database,
    snapshots: fjall::Keyspace,
    /// How far the log is on disk: nothing is applied beyond it (rule 1 of
    /// [`super::durable`]).
    durable: Arc<Durable>,
}

impl StateMachine {
    pub(super) fn new(db: &fjall::Database, durable: Arc<Durable>) -> Result<Self, StorageError> {
        let snapshots = db
            .keyspace("sm_snapshot", super::keyspace_options)
            .map_err(|e| read_err(&e))?;
        let (applied_tx, _) = watch::channel(0);
        let sm = Self {
            shared: Arc::new(SharedState {
                data: RwLock::new(SmData::default()),
                applied_tx,
            }),
            db: db.clone(),
            snapshots,
            durable,
        };
        if let Some(stored) = sm.load_snapshot()? {
            let data: SmData = hivemind_common::decode(&stored.data).map_err(|e| read_err(&e))?;
            sm.shared.replace(data);
        }
        Ok(sm)
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        match self
            .snapshots
            .get(CURRENT_SNAPSHOT)
            .map_err(|e| read_err(&e))?
        {
            None => Ok(None),
            Some(bytes) => hivemind_common::decode(&bytes)
                .map(Some)
                .map_err(|e| read_err(&e)),
        }
    }

    async fn store_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        self.snapshots
            .insert(CURRENT_SNAPSHOT, hivemind_common::encode(stored))
            .map_err(|e| write_err(&e))?;
        persist(&self.db).map_err(|e| write_err(&e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (data, meta) = {
            let state = self.shared.read();
            let index = state.last_applied.map_or(0, |l| l.index);
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.last_membership.clone(),
                snapshot_id: format!("{index}-{}", rand::random::<u32>()),
            };
            (hivemind_common::encode(&*state), meta)
        };
        let stored = StoredSnapshot { meta, data };
        self.store_snapshot(&stored).await?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.read();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            // The leader may have counted its own copy toward the commit before its fsync:
            // nothing is answered or readable before it is on this disk too.
            self.durable
                .wait_for(last.log_id.index)
                .await
                .map_err(|reason| write_err(&std::io::Error::other(reason)))?;
        }
        let mut responses = Vec::new();
        let last_index = {
            let mut state = self.shared.data.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => Ok(CommandOutput::Nothing),
                    EntryPayload::Normal(command) => {
                        state.registry.apply(entry.log_id.index, &command)
                    }
                    EntryPayload::Membership(membership) => {
                        state.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        Ok(CommandOutput::Nothing)
                    }
                };
                responses.push(CommandResponse(result));
            }
            state.last_applied.map_or(0, |l| l.index)
        };
        self.shared.applied_tx.send_replace(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SmData = hivemind_common::decode(&bytes).map_err(|e| read_err(&e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        self.store_snapshot(&stored).await?;
        self.shared.replace(data);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.load_snapshot()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
