//! The v1 snapshot format (before trees): one manifest for the whole snapshot, every entry
//! by absolute path, cut into pieces of [`PIECE`] bytes sealed as chunks. Kept so snapshots
//! written before v2 still restore. Runs no longer write it; [`write`] is the reference of
//! what they wrote, with which the tests make v1 snapshots to restore.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ByteBuf, Item, ItemKind, Meta, CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};
use crate::crypto::OwnerKey;
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

/// A v1 snapshot of `root` as builds before v2 wrote it: the manifest's piece ids in order,
/// and every sealed chunk (pieces and file data, sealed raw under the id alone), each once.
pub fn write(
    root: &Path,
    key: &OwnerKey,
    time_ms: u64,
) -> std::io::Result<(Vec<ChunkId>, crate::wire::SealedChunks)> {
    let mut sealed = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut entries = Vec::new();
    let mut walk = vec![root.to_path_buf()];
    while let Some(path) = walk.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let m = Meta::of(&meta);
        let kind = if meta.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&path)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            children.sort();
            walk.extend(children.into_iter().rev());
            Kind::Dir
        } else if meta.is_symlink() {
            Kind::Symlink {
                target: ByteBuf::of(&std::fs::read_link(&path)?),
            }
        } else if meta.is_file() {
            let mut chunks = Vec::new();
            let mut size = 0;
            let file = std::fs::File::open(&path)?;
            for piece in fastcdc::v2020::StreamCDC::new(file, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX) {
                let piece = piece.map_err(std::io::Error::other)?;
                let id = key.chunk_id(&piece.data);
                if seen.insert(id) {
                    sealed.push((id, key.seal_v1(&id, &piece.data)));
                }
                size += piece.length as u64;
                chunks.push((id, piece.length as u32));
            }
            Kind::File { size, chunks }
        } else {
            continue;
        };
        entries.push(Entry {
            path: ByteBuf::of(&path),
            kind,
            mode: m.mode,
            mtime_secs: m.mtime_secs,
            mtime_nanos: m.mtime_nanos,
        });
    }
    let manifest = Manifest {
        time_ms,
        roots: vec![ByteBuf::of(root)],
        entries,
    };
    let mut pieces = Vec::new();
    for piece in manifest.pieces() {
        let id = key.chunk_id(&piece);
        sealed.push((id, key.seal_v1(&id, &piece)));
        pieces.push(id);
    }
    Ok((pieces, sealed))
}
