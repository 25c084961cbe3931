//! The v1 snapshot format (before trees): one manifest for the whole snapshot, every entry
//! by absolute path, cut into pieces of [`PIECE`] bytes sealed as chunks. Kept so snapshots
//! written before v2 still restore; nothing writes it any more.

use serde::{Deserialize, Serialize};

use super::{ByteBuf, Item, ItemKind, Meta};
use hivemind_common::backup::ChunkId;

/// The manifest was cut into pieces of this size before sealing.
pub const PIECE: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub time_ms: u64,
    /// The backed-up directories, absolute, as bytes.
    pub roots: Vec<ByteBuf>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's absolute path at backup time.
    pub path: ByteBuf,
    pub kind: Kind,
    pub mode: u32,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File {
        size: u64,
        chunks: Vec<(ChunkId, u32)>,
    },
    Symlink {
        target: ByteBuf,
    },
}

impl Manifest {
    /// The manifest from its pieces, in order.
    pub fn from_pieces(pieces: &[Vec<u8>]) -> Result<Self, hivemind_common::CodecError> {
        hivemind_common::decode(&pieces.concat())
    }

    /// The manifest as plaintext pieces (what v1 sealed; the tests write v1 snapshots with it).
    pub fn pieces(&self) -> Vec<Vec<u8>> {
        let bytes = hivemind_common::encode(self);
        bytes.chunks(PIECE).map(<[u8]>::to_vec).collect()
    }

    /// Every entry as a restore writes it.
    pub fn items(&self) -> Vec<Item> {
        self.entries
            .iter()
            .map(|e| Item {
                path: e.path.path().to_path_buf(),
                meta: Meta {
                    mode: e.mode,
                    mtime_secs: e.mtime_secs,
                    mtime_nanos: e.mtime_nanos,
                },
                kind: match &e.kind {
                    Kind::Dir => ItemKind::Dir,
                    Kind::File { size, chunks } => ItemKind::File {
                        size: *size,
                        chunks: chunks.clone(),
                    },
                    Kind::Symlink { target } => ItemKind::Symlink {
                        target: target.path().to_path_buf(),
                    },
                },
            })
            .collect()
    }
}
