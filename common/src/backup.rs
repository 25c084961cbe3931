//! The `backup` role's vocabulary shared by the role and the control plane (DESIGN.md §6d):
//! what an owner or a space asks of the registry ([`BackupOp`]), what the registry answers
//! ([`BackupOutcome`]), the ledger as a role reads it ([`BackupState`]), chunk ids, and sizes as
//! people write them (`20GiB`).
//!
//! The rules themselves (the quota, expiry) live in the control plane's registry
//! (`control-plane/src/registry/backup.rs`); this module is plain data.

use serde::{Deserialize, Serialize};

use crate::MemberId;

/// A chunk's id: BLAKE3 of its plaintext keyed with the owner key (32 bytes, shown as hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// A snapshot as the registry records it: enough to list it and to find its manifest; the
/// tree itself is in the sealed manifest chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// 16 hex digits, derived from the manifest's first chunk id.
    pub id: String,
    /// The owner's member name.
    pub owner: String,
    /// When the owner took it (ms since the Unix epoch, the owner's clock).
    pub time_ms: u64,
    pub files: u64,
    pub bytes: u64,
    /// The sealed manifest, in order.
    pub manifest: Vec<ChunkId>,
    /// The backed-up paths, sealed with the owner key (only the owner key lists them).
    #[serde(with = "serde_bytes")]
    pub sealed_paths: Vec<u8>,
}

/// What a backup role asks of the registry, as `member` (the control plane stamps the time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupOp {
    /// The asking member offers `capacity` bytes and holds `stored` bytes of chunks now (a
    /// space's periodic report, which corrects the ledger after deletions).
    Offer { capacity: u64, stored: u64 },
    /// Reserve `bytes` on each space, all or none, until `ttl_ms` from now.
    Reserve {
        spaces: Vec<(MemberId, u64)>,
        ttl_ms: u64,
    },
    /// The asking space stored `bytes` of the upload reservation `id` was made for: the
    /// reservation is consumed, its bytes become stored.
    Consume { reservation: u64, bytes: u64 },
    /// The asking owner's snapshot, recorded once all its chunks are stored R times.
    Record { snapshot: SnapshotRecord },
    /// The asking owner forgets one of its snapshots.
    Forget { id: String },
}

impl BackupOp {
    pub fn name(&self) -> &'static str {
        match self {
            BackupOp::Offer { .. } => "offer",
            BackupOp::Reserve { .. } => "reserve",
            BackupOp::Consume { .. } => "consume",
            BackupOp::Record { .. } => "record",
            BackupOp::Forget { .. } => "forget",
        }
    }
}

/// What an accepted [`BackupOp`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupOutcome {
    Offered,
    /// One reservation per space, in the order asked: `(space, reservation id)`.
    Reserved(Vec<(MemberId, u64)>),
    Consumed,
    Recorded,
    Forgotten,
}

/// A space as the ledger holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceRecord {
    pub capacity: u64,
    pub stored: u64,
    /// The sum of the live reservations on it.
    pub reserved: u64,
}

impl SpaceRecord {
    /// Bytes that can still be reserved.
    pub fn free(&self) -> u64 {
        self.capacity
            .saturating_sub(self.stored)
            .saturating_sub(self.reserved)
    }
}

/// A live reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub owner: MemberId,
    pub space: MemberId,
    pub bytes: u64,
    /// Ledger time (ms) at which it is released unless consumed.
    pub expires_ms: u64,
}

/// The backup ledger as a role reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupState {
    pub spaces: Vec<(MemberId, SpaceRecord)>,
    pub snapshots: Vec<SnapshotRecord>,
    /// Live reservations by id.
    pub reservations: Vec<(u64, Reservation)>,
}

/// Parses a size as people write it: `20GiB`, `500MB`, `64k`, or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 20GiB, 500MB or 1048576"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ))
        }
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units_and_bad_ones_are_named() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("lots").unwrap_err().contains("\"lots\""));
        assert!(parse_size("5 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_size("99999999999999TiB").is_err());
    }

    #[test]
    fn chunk_ids_round_trip_through_hex() {
        let id = ChunkId([0xab; 32]);
        assert_eq!(ChunkId::from_hex(&id.hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
        assert_eq!(ChunkId::from_hex(&"g".repeat(64)), None);
    }
}
