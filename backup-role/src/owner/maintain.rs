//! Keeping an owner's chunks alive and at R copies: heartbeats to every live space, re-placing
//! lost chunks, dropping copies beyond R (the seed's heartbeat CRON, "replacer les chunks
//! perdus", "suppression de doublons"), rebuilding the index from the spaces when this member
//! lost it, and `backup check`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use hivemind_common::backup::ChunkId;
use serde::{Deserialize, Serialize};

use super::{Batch, MaintainView, Owner, OwnerError, RunView};
use crate::placement::Index;

/// Chunks a repair reads per request.
const REPAIR_READ: usize = 64;

/// `backup check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckView {
    #[serde(flatten)]
    pub maintain: MaintainView,
    /// Chunks read back, opened and verified (`--read-data`).
    pub read: u64,
    /// Chunks that did not read back intact.
    pub damaged: Vec<String>,
    /// Every chunk at R copies, none lost or damaged, every space answered.
    pub ok: bool,
}

impl Owner {
    /// One heartbeat round and the repair it calls for.
    pub async fn maintain(&self) -> Result<MaintainView, OwnerError> {
        let mut index = self.index.lock().await;
        self.ensure_index(&mut index).await?;
        self.lose_departed(&mut index);
        let live = self.live_spaces();
        let mut view = MaintainView::default();
        // Every live space hears from this owner, also one holding nothing of it any more:
        // that is how copies beyond R and forgotten chunks are dropped.
        for (space, (addr, _)) in &live {
            if *space == self.id {
                continue;
            }
            let listed = index.heartbeat(*space);
            match self.spaces.heartbeat(addr, &self.name, &listed).await {
                Ok(missing) => index.lose(*space, Some(&missing)),
                Err(e) => {
                    self.counters
                        .heartbeats_failed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "backup heartbeat failed");
                    view.unreachable.push(addr.clone());
                }
            }
        }
        let plan = index.plan(self.replicas);
        for (id, space) in &plan.drop {
            if let Some(stored) = index.chunks.get_mut(id) {
                stored.spaces.remove(space);
                view.dropped += 1;
            }
        }
        if !plan.copy.is_empty() {
            view.copied = self.repair(&mut index, &plan.copy).await?;
        }
        let after = index.plan(self.replicas);
        view.under_replicated = after.copy.len();
        view.lost = after.lost.iter().map(ChunkId::hex).collect();
        self.counters
            .lost_chunks
            .store(after.lost.len() as u64, Ordering::Relaxed);
        if !after.lost.is_empty() {
            tracing::error!(lost = after.lost.len(), "backup chunks lost on every space");
        }
        view.snapshots = index.snapshots.len();
        view.chunks = index.referenced().len();
        self.persist(&index)?;
        Ok(view)
    }

    /// Copies each short chunk from a space that holds it to new spaces until R copies exist:
    /// read many at a time from each holder, checked, then placed and sent like a run's.
    async fn repair(
        &self,
        index: &mut Index,
        short: &[(ChunkId, usize, hivemind_common::MemberId)],
    ) -> Result<u64, OwnerError> {
        let live = self.live_spaces();
        let mut candidates = self.candidates().await?;
        let mut by_source: BTreeMap<hivemind_common::MemberId, Vec<ChunkId>> = BTreeMap::new();
        for (id, _, from) in short {
            by_source.entry(*from).or_default().push(*id);
        }
        let mut batch = Batch::default();
        let mut run = RunView::default();
        for (from, ids) in by_source {
            let Some((addr, _)) = live.get(&from) else {
                continue;
            };
            for group in ids.chunks(REPAIR_READ) {
                let sealed = match self.spaces.read_many(addr, &self.name, group).await {
                    Ok(sealed) => sealed,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read chunks to repair");
                        continue;
                    }
                };
                let checked = crate::restore::open_on_cores(&self.key, sealed).await;
                let mut answered = BTreeSet::new();
                for (id, sealed, plain) in checked {
                    answered.insert(id);
                    if plain.is_some() {
                        batch.push(id, sealed.into());
                    } else {
                        tracing::warn!(chunk = %id, "a space answered a damaged chunk");
                        index.lose(from, Some(&[id]));
                    }
                }
                let missing: Vec<ChunkId> = group
                    .iter()
                    .filter(|id| !answered.contains(id))
                    .copied()
                    .collect();
                if !missing.is_empty() {
                    index.lose(from, Some(&missing));
                }
                if batch.bytes >= self.batch_bytes {
                    self.flush(index, &mut candidates, std::mem::take(&mut batch), &mut run)
                        .await?;
                }
            }
        }
        self.flush(index, &mut candidates, batch, &mut run).await?;
        // A repair's copies are not pending a run: they belong to recorded snapshots.
        let referenced: BTreeSet<ChunkId> = index.snapshots.values().flatten().copied().collect();
        index.pending.retain(|id| !referenced.contains(id));
        self.counters
            .copies_made
            .fetch_add(run.chunks_new, Ordering::Relaxed);
        Ok(run.chunks_new)
    }

    /// Rebuilds the index when the registry records snapshots of this owner that the index
    /// does not know (its data directory was lost): where the chunks are comes from the
    /// spaces' lists, what each snapshot references from its manifest. Until it succeeds no
    /// heartbeat is sent, so nothing is dropped on a partial view.
    pub(super) async fn ensure_index(&self, index: &mut Index) -> Result<(), OwnerError> {
        let records = self.records().await?;
        let known: BTreeSet<&String> = records.iter().map(|r| &r.id).collect();
        let stale: Vec<String> = index
            .snapshots
            .keys()
            .filter(|id| !known.contains(id))
            .cloned()
            .collect();
        for id in stale {
            index.snapshots.remove(&id);
        }
        let missing: Vec<_> = records
            .iter()
            .filter(|r| !index.snapshots.contains_key(&r.id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // The live members that offer space (an owner without space holds nothing).
        let offering: BTreeSet<hivemind_common::MemberId> = self
            .cp
            .backup_state()
            .await?
            .spaces
            .iter()
            .map(|(id, _)| *id)
            .collect();
        let mut live = self.live_spaces();
        live.retain(|id, _| offering.contains(id));
        let addrs: Vec<String> = live.values().map(|(a, _)| a.clone()).collect();
        let (at, errors) = self.spaces.locate(&addrs, &self.name).await;
        if !errors.is_empty() {
            return Err(OwnerError::Failed(format!(
                "rebuilding the index: {}",
                errors[0]
            )));
        }
        for (id, addrs_of) in &at {
            let stored = index.chunks.entry(*id).or_default();
            for (space, (addr, _)) in &live {
                if addrs_of.contains(addr) {
                    stored.spaces.insert(*space);
                }
            }
        }
        let source = crate::restore::Source {
            spaces: self.spaces.clone(),
            owner: self.name.clone(),
            at,
        };
        for record in missing {
            let walked = source.walk(&self.key, record, None).await?;
            index.snapshots.insert(record.id.clone(), walked.referenced);
        }
        tracing::info!(
            snapshots = index.snapshots.len(),
            "backup index rebuilt from the spaces"
        );
        self.persist(index)
    }

    /// `backup check`: a heartbeat round with its repair, then (with `read_percent`) that
    /// share of the chunks read back and verified.
    pub async fn check(&self, read_percent: u8) -> Result<CheckView, OwnerError> {
        let maintain = self.maintain().await?;
        let index = self.index.lock().await;
        let source = self.source(&index);
        let mut view = CheckView {
            maintain,
            ..Default::default()
        };
        let sample: Vec<ChunkId> = index
            .referenced()
            .into_iter()
            .filter(|_| rand::random::<f64>() * 100.0 < f64::from(read_percent.min(100)))
            .collect();
        view.read = sample.len() as u64;
        let mut damaged = Vec::new();
        for wave in sample.chunks(8) {
            let reads = wave.iter().map(|id| source.open(&self.key, id));
            for (id, read) in wave.iter().zip(futures::future::join_all(reads).await) {
                if read.is_err() {
                    damaged.push(id.hex());
                }
            }
        }
        view.damaged = damaged;
        view.ok = view.maintain.lost.is_empty()
            && view.maintain.under_replicated == 0
            && view.maintain.unreachable.is_empty()
            && view.damaged.is_empty();
        Ok(view)
    }
}
