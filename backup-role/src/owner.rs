//! The owner: backs up its `--backup-path` directories onto the spaces (the seed's client
//! side): find the chunks to update, ask for the free spaces, place the chunks, reserve, send,
//! record the snapshot; keep the chunks alive with heartbeats and re-place lost ones
//! ([`Owner::maintain`]); restore and forget snapshots. Runs and heartbeats take turns on the
//! index, so a heartbeat never drops what a run is sending.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use hivemind_common::backup::{BackupOp, BackupOutcome, ChunkId, SnapshotRecord};
use hivemind_common::role::{ControlPlaneClient, CpCallError, Membership, RoleReport, RoleStore};
use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Mutex};

use crate::crypto::OwnerKey;
use crate::placement::{self, Candidate, Index, Stored};
use crate::progress::Progress;
use crate::restore::{self, RestoreError, RestoreView, Source};
use crate::scan::{self, Scanner, TreeCache};
use crate::space::now_ms;
use crate::tree::{self, ScanError};
use crate::wire::Spaces;

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
    /// Shares of a batch a space did not take (refused or failed), placed on others.
    pub replaced: AtomicU64,
    /// Repairs started because a space failed or left.
    pub prompt_repairs: AtomicU64,
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
    /// The last run's tree blobs (`<data-dir>/backup/trees/`).
    pub cache_dir: PathBuf,
    /// The threads that read, chunk, hash, compress and seal (one per core).
    pub pool: Arc<rayon::ThreadPool>,
    pub run_progress: Arc<Progress>,
    pub restore_progress: Arc<Progress>,
}

/// Sealed chunks waiting to be placed and sent.
#[derive(Default)]
pub(crate) struct Batch {
    chunks: Vec<(ChunkId, Bytes)>,
    bytes: u64,
}

impl Batch {
    pub(crate) fn push(&mut self, id: ChunkId, sealed: Bytes) {
        self.bytes += sealed.len() as u64;
        self.chunks.push((id, sealed));
    }
}

/// Sealed chunks queued between the scan and the batches.
const QUEUED_CHUNKS: usize = 16;

/// The snapshot id: 16 hex digits of its root blob's id.
fn snapshot_id(first: &ChunkId) -> String {
    first.0[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The threads a run scans with: one per core.
pub fn scan_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name(|i| format!("backup-scan-{i}"))
        .build()
        .expect("the scan threads start")
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

    /// The spaces holding some of this owner's chunks that failed or left.
    fn departed(&self, index: &Index) -> Vec<MemberId> {
        let live = self.live_spaces();
        index
            .spaces()
            .into_iter()
            .filter(|s| !live.contains_key(s))
            .collect()
    }

    /// Forgets the copies on spaces that failed or left: they do not count toward R.
    fn lose_departed(&self, index: &mut Index) {
        for space in self.departed(index) {
            index.lose(space, None);
        }
    }

    /// Whether a space holding some of this owner's chunks failed or left (repair is due).
    pub async fn lost_a_space(&self) -> bool {
        !self.departed(&*self.index.lock().await).is_empty()
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
        let whole = paths.is_none();
        let roots = paths.unwrap_or_else(|| self.paths.clone());
        if roots.is_empty() {
            return Err(OwnerError::NoPaths);
        }
        tree::check_roots(&roots)?;
        let mut index = self.index.lock().await;
        self.run_progress.start();
        let result = self.run_locked(&mut index, roots, whole).await;
        self.run_progress.finish();
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
        whole: bool,
    ) -> Result<RunView, OwnerError> {
        self.lose_departed(index);
        let mut candidates = self.candidates().await?;
        let mut view = RunView::default();
        let (tx, mut rx) = mpsc::channel::<(ChunkId, Bytes)>(QUEUED_CHUNKS);
        let held: HashSet<ChunkId> = index
            .chunks
            .keys()
            .filter(|id| index.held(id, self.replicas))
            .copied()
            .collect();
        let time_ms = now_ms();
        let scan = {
            let (key, pool, progress) = (
                self.key.clone(),
                self.pool.clone(),
                self.run_progress.clone(),
            );
            let (roots, cache_dir) = (roots.clone(), self.cache_dir.clone());
            // Reading, chunking, hashing, compressing and sealing run on the scan threads,
            // beside the task runtime: the member keeps gossiping.
            tokio::task::spawn_blocking(move || {
                let counting = progress.clone();
                let count_roots = roots.clone();
                std::thread::spawn(move || {
                    let (files, bytes) = scan::count(&count_roots);
                    counting.set_totals(files, bytes);
                });
                let cache = TreeCache::open(cache_dir);
                let held_fn = |id: &ChunkId| held.contains(id);
                let send_fn = |id: ChunkId, sealed: Vec<u8>| {
                    tx.blocking_send((id, Bytes::from(sealed)))
                        .map_err(|_| ScanError::Stopped)
                };
                let scanned = pool.install(|| {
                    Scanner::new(&key, &held_fn, &send_fn, Some(&cache), &progress)
                        .snapshot(&roots, time_ms)
                });
                if scanned.is_ok() && whole {
                    cache.sweep();
                }
                scanned
            })
        };
        // Batches fill while the one before is placed and sent.
        let (batches_tx, batches) = mpsc::channel::<Batch>(1);
        let batch_bytes = self.batch_bytes;
        let fill = async move {
            let mut batch = Batch::default();
            while let Some((id, sealed)) = rx.recv().await {
                batch.push(id, sealed);
                if batch.bytes >= batch_bytes
                    && batches_tx.send(std::mem::take(&mut batch)).await.is_err()
                {
                    return;
                }
            }
            if !batch.chunks.is_empty() {
                let _ = batches_tx.send(batch).await;
            }
        };
        let send = async {
            // Owned here: when a batch fails, the queue closes and the filling (then the
            // scan) stops instead of waiting for room.
            let mut batches = batches;
            while let Some(batch) = batches.recv().await {
                self.flush(index, &mut candidates, batch, &mut view).await?;
            }
            Ok::<_, OwnerError>(())
        };
        let ((), sent) = tokio::join!(fill, send);
        let scanned = scan.await.expect("the scan does not panic");
        sent?;
        let scanned = scanned?;

        let paths_plain = hivemind_common::encode(
            &roots
                .iter()
                .map(|r| tree::ByteBuf::of(r))
                .collect::<Vec<_>>(),
        );
        let paths_id = self.key.chunk_id(&paths_plain);
        let mut sealed_paths = paths_id.0.to_vec();
        sealed_paths.extend(self.key.seal(&paths_id, &paths_plain));
        let record = SnapshotRecord {
            id: snapshot_id(&scanned.root),
            owner: self.name.clone(),
            time_ms,
            files: scanned.files,
            bytes: scanned.bytes,
            manifest: vec![scanned.root],
            sealed_paths,
        };
        self.cp
            .backup(BackupOp::Record {
                snapshot: record.clone(),
            })
            .await
            .map_err(|e| OwnerError::Failed(format!("recording the snapshot: {e}")))?;
        index
            .snapshots
            .insert(record.id.clone(), scanned.referenced.into_iter().collect());
        index.pending.clear();
        self.persist(index)?;
        view.snapshot = record.id;
        view.files = record.files;
        view.bytes = record.bytes;
        tracing::info!(snapshot = %view.snapshot, files = view.files, chunks_new = view.chunks_new, bytes_sent = view.bytes_sent, "backup recorded");
        Ok(view)
    }

    /// Places, reserves and sends the batch: every chunk ends on R spaces (counting those
    /// already holding it), the uploads to different spaces at once. A space that refuses its
    /// reservation or fails its upload leaves `candidates` for the rest of the run and its
    /// share is placed again on the others; the batch fails only when no placement is left.
    /// Chunks sent are in the index (pending) before this answers, so an interrupted run
    /// resumes without sending them again.
    pub(crate) async fn flush(
        &self,
        index: &mut Index,
        candidates: &mut Vec<Candidate>,
        batch: Batch,
        view: &mut RunView,
    ) -> Result<(), OwnerError> {
        let mut new_chunks = BTreeSet::new();
        loop {
            let mut per_space: BTreeMap<MemberId, Vec<usize>> = BTreeMap::new();
            for (i, (id, sealed)) in batch.chunks.iter().enumerate() {
                let holding = index
                    .chunks
                    .get(id)
                    .map(|s| s.spaces.clone())
                    .unwrap_or_default();
                let need = self.replicas.saturating_sub(holding.len());
                if need == 0 {
                    continue;
                }
                let chosen = placement::place(candidates, &holding, sealed.len() as u64, need)
                    .map_err(|e| OwnerError::Failed(e.to_string()))?;
                for space in chosen {
                    per_space.entry(space).or_default().push(i);
                }
            }
            if per_space.is_empty() {
                break;
            }
            let live = self.live_spaces();
            let (live, batch) = (&live, &batch);
            let mut sends: futures::stream::FuturesUnordered<_> = per_space
                .iter()
                .map(|(space, items)| async move {
                    (
                        *space,
                        items,
                        self.send_to(live, *space, items, batch).await,
                    )
                })
                .collect();
            // Each space's share is in the index as soon as that space took it: a run
            // interrupted now sends again at most the shares still in flight.
            while let Some((space, items, outcome)) = sends.next().await {
                if let Err(reason) = outcome {
                    self.counters.replaced.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%space, %reason, "a space did not take its share of a backup batch: placing it on the others");
                    candidates.retain(|c| c.id != space);
                    continue;
                }
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
                    self.run_progress.sent(sealed.len() as u64);
                    self.counters
                        .bytes_sent
                        .fetch_add(sealed.len() as u64, Ordering::Relaxed);
                }
                self.persist(index)?;
            }
        }
        view.chunks_new += new_chunks.len() as u64;
        self.counters
            .chunks_sent
            .fetch_add(new_chunks.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Reserves room on `space` for the chunks `items` of the batch and uploads them as one
    /// request (a space packs them); the error says why the space did not take them.
    async fn send_to(
        &self,
        live: &BTreeMap<MemberId, (String, String)>,
        space: MemberId,
        items: &[usize],
        batch: &Batch,
    ) -> Result<(), String> {
        let (addr, _) = live
            .get(&space)
            .ok_or_else(|| format!("space {space} is gone"))?;
        let bytes: u64 = items.iter().map(|i| batch.chunks[*i].1.len() as u64).sum();
        let asked = vec![(space, crate::pack::upper_bound(items.len(), bytes))];
        let reservation = match self
            .cp
            .backup(BackupOp::Reserve {
                spaces: asked,
                ttl_ms: RESERVATION_MS,
            })
            .await
        {
            Ok(BackupOutcome::Reserved(granted)) if granted.len() == 1 => granted[0].1,
            Ok(other) => return Err(format!("reservation answered {other:?}")),
            Err(e) => return Err(format!("reservation refused: {e}")),
        };
        let chunks: Vec<(ChunkId, Bytes)> =
            items.iter().map(|i| batch.chunks[*i].clone()).collect();
        self.spaces
            .upload(addr, &self.name, reservation, chunks)
            .await
            .map(|_| ())
            .map_err(|e| format!("send failed: {e}"))
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
        let source = {
            let mut index = self.index.lock().await;
            if !index.snapshots.contains_key(snapshot) {
                // A snapshot this index does not know (taken before this member lost its
                // data, or written by an older build): where its chunks are comes from the
                // spaces.
                self.ensure_index(&mut index).await?;
            }
            self.source(&index)
        };
        Ok(restore::restore(&self.key, &record, &source, to, sub, &self.restore_progress).await?)
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

#[cfg(test)]
#[path = "owner/tests.rs"]
mod tests;
