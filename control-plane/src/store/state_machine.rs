//! The Raft state machine: the registry in memory, persisted as snapshots in a file of its own.
//!
//! The snapshot lives in `<cp dir>/snapshot.bin` (a CRC32 and the encoded [`StoredSnapshot`]),
//! replaced atomically, not in fjall: fjall holds its journal, which every log append needs, for
//! the whole of an fsync, so a snapshot written through it (hundreds of KiB to many MiB) stalled
//! the log for as long as it took to reach the disk.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::durable::Durable;
use super::{read_err, write_err};
use crate::registry::{CommandOutput, Registry};
use crate::types::{
    CommandResponse, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

/// The snapshot's file in the CP's directory.
const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Where builds before the snapshot file kept it: moved to the file on open.
const LEGACY_KEYSPACE: &str = "sm_snapshot";
const LEGACY_KEY: &[u8] = b"current";

/// Everything a snapshot holds: the registry and where in the log it stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub registry: Registry,
}

impl SmData {
    /// The index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.last_applied.map_or(0, |l| l.index)
    }
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
        let index = new.applied_index();
        *self.data.write().unwrap_or_else(|p| p.into_inner()) = new;
        self.applied_tx.send_replace(index);
    }
}

/// The state machine handle given to openraft; clones share the same state.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<SharedState>,
    /// The current snapshot's file ([`SNAPSHOT_FILE`]).
    snapshot_path: Arc<PathBuf>,
    /// How far the log is on disk: nothing is applied beyond it (rule 1 of
    /// [`super::durable`]).
    durable: Arc<Durable>,
}

impl StateMachine {
    /// Opens the state machine of the CP whose directory (and fjall database) is `dir`.
    pub(super) fn new(
        dir: &Path,
        db: &fjall::Database,
        durable: Arc<Durable>,
    ) -> Result<Self, StorageError> {
        let (applied_tx, _) = watch::channel(0);
        let sm = Self {
            shared: Arc::new(SharedState {
                data: RwLock::new(SmData::default()),
                applied_tx,
            }),
            snapshot_path: Arc::new(dir.join(SNAPSHOT_FILE)),
            durable,
        };
        sm.move_legacy_snapshot(db)?;
        if let Some(stored) = sm.load_snapshot()? {
            let data: SmData = hivemind_common::decode(&stored.data).map_err(|e| read_err(&e))?;
            sm.shared.replace(data);
        }
        Ok(sm)
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    /// A data dir written before snapshots had their own file keeps its snapshot in fjall:
    /// moved to the file (durably) before the keyspace goes.
    fn move_legacy_snapshot(&self, db: &fjall::Database) -> Result<(), StorageError> {
        if !db.keyspace_exists(LEGACY_KEYSPACE) {
            return Ok(());
        }
        let legacy = db
            .keyspace(LEGACY_KEYSPACE, super::keyspace_options)
            .map_err(|e| read_err(&e))?;
        if let Some(bytes) = legacy.get(LEGACY_KEY).map_err(|e| read_err(&e))? {
            if !self.snapshot_path.exists() {
                write_snapshot_file(&self.snapshot_path, &bytes).map_err(|e| write_err(&e))?;
            }
        }
        db.delete_keyspace(legacy).map_err(|e| write_err(&e))
    }

    /// The current snapshot, read from its file (blocking: at start and when a follower needs
    /// it, which is rare).
    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let bytes = match read_snapshot_file(&self.snapshot_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(&e)),
        };
        hivemind_common::decode(&bytes)
            .map(Some)
            .map_err(|e| read_err(&e))
    }

    /// Makes `stored` the current snapshot, on a blocking thread (it ends with two fsyncs).
    async fn store_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let bytes = hivemind_common::encode(stored);
        let path = self.snapshot_path.clone();
        tokio::task::spawn_blocking(move || write_snapshot_file(&path, &bytes))
            .await
            .map_err(|e| write_err(&std::io::Error::other(e.to_string())))?
            .map_err(|e| write_err(&e))
    }
}

/// Replaces the snapshot file at `path` with `payload` (after its CRC32), atomically and
/// durably: written to a temporary file and fsynced, renamed over `path`, and the directory
/// fsynced so that the rename survives a crash too. A crash leaves the old file or the new one.
fn write_snapshot_file(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&crc32fast::hash(payload).to_le_bytes())?;
        file.write_all(payload)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// The payload of the snapshot file at `path`; `InvalidData` if its checksum does not match.
fn read_snapshot_file(path: &Path) -> std::io::Result<Vec<u8>> {
    checked_payload(std::fs::read(path)?).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: checksum mismatch (the file is damaged)",
                path.display()
            ),
        )
    })
}

/// The payload of a snapshot file's bytes (`crc32 (LE) || payload`), if the checksum matches.
fn checked_payload(mut bytes: Vec<u8>) -> Option<Vec<u8>> {
    if bytes.len() < 4 {
        return None;
    }
    let payload = bytes.split_off(4);
    let stored = u32::from_le_bytes(bytes.try_into().ok()?);
    (crc32fast::hash(&payload) == stored).then_some(payload)
}

/// Every step a start takes on a snapshot file's bytes: the checksum, the stored snapshot, the
/// registry inside it. `None` for a file a start would refuse. (The snapshot fuzz target's entry.)
pub fn decode_snapshot_file(bytes: Vec<u8>) -> Option<(SnapshotMeta, SmData)> {
    let stored: StoredSnapshot = hivemind_common::decode(&checked_payload(bytes)?).ok()?;
    let data = hivemind_common::decode(&stored.data).ok()?;
    Some((stored.meta, data))
}

/// A snapshot file's bytes for `meta` and `data`, as `store_snapshot` writes them (for tests and
/// the fuzz corpus).
pub fn encode_snapshot_file(meta: SnapshotMeta, data: &SmData) -> Vec<u8> {
    let payload = hivemind_common::encode(&StoredSnapshot {
        meta,
        data: hivemind_common::encode(data),
    });
    let mut file = crc32fast::hash(&payload).to_le_bytes().to_vec();
    file.extend_from_slice(&payload);
    file
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (data, meta) = {
            let state = self.shared.read();
            let index = state.applied_index();
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
                        let term = entry.log_id.leader_id.term;
                        state
                            .registry
                            .apply_entry(term, entry.log_id.index, &command)
                    }
                    EntryPayload::Membership(membership) => {
                        state.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        Ok(CommandOutput::Nothing)
                    }
                };
                responses.push(CommandResponse(result));
            }
            state.applied_index()
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
        let sm = self.clone();
        let stored = tokio::task::spawn_blocking(move || sm.load_snapshot())
            .await
            .map_err(|e| read_err(&std::io::Error::other(e.to_string())))??;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
