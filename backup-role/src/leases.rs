//! A space's bookkeeping of the chunks it holds (DESIGN.md §6d), sans IO: per owner, each
//! chunk's size and lease. An owner's heartbeat lists its chunks here: listed ones are kept
//! for another lease, missing ones are named back to the owner, and the owner's chunks it no
//! longer lists are dropped (forgotten snapshots, copies beyond R). A chunk whose lease ran
//! out is dropped by [`Leases::expire`].

use std::collections::BTreeMap;

use hivemind_common::backup::ChunkId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub len: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leases {
    owners: BTreeMap<String, BTreeMap<ChunkId, Held>>,
}

/// What a heartbeat did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Beat {
    /// Listed by the owner, not held here.
    pub missing: Vec<ChunkId>,
    /// Held here, no longer listed: to delete.
    pub dropped: Vec<ChunkId>,
}

impl Leases {
    /// Bytes held for all owners.
    pub fn stored(&self) -> u64 {
        self.owners
            .values()
            .flat_map(|c| c.values())
            .map(|h| h.len)
            .sum()
    }

    pub fn holds(&self, owner: &str, id: &ChunkId) -> bool {
        self.owners.get(owner).is_some_and(|c| c.contains_key(id))
    }

    pub fn get(&self, owner: &str, id: &ChunkId) -> Option<Held> {
        self.owners.get(owner)?.get(id).copied()
    }

    pub fn list(&self, owner: &str) -> Vec<ChunkId> {
        self.owners
            .get(owner)
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn owners(&self) -> impl Iterator<Item = (&String, usize)> {
        self.owners.iter().map(|(o, c)| (o, c.len()))
    }

    /// A chunk was stored (or found on disk): held until `now_ms + lease_ms`.
    pub fn add(&mut self, owner: &str, id: ChunkId, len: u64, now_ms: u64, lease_ms: u64) {
        let held = self.owners.entry(owner.to_string()).or_default();
        let expires_ms = now_ms + lease_ms;
        held.entry(id)
            .and_modify(|h| h.expires_ms = h.expires_ms.max(expires_ms))
            .or_insert(Held { len, expires_ms });
    }

    /// Forgets one chunk (found damaged).
    pub fn remove(&mut self, owner: &str, id: &ChunkId) {
        if let Some(held) = self.owners.get_mut(owner) {
            held.remove(id);
            if held.is_empty() {
                self.owners.remove(owner);
            }
        }
    }

    /// The owner's heartbeat listing `listed`.
    pub fn heartbeat(
        &mut self,
        owner: &str,
        listed: &[ChunkId],
        now_ms: u64,
        lease_ms: u64,
    ) -> Beat {
        let listed: std::collections::BTreeSet<ChunkId> = listed.iter().copied().collect();
        let held = self.owners.entry(owner.to_string()).or_default();
        let missing = listed
            .iter()
            .filter(|id| !held.contains_key(id))
            .copied()
            .collect();
        let dropped: Vec<ChunkId> = held
            .keys()
            .filter(|id| !listed.contains(id))
            .copied()
            .collect();
        for id in &dropped {
            held.remove(id);
        }
        for (id, h) in held.iter_mut() {
            if listed.contains(id) {
                h.expires_ms = h.expires_ms.max(now_ms + lease_ms);
            }
        }
        if held.is_empty() {
            self.owners.remove(owner);
        }
        Beat { missing, dropped }
    }

    /// Drops the chunks whose lease ended by `now_ms`; answers them.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(String, ChunkId)> {
        let mut out = Vec::new();
        for (owner, held) in self.owners.iter_mut() {
            held.retain(|id, h| {
                let keep = h.expires_ms > now_ms;
                if !keep {
                    out.push((owner.clone(), *id));
                }
                keep
            });
        }
        self.owners.retain(|_, held| !held.is_empty());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn a_heartbeat_keeps_what_it_lists_names_what_is_missing_and_drops_the_rest() {
        let mut l = Leases::default();
        l.add("o", c(1), 10, 0, 100);
        l.add("o", c(2), 20, 0, 100);
        l.add("p", c(1), 5, 0, 100);
        assert_eq!(l.stored(), 35);
        let beat = l.heartbeat("o", &[c(1), c(3)], 50, 100);
        assert_eq!(beat.missing, [c(3)]);
        assert_eq!(beat.dropped, [c(2)]);
        assert_eq!(l.stored(), 15);
        // c(1) of "o" now lives until 150; "p"'s copy until 100.
        assert_eq!(l.expire(100), [("p".to_string(), c(1))]);
        assert!(l.holds("o", &c(1)));
        assert_eq!(l.expire(150), [("o".to_string(), c(1))]);
        assert_eq!(l.stored(), 0);
    }

    #[test]
    fn a_heartbeat_just_before_the_end_keeps_a_chunk_and_none_loses_it() {
        let mut kept = Leases::default();
        kept.add("o", c(1), 10, 0, 1_000);
        kept.heartbeat("o", &[c(1)], 999, 1_000);
        assert!(kept.expire(1_000).is_empty());
        assert!(kept.holds("o", &c(1)));

        let mut lost = Leases::default();
        lost.add("o", c(1), 10, 0, 1_000);
        assert_eq!(lost.expire(1_000).len(), 1);
    }

    #[test]
    fn another_owners_heartbeat_touches_nothing_of_mine() {
        let mut l = Leases::default();
        l.add("o", c(1), 10, 0, 100);
        l.heartbeat("p", &[], 10, 100);
        assert!(l.holds("o", &c(1)));
    }
}
