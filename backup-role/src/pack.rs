//! Pack files and a space's index of them (DESIGN.md §6d-2, restic's packs), sans IO.
//!
//! A space stores an upload as pack files of about [`TARGET`] bytes, one fsync each, instead
//! of one file per chunk. A pack is `MAGIC`, the sealed chunks back to back, a trailer (the
//! entries: chunk id, offset, length, and a BLAKE3 check of the sealed bytes), the trailer's
//! length (u32 LE) and the BLAKE3 of the trailer. A pack whose footer or trailer does not
//! verify (a torn write) is not indexed; a chunk whose bytes do not match its check is never
//! served. [`Packs`] maps each owner's chunks to their place in a pack, counts each pack's
//! live bytes, and says which packs to delete (nothing live) or repack (mostly dead).

use std::collections::BTreeMap;

use hivemind_common::backup::ChunkId;
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"HMPACK01";
/// A pack is closed once its chunks reach this size (restic's default pack size).
pub const TARGET: u64 = 16 << 20;
/// The footer: the trailer's length and its BLAKE3.
pub const FOOTER_LEN: u64 = 4 + 32;
/// A pack is repacked once less than this share of its chunk bytes is live.
const REPACK_BELOW: f64 = 0.5;

/// One chunk inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: ChunkId,
    pub offset: u64,
    pub len: u32,
    /// The first 16 bytes of the BLAKE3 of the sealed bytes.
    pub check: [u8; 16],
}

/// Why a pack is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("the pack is shorter than its header and footer")]
    TooShort,
    #[error("the pack does not start with the pack header")]
    NoHeader,
    #[error("the trailer does not match its checksum (a torn or damaged pack)")]
    BadTrailer,
    #[error("an entry lies outside the pack's data")]
    BadEntry,
}

pub fn check_of(sealed: &[u8]) -> [u8; 16] {
    blake3::hash(sealed).as_bytes()[..16]
        .try_into()
        .expect("16 bytes")
}

/// Whether `sealed` is the chunk `entry` describes.
pub fn verify(entry: &Entry, sealed: &[u8]) -> bool {
    sealed.len() == entry.len as usize && check_of(sealed) == entry.check
}

/// Groups chunks, in order, into packs of about [`TARGET`] bytes (a chunk is never split).
pub fn group<T>(chunks: Vec<(ChunkId, T)>, len: impl Fn(&T) -> usize) -> Vec<Vec<(ChunkId, T)>> {
    let mut packs = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0u64;
    for (id, data) in chunks {
        bytes += len(&data) as u64;
        current.push((id, data));
        if bytes >= TARGET {
            packs.push(std::mem::take(&mut current));
            bytes = 0;
        }
    }
    if !current.is_empty() {
        packs.push(current);
    }
    packs
}

/// At most the bytes packs of `chunks` chunks holding `bytes` in all take on disk (what an
/// owner reserves for an upload).
pub fn upper_bound(chunks: usize, bytes: u64) -> u64 {
    let packs = bytes / TARGET + 1;
    bytes + chunks as u64 * 72 + packs * (MAGIC.len() as u64 + FOOTER_LEN + 16)
}

/// A pack's bytes and its entries.
pub fn encode(chunks: &[(ChunkId, &[u8])]) -> (Vec<u8>, Vec<Entry>) {
    let total: usize = chunks.iter().map(|(_, c)| c.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + total + chunks.len() * 64 + 64);
    out.extend(MAGIC);
    let mut entries = Vec::with_capacity(chunks.len());
    for (id, sealed) in chunks {
        entries.push(Entry {
            id: *id,
            offset: out.len() as u64,
            len: sealed.len() as u32,
            check: check_of(sealed),
        });
        out.extend(*sealed);
    }
    let trailer = hivemind_common::encode(&entries);
    out.extend(&trailer);
    out.extend((trailer.len() as u32).to_le_bytes());
    out.extend(blake3::hash(&trailer).as_bytes());
    (out, entries)
}

/// Where the trailer of a pack of `file_len` bytes starts, from its last [`FOOTER_LEN`] bytes.
pub fn trailer_start(file_len: u64, footer: &[u8]) -> Result<u64, PackError> {
    if file_len < MAGIC.len() as u64 + FOOTER_LEN || footer.len() as u64 != FOOTER_LEN {
        return Err(PackError::TooShort);
    }
    let trailer_len = u64::from(u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")));
    (file_len - FOOTER_LEN)
        .checked_sub(trailer_len)
        .filter(|start| *start >= MAGIC.len() as u64)
        .ok_or(PackError::BadTrailer)
}

/// The entries of a pack of `file_len` bytes from its tail (from [`trailer_start`] to the end)
/// and its first bytes (the header), each checked to lie inside the pack's data.
pub fn entries(file_len: u64, head: &[u8], tail: &[u8]) -> Result<Vec<Entry>, PackError> {
    if !head.starts_with(MAGIC) {
        return Err(PackError::NoHeader);
    }
    let split = tail
        .len()
        .checked_sub(FOOTER_LEN as usize)
        .ok_or(PackError::TooShort)?;
    let (trailer, footer) = tail.split_at(split);
    if blake3::hash(trailer).as_bytes() != &footer[4..] {
        return Err(PackError::BadTrailer);
    }
    let entries: Vec<Entry> =
        hivemind_common::decode(trailer).map_err(|_| PackError::BadTrailer)?;
    let data_end = file_len - tail.len() as u64;
    for e in &entries {
        if e.offset < MAGIC.len() as u64 || e.offset + u64::from(e.len) > data_end {
            return Err(PackError::BadEntry);
        }
    }
    Ok(entries)
}

/// The entries of a whole pack in memory.
pub fn parse(pack: &[u8]) -> Result<Vec<Entry>, PackError> {
    let len = pack.len() as u64;
    let footer_at = len.checked_sub(FOOTER_LEN).ok_or(PackError::TooShort)? as usize;
    let start = trailer_start(len, &pack[footer_at..])? as usize;
    entries(len, pack, &pack[start..])
}

/// Where a chunk is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub pack: String,
    pub entry: Entry,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PackInfo {
    /// The file's size.
    size: u64,
    /// Bytes of chunks in it.
    data: u64,
    /// Bytes of the chunks in it that are indexed (live).
    live: u64,
    live_chunks: usize,
}

/// What to do with a pack after chunks were dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tidy {
    /// Nothing in it is live: delete the file.
    Delete { owner: String, pack: String },
    /// Mostly dead: copy the live chunks into a new pack, then delete this one.
    Repack {
        owner: String,
        pack: String,
        live: Vec<Entry>,
    },
}

/// A space's index: per owner, each chunk's place; per pack, its sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packs {
    chunks: BTreeMap<String, BTreeMap<ChunkId, Location>>,
    packs: BTreeMap<(String, String), PackInfo>,
}

impl Packs {
    /// Indexes a pack of `size` bytes; a chunk already indexed for `owner` stays where it is
    /// (its copy here is dead weight until a repack). Answers the chunks newly indexed.
    pub fn add(&mut self, owner: &str, pack: &str, size: u64, entries: &[Entry]) -> Vec<Entry> {
        let mut info = PackInfo {
            size,
            ..Default::default()
        };
        let located = self.chunks.entry(owner.to_string()).or_default();
        let mut added = Vec::new();
        for e in entries {
            info.data += u64::from(e.len);
            if let std::collections::btree_map::Entry::Vacant(slot) = located.entry(e.id) {
                slot.insert(Location {
                    pack: pack.to_string(),
                    entry: *e,
                });
                info.live += u64::from(e.len);
                info.live_chunks += 1;
                added.push(*e);
            }
        }
        self.packs
            .insert((owner.to_string(), pack.to_string()), info);
        added
    }

    pub fn locate(&self, owner: &str, id: &ChunkId) -> Option<&Location> {
        self.chunks.get(owner)?.get(id)
    }

    pub fn holds(&self, owner: &str, id: &ChunkId) -> bool {
        self.locate(owner, id).is_some()
    }

    /// Bytes of pack files on disk.
    pub fn stored(&self) -> u64 {
        self.packs.values().map(|p| p.size).sum()
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Forgets a chunk (dropped, expired, or found damaged).
    pub fn remove(&mut self, owner: &str, id: &ChunkId) -> Option<Location> {
        let located = self.chunks.get_mut(owner)?;
        let loc = located.remove(id)?;
        if located.is_empty() {
            self.chunks.remove(owner);
        }
        if let Some(info) = self.packs.get_mut(&(owner.to_string(), loc.pack.clone())) {
            info.live -= u64::from(loc.entry.len);
            info.live_chunks -= 1;
        }
        Some(loc)
    }

    /// The live chunks of a pack, in pack order.
    fn live_in(&self, owner: &str, pack: &str) -> Vec<Entry> {
        let mut live: Vec<Entry> = self
            .chunks
            .get(owner)
            .into_iter()
            .flat_map(|c| c.values())
            .filter(|l| l.pack == pack)
            .map(|l| l.entry)
            .collect();
        live.sort_by_key(|e| e.offset);
        live
    }

    /// The packs to delete or repack now.
    pub fn tidy(&self) -> Vec<Tidy> {
        let mut out = Vec::new();
        for ((owner, pack), info) in &self.packs {
            if info.live_chunks == 0 {
                out.push(Tidy::Delete {
                    owner: owner.clone(),
                    pack: pack.clone(),
                });
            } else if (info.live as f64) < REPACK_BELOW * info.data as f64 {
                out.push(Tidy::Repack {
                    owner: owner.clone(),
                    pack: pack.clone(),
                    live: self.live_in(owner, pack),
                });
            }
        }
        out
    }

    /// A pack's file is gone: its index entry goes (its chunks must have moved or gone).
    pub fn forget_pack(&mut self, owner: &str, pack: &str) {
        self.packs.remove(&(owner.to_string(), pack.to_string()));
    }

    /// The live chunks of `old` were copied into `new` (`entries`): those still live in `old`
    /// move (one dropped meanwhile stays dropped), and `old` goes once nothing lives in it.
    pub fn moved(&mut self, owner: &str, old: &str, new: &str, size: u64, entries: &[Entry]) {
        let still: Vec<ChunkId> = entries
            .iter()
            .filter(|e| self.locate(owner, &e.id).is_some_and(|l| l.pack == old))
            .map(|e| e.id)
            .collect();
        for id in &still {
            self.remove(owner, id);
        }
        let mut info = PackInfo {
            size,
            ..Default::default()
        };
        let located = self.chunks.entry(owner.to_string()).or_default();
        for e in entries {
            info.data += u64::from(e.len);
            if still.contains(&e.id) {
                located.insert(
                    e.id,
                    Location {
                        pack: new.to_string(),
                        entry: *e,
                    },
                );
                info.live += u64::from(e.len);
                info.live_chunks += 1;
            }
        }
        self.packs
            .insert((owner.to_string(), new.to_string()), info);
        if self.live_in(owner, old).is_empty() {
            self.forget_pack(owner, old);
        }
    }
}

#[cfg(test)]
#[path = "pack/tests.rs"]
mod tests;
