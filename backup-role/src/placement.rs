//! Where chunks go and what the owner must do to keep R copies (DESIGN.md §6d), sans IO.
//!
//! - [`place`]: each new chunk on the R spaces with the most free space that do not hold it,
//!   on distinct nodes when possible; the free space a batch uses is counted as it is placed.
//! - [`Index`]: the owner's map of its chunks to the spaces holding them, and the snapshots
//!   that reference them; [`Index::plan`] says which chunks need copies (lost ones) and which
//!   copies are beyond R.

use std::collections::{BTreeMap, BTreeSet};

use hivemind_common::backup::ChunkId;
use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};

/// A space a chunk can be placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: MemberId,
    pub node: String,
    pub free: u64,
}

/// Why a chunk cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("not enough space: a chunk of {bytes} bytes needs {wanted} spaces, {found} have room")]
    NotEnoughSpace {
        bytes: u64,
        wanted: usize,
        found: usize,
    },
}

/// Chooses `wanted` spaces for a chunk of `bytes` that is already on `holding`: the ones with
/// the most free space, preferring nodes that hold no copy yet; subtracts the bytes from the
/// chosen candidates' free space.
pub fn place(
    candidates: &mut [Candidate],
    holding: &BTreeSet<MemberId>,
    bytes: u64,
    wanted: usize,
) -> Result<Vec<MemberId>, PlaceError> {
    let mut nodes: BTreeSet<String> = candidates
        .iter()
        .filter(|c| holding.contains(&c.id))
        .map(|c| c.node.clone())
        .collect();
    let mut chosen = Vec::with_capacity(wanted);
    while chosen.len() < wanted {
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| !holding.contains(&c.id) && !chosen.contains(&c.id) && c.free >= bytes)
            // New node first, then the most free space, then the lowest id (deterministic).
            .max_by_key(|(_, c)| (!nodes.contains(&c.node), c.free, std::cmp::Reverse(c.id)))
            .map(|(i, _)| i);
        let Some(i) = best else {
            return Err(PlaceError::NotEnoughSpace {
                bytes,
                wanted,
                found: chosen.len(),
            });
        };
        candidates[i].free -= bytes;
        nodes.insert(candidates[i].node.clone());
        chosen.push(candidates[i].id);
    }
    Ok(chosen)
}

/// One chunk the owner stored: its sealed size and where its copies are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub sealed_len: u64,
    pub spaces: BTreeSet<MemberId>,
}

/// The owner's index, kept durably in its role store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub chunks: BTreeMap<ChunkId, Stored>,
    /// Every chunk (data and manifest) each recorded snapshot references.
    pub snapshots: BTreeMap<String, BTreeSet<ChunkId>>,
    /// Chunks sent by a run that has not recorded its snapshot yet (kept alive, resumable).
    pub pending: BTreeSet<ChunkId>,
}

/// What keeping R copies takes now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Chunks with fewer than R copies: (chunk, copies missing, a space to read it from).
    pub copy: Vec<(ChunkId, usize, MemberId)>,
    /// Chunks with no copy left anywhere.
    pub lost: Vec<ChunkId>,
    /// Copies beyond R, to drop: (chunk, space).
    pub drop: Vec<(ChunkId, MemberId)>,
}

impl Index {
    /// Whether the chunk is stored at least `replicas` times (a run need not send it).
    pub fn held(&self, id: &ChunkId, replicas: usize) -> bool {
        self.chunks
            .get(id)
            .is_some_and(|s| s.spaces.len() >= replicas)
    }

    /// The chunks some snapshot or the pending run needs.
    pub fn referenced(&self) -> BTreeSet<ChunkId> {
        let mut all: BTreeSet<ChunkId> = self.snapshots.values().flatten().copied().collect();
        all.extend(self.pending.iter().copied());
        all
    }

    /// The heartbeat for `space`: the referenced chunks it holds.
    pub fn heartbeat(&self, space: MemberId) -> Vec<ChunkId> {
        let referenced = self.referenced();
        self.chunks
            .iter()
            .filter(|(id, s)| s.spaces.contains(&space) && referenced.contains(id))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every space some chunk is on.
    pub fn spaces(&self) -> BTreeSet<MemberId> {
        self.chunks
            .values()
            .flat_map(|s| s.spaces.iter().copied())
            .collect()
    }

    /// A space is gone (failed, left, or its heartbeat said it lost these chunks).
    pub fn lose(&mut self, space: MemberId, chunks: Option<&[ChunkId]>) {
        for (id, stored) in self.chunks.iter_mut() {
            if chunks.is_none_or(|c| c.contains(id)) {
                stored.spaces.remove(&space);
            }
        }
    }

    /// Forgets the chunks nothing references any more (the spaces drop them at the next
    /// heartbeat, which no longer lists them).
    pub fn prune(&mut self) {
        let referenced = self.referenced();
        self.chunks.retain(|id, _| referenced.contains(id));
    }

    /// What keeping `replicas` copies of every referenced chunk takes.
    pub fn plan(&self, replicas: usize) -> Plan {
        let mut plan = Plan::default();
        for id in self.referenced() {
            let Some(stored) = self.chunks.get(&id) else {
                plan.lost.push(id);
                continue;
            };
            match stored.spaces.len() {
                0 => plan.lost.push(id),
                n if n < replicas => {
                    let from = *stored.spaces.iter().next().expect("n > 0");
                    plan.copy.push((id, replicas - n, from));
                }
                n => {
                    // Keep the lowest ids: every owner run decides the same way.
                    for space in stored.spaces.iter().skip(replicas).take(n - replicas) {
                        plan.drop.push((id, *space));
                    }
                }
            }
        }
        plan
    }
}

#[cfg(test)]
#[path = "placement/tests.rs"]
mod tests;
