//! The owner: backs up its `--backup-path` directories onto the spaces (the seed's client
//! side): find the chunks to update, ask for the free spaces, place the chunks, reserve, send,
//! record the snapshot; keep the chunks alive with heartbeats and re-place lost ones
//! ([`Owner::maintain`]); restore and forget snapshots. Runs and heartbeats take turns on the
//! index, so a heartbeat never drops what a run is sending.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hivemind_common::backup::{BackupOp, BackupOutcome, ChunkId, SnapshotRecord};
use hivemind_common::role::{ControlPlaneClient, CpCallError, Membership, RoleReport, RoleStore};
use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Mutex};

use crate::crypto::OwnerKey;
use crate::placement::{self, Candidate, Index, Stored};
use crate::restore::{self, RestoreError, RestoreView, Source};
use crate::space::now_ms;
use crate::tree::{self, ScanError};
use crate::wire::{Spaces, Upload};

/// How long a reservation waits for its upload.
const RESERVATION_MS: u64 = 10 * 60 * 1000;
const INDEX_KEY: &[u8] = b"index";

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("{0}")]
    BadPath(#[from] ScanError),
    #[error("no path to back up: give --backup-path to the member or --path to the run")]
    NoPaths,
    /// A reservation refused, a send failed, not enough space: reported as `backup_failed`.
    #[error("backup failed: {0}")]
    Failed(String),
    #[error("no snapshot {0}")]
    NoSnapshot(String),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("control plane: {0}")]
    Cp(#[from] CpCallError),
}

/// `backup run --json` (DESIGN.md §6d).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    pub snapshot: String,
    pub files: u64,
    pub bytes: u64,
    /// Chunks this run stored that the spaces did not hold.
    pub chunks_new: u64,
    /// Sealed bytes sent, every copy counted.
    pub bytes_sent: u64,
}

/// What [`Owner::maintain`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MaintainView {
    pub snapshots: usize,
    pub chunks: usize,
    /// Copies made to bring chunks back to R.
    pub copied: u64,
    /// Copies beyond R dropped.
    pub dropped: u64,
    /// Chunks with fewer than R copies after the repair.
    pub under_replicated: usize,
    /// Chunks no space holds.
    pub lost: Vec<String>,
    /// Spaces whose heartbeat failed.
    pub unreachable: Vec<String>,
}

/// The owner's counters, read by `/metrics` and the status route.
#[derive(Debug, Default)]
pub struct OwnerCounters {
    pub runs_ok: AtomicU64,
    pub runs_failed: AtomicU64,
    pub chunks_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub heartbeats_failed: AtomicU64,
    pub copies_made: AtomicU64,
    pub lost_chunks: AtomicU64,
}

pub struct Owner {
    pub key: OwnerKey,
    pub name: String,
    pub id: MemberId,
    pub paths: Vec<PathBuf>,
    pub replicas: usize,
    /// A batch is reserved and sent once its sealed chunks reach this size (`--backup-batch`).
    pub batch_bytes: u64,
    pub cp: Arc<dyn ControlPlaneClient>,
    pub membership: watch::Receiver<Arc<Membership>>,
    pub store: Arc<dyn RoleStore>,
    pub spaces: Spaces,
    pub index: Mutex<Index>,
    pub counters: OwnerCounters,
    pub last_run: std::sync::Mutex<Option<RunView>>,
}

/// Sealed chunks waiting to be placed and sent.
#[derive(Default)]
struct Batch {
    chunks: Vec<(ChunkId, Vec<u8>)>,
    bytes: u64,
}

impl Batch {
    fn push(&mut self, id: ChunkId, sealed: Vec<u8>) {
        self.bytes += sealed.len() as u64;
        self.chunks.push((id, sealed));
    }
}

/// The snapshot id: 16 hex digits of its first manifest chunk's id.
fn snapshot_id(first: &ChunkId) -> String {
    first.0[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Owner {
    pub fn load_index(store: &dyn RoleStore) -> Index {
        store
            .get(INDEX_KEY)
            .ok()
            .flatten()
            .and_then(|b| hivemind_common::decode(&b).ok())
            .unwrap_or_default()
    }

    fn persist(&self, index: &Index) -> Result<(), OwnerError> {
        self.store
            .put(INDEX_KEY, &hivemind_common::encode(index))
            .map_err(|e| OwnerError::Failed(format!("cannot keep the index: {e}")))
    }

    /// Live members offering space, by id: their HTTP address and node.
    fn live_spaces(&self) -> BTreeMap<MemberId, (String, String)> {
        self.membership
            .borrow()
            .performing("backup")
            .map(|p| (p.id, (p.http_addr.clone(), p.node.clone())))
            .collect()
    }

    /// The spaces a chunk can go to now: live, offering room in the ledger, not this member.
    async fn candidates(&self) -> Result<Vec<Candidate>, OwnerError> {
        let state = self.cp.backup_state().await?;
        let live = self.live_spaces();
        Ok(state
            .spaces
            .iter()
            .filter(|(id, _)| *id != self.id)
            .filter_map(|(id, record)| {
                live.get(id).map(|(_, node)| Candidate {
                    id: *id,
                    node: node.clone(),
                    free: record.free(),
                })
            })
            .collect())
    }

    /// Takes a snapshot of `paths` (the member's `--backup-path` when `None`). On failure the
    /// reason goes to the feed as `backup_failed` and no snapshot is recorded.
    pub async fn run(&self, paths: Option<Vec<PathBuf>>) -> Result<RunView, OwnerError> {
        let roots = paths.unwrap_or_else(|| self.paths.clone());
        if roots.is_empty() {
            return Err(OwnerError::NoPaths);
        }
        tree::check_roots(&roots)?;
        let mut index = self.index.lock().await;
        let result = self.run_locked(&mut index, roots).await;
        match &result {
            Ok(view) => {
                self.counters.runs_ok.fetch_add(1, Ordering::Relaxed);
                *self.last_run.lock().expect("last run") = Some(view.clone());
            }
            Err(e) => {
                self.counters.runs_failed.fetch_add(1, Ordering::Relaxed);
                self.report_failure(e.to_string()).await;
            }
        }
        result
    }

    async fn report_failure(&self, reason: String) {
        tracing::warn!(%reason, "backup failed");
        let report = RoleReport::BackupFailed {
            owner: self.name.clone(),
            reason,
        };
        if let Err(e) = self.cp.report(report).await {
            tracing::warn!(error = %e, "cannot report backup_failed to the feed");
        }
    }

    async fn run_locked(
        &self,
        index: &mut Index,
        roots: Vec<PathBuf>,
    ) -> Result<RunView, OwnerError> {
        let live = self.live_spaces();
        for space in index.spaces() {
            if !live.contains_key(&space) {
                index.lose(space, None);
            }
        }
        let mut candidates = self.candidates().await?;
        let mut view = RunView::default();
        // Hashing and sealing run beside the task runtime: the member keeps gossiping.
        let (tx, mut rx) = mpsc::channel::<(ChunkId, Vec<u8>)>(4);
        let (key, time_ms) = (self.key.clone(), now_ms());
        let held: std::collections::HashSet<ChunkId> = index
            .chunks
            .keys()
            .filter(|id| index.held(id, self.replicas))
            .copied()
            .collect();
        let scan_roots = roots.clone();
        let scan = tokio::task::spawn_blocking(move || {
            let mut skipped = 0;
            let mut hand = |id, plain: Vec<u8>| {
                if held.contains(&id) {
                    return Ok(());
                }
                let sealed = key.seal(&id, &plain);
                tx.blocking_send((id, sealed))
                    .map_err(|_| ScanError::Stopped)
            };
            let manifest = tree::scan(&scan_roots, &key, time_ms, &mut hand, &mut skipped)?;
            let mut manifest_ids = Vec::new();
            for piece in manifest.pieces() {
                let id = key.chunk_id(&piece);
                manifest_ids.push(id);
                hand(id, piece)?;
            }
            let paths_plain = hivemind_common::encode(&manifest.roots);
            let paths_id = key.chunk_id(&paths_plain);
            let mut sealed_paths = paths_id.0.to_vec();
            sealed_paths.extend(key.seal(&paths_id, &paths_plain));
            Ok::<_, ScanError>((manifest, manifest_ids, sealed_paths))
        });
        let mut batch = Batch::default();
        while let Some((id, sealed)) = rx.recv().await {
            batch.push(id, sealed);
            if batch.bytes >= self.batch_bytes {
                self.flush(index, &mut candidates, &mut batch, &mut view)
                    .await?;
            }
        }
        let (manifest, manifest_ids, sealed_paths) =
            scan.await.expect("the scan does not panic")?;
        self.flush(index, &mut candidates, &mut batch, &mut view)
            .await?;

        let record = SnapshotRecord {
            id: snapshot_id(&manifest_ids[0]),
            owner: self.name.clone(),
            time_ms,
            files: manifest.files(),
            bytes: manifest.bytes(),
            manifest: manifest_ids.clone(),
            sealed_paths,
        };
        self.cp
            .backup(BackupOp::Record {
                snapshot: record.clone(),
            })
            .await
            .map_err(|e| OwnerError::Failed(format!("recording the snapshot: {e}")))?;
        let mut referenced: BTreeSet<ChunkId> = manifest.chunks().collect();
        referenced.extend(manifest_ids);
        index.snapshots.insert(record.id.clone(), referenced);
        index.pending.clear();
        self.persist(index)?;
        view.snapshot = record.id;
        view.files = record.files;
        view.bytes = record.bytes;
        tracing::info!(snapshot = %view.snapshot, files = view.files, chunks_new = view.chunks_new, "backup recorded");
        Ok(view)
    }

    /// Places, reserves and sends the batch: every chunk ends on R spaces (counting those
    /// already holding it). Chunks sent are in the index (pending) before this answers, so an
    /// interrupted run resumes without sending them again.
    async fn flush(
        &self,
        index: &mut Index,
        candidates: &mut [Candidate],
        batch: &mut Batch,
        view: &mut RunView,
    ) -> Result<(), OwnerError> {
        if batch.chunks.is_empty() {
            return Ok(());
        }
        let mut per_space: BTreeMap<MemberId, Vec<usize>> = BTreeMap::new();
        for (i, (id, sealed)) in batch.chunks.iter().enumerate() {
            let holding = index
                .chunks
                .get(id)
                .map(|s| s.spaces.clone())
                .unwrap_or_default();
            let need = self.replicas.saturating_sub(holding.len());
            let chosen = placement::place(candidates, &holding, sealed.len() as u64, need)
                .map_err(|e| OwnerError::Failed(e.to_string()))?;
            for space in chosen {
                per_space.entry(space).or_default().push(i);
            }
        }
        let asked: Vec<(MemberId, u64)> = per_space
            .iter()
            .map(|(space, items)| {
                let bytes = items.iter().map(|i| batch.chunks[*i].1.len() as u64).sum();
                (*space, crate::pack::upper_bound(items.len(), bytes))
            })
            .collect();
        let granted = match self
            .cp
            .backup(BackupOp::Reserve {
                spaces: asked,
                ttl_ms: RESERVATION_MS,
            })
            .await
        {
            Ok(BackupOutcome::Reserved(granted)) => granted,
            Ok(other) => {
                return Err(OwnerError::Failed(format!(
                    "reservation answered {other:?}"
                )))
            }
            Err(e) => return Err(OwnerError::Failed(format!("reservation refused: {e}"))),
        };
        let live = self.live_spaces();
        let mut new_chunks = BTreeSet::new();
        for (space, reservation) in granted {
            let items = &per_space[&space];
            let addr = live
                .get(&space)
                .map(|(a, _)| a.clone())
                .ok_or_else(|| OwnerError::Failed(format!("space {space} is gone")))?;
            let upload = Upload {
                owner: self.name.clone(),
                reservation,
                chunks: items
                    .iter()
                    .map(|i| {
                        (
                            batch.chunks[*i].0,
                            tree::ByteBuf(batch.chunks[*i].1.clone()),
                        )
                    })
                    .collect(),
            };
            self.spaces
                .upload(&addr, &upload)
                .await
                .map_err(|e| OwnerError::Failed(format!("send failed: {e}")))?;
            for i in items {
                let (id, sealed) = &batch.chunks[*i];
                let stored = index.chunks.entry(*id).or_insert_with(|| Stored {
                    sealed_len: sealed.len() as u64,
                    spaces: BTreeSet::new(),
                });
                stored.spaces.insert(space);
                index.pending.insert(*id);
                new_chunks.insert(*id);
                view.bytes_sent += sealed.len() as u64;
                self.counters
                    .bytes_sent
                    .fetch_add(sealed.len() as u64, Ordering::Relaxed);
            }
            self.persist(index)?;
        }
        view.chunks_new += new_chunks.len() as u64;
        self.counters
            .chunks_sent
            .fetch_add(new_chunks.len() as u64, Ordering::Relaxed);
        batch.chunks.clear();
        batch.bytes = 0;
        Ok(())
    }
}

/// Reading snapshots back: listing, restoring, forgetting.
impl Owner {
    /// This owner's snapshot records, oldest first.
    pub async fn records(&self) -> Result<Vec<SnapshotRecord>, OwnerError> {
        let state = self.cp.backup_state().await?;
        let mut mine: Vec<SnapshotRecord> = state
            .snapshots
            .into_iter()
            .filter(|s| s.owner == self.name)
            .collect();
        mine.sort_by_key(|s| s.time_ms);
        Ok(mine)
    }

    /// Where the index says each chunk is, as addresses of live spaces.
    fn source(&self, index: &Index) -> Source {
        let live = self.live_spaces();
        let at = index
            .chunks
            .iter()
            .map(|(id, s)| {
                let addrs = s
                    .spaces
                    .iter()
                    .filter_map(|sp| live.get(sp).map(|(a, _)| a.clone()))
                    .collect();
                (*id, addrs)
            })
            .collect();
        Source {
            spaces: self.spaces.clone(),
            owner: self.name.clone(),
            at,
        }
    }

    pub async fn restore(
        &self,
        snapshot: &str,
        to: &Path,
        sub: Option<&Path>,
    ) -> Result<RestoreView, OwnerError> {
        let record = self
            .records()
            .await?
            .into_iter()
            .find(|s| s.id == snapshot)
            .ok_or_else(|| OwnerError::NoSnapshot(snapshot.to_string()))?;
        let source = self.source(&*self.index.lock().await);
        Ok(restore::restore(&self.key, &record, &source, to, sub).await?)
    }

    /// Forgets a snapshot: its record goes, and its chunks no other snapshot references are
    /// dropped by the spaces at the next heartbeat.
    pub async fn forget(&self, snapshot: &str) -> Result<(), OwnerError> {
        let mut index = self.index.lock().await;
        match self
            .cp
            .backup(BackupOp::Forget {
                id: snapshot.to_string(),
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == "unknown_snapshot" => {
                return Err(OwnerError::NoSnapshot(snapshot.to_string()))
            }
            Err(e) => return Err(e.into()),
        }
        index.snapshots.remove(snapshot);
        index.prune();
        self.persist(&index)
    }

    /// The paths a snapshot record covers (opened with the owner key).
    pub fn paths_of(key: &OwnerKey, record: &SnapshotRecord) -> Option<Vec<String>> {
        if record.sealed_paths.len() < 32 {
            return None;
        }
        let (id, sealed) = record.sealed_paths.split_at(32);
        let id = ChunkId(id.try_into().ok()?);
        let plain = key.open(&id, sealed).ok()?;
        let roots: Vec<tree::ByteBuf> = hivemind_common::decode(&plain).ok()?;
        Some(
            roots
                .iter()
                .map(|r| r.path().to_string_lossy().to_string())
                .collect(),
        )
    }
}

#[path = "owner/maintain.rs"]
mod maintain;
pub use maintain::CheckView;
