//! Bringing a snapshot back (the seed's "restauration": fetch the chunks, rebuild the
//! directory), shared by the owner member and the CLI on a fresh machine: both know where the
//! chunks are ([`Source`]) and hold the owner key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hivemind_common::backup::{ChunkId, SnapshotRecord};
use serde::Serialize;

use crate::crypto::OwnerKey;
use crate::tree::{self, Kind, Manifest};
use crate::wire::Spaces;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "the key does not open snapshot {0}'s manifest: a wrong key, or another owner's snapshot"
    )]
    WrongKey(String),
    #[error("chunk {0} is on no reachable space ({1})")]
    Unavailable(ChunkId, String),
    #[error("snapshot {snapshot} has nothing at {path}")]
    NoSuchPath { snapshot: String, path: PathBuf },
    #[error("the manifest of snapshot {0} does not decode: {1}")]
    BadManifest(String, String),
    #[error("restoring into {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "no copy of chunk {0} that was read opens with this key (a wrong key, or damaged copies)"
    )]
    DoesNotOpen(ChunkId),
}

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RestoreView {
    pub snapshot: String,
    pub files: u64,
    pub bytes: u64,
}

/// Where an owner's chunks can be read.
pub struct Source {
    pub spaces: Spaces,
    pub owner: String,
    /// Each chunk's spaces (HTTP addresses), tried in order.
    pub at: BTreeMap<ChunkId, Vec<String>>,
}

impl Source {
    /// The sealed chunk, opened and checked against its id: the first copy that opens.
    pub async fn open(&self, key: &OwnerKey, id: &ChunkId) -> Result<Vec<u8>, RestoreError> {
        let mut unreachable = "no space holds it".to_string();
        let mut read_one = false;
        for addr in self.at.get(id).into_iter().flatten() {
            match self.spaces.read(addr, &self.owner, id).await {
                Ok(sealed) => match open_beside(key, *id, sealed).await {
                    Ok(plain) => return Ok(plain),
                    Err(_) => read_one = true,
                },
                Err(e) => unreachable = e.to_string(),
            }
        }
        Err(if read_one {
            RestoreError::DoesNotOpen(*id)
        } else {
            RestoreError::Unavailable(*id, unreachable)
        })
    }

    /// The snapshot's manifest.
    pub async fn manifest(
        &self,
        key: &OwnerKey,
        record: &SnapshotRecord,
    ) -> Result<Manifest, RestoreError> {
        let mut pieces = Vec::with_capacity(record.manifest.len());
        for id in &record.manifest {
            match self.open(key, id).await {
                Ok(piece) => pieces.push(piece),
                // The manifest's copies do not open: the key is not the owner's.
                Err(RestoreError::DoesNotOpen(_)) => {
                    return Err(RestoreError::WrongKey(record.id.clone()))
                }
                Err(e) => return Err(e),
            }
        }
        Manifest::from_pieces(&pieces)
            .map_err(|e| RestoreError::BadManifest(record.id.clone(), e.to_string()))
    }
}

/// Opens a sealed chunk on a blocking thread (the member keeps gossiping meanwhile).
pub async fn open_beside(
    key: &OwnerKey,
    id: ChunkId,
    sealed: Vec<u8>,
) -> Result<Vec<u8>, crate::crypto::KeyError> {
    let key = key.clone();
    tokio::task::spawn_blocking(move || key.open(&id, &sealed))
        .await
        .expect("opening a chunk does not panic")
}

/// Restores `record` (or only what lies at or below `sub`) under `to`, byte-identical:
/// content, modes, mtimes, symlink targets.
pub async fn restore(
    key: &OwnerKey,
    record: &SnapshotRecord,
    source: &Source,
    to: &Path,
    sub: Option<&Path>,
) -> Result<RestoreView, RestoreError> {
    let manifest = source.manifest(key, record).await?;
    let entries: Vec<&tree::Entry> = manifest
        .entries
        .iter()
        .filter(|e| tree::selected(e.path.path(), sub))
        .collect();
    if let (Some(sub), true) = (sub, entries.is_empty()) {
        return Err(RestoreError::NoSuchPath {
            snapshot: record.id.clone(),
            path: sub.to_path_buf(),
        });
    }
    let io = |error| RestoreError::Io {
        path: to.to_path_buf(),
        error,
    };
    let mut view = RestoreView {
        snapshot: record.id.clone(),
        ..Default::default()
    };
    for entry in &entries {
        let mut content: BTreeMap<ChunkId, Vec<u8>> = BTreeMap::new();
        if let Kind::File { size, chunks } = &entry.kind {
            for (id, _) in chunks {
                if !content.contains_key(id) {
                    let plain = source.open(key, id).await?;
                    content.insert(*id, plain);
                }
            }
            view.files += 1;
            view.bytes += size;
        }
        let mut read = |id: &ChunkId| {
            content
                .get(id)
                .cloned()
                .ok_or_else(|| std::io::Error::other(format!("chunk {id} not fetched")))
        };
        tree::restore_entry(to, entry, &mut read).map_err(io)?;
    }
    tree::finish_dirs(to, &entries).map_err(io)?;
    Ok(view)
}

/// `ms` since the Unix epoch as RFC 3339 in UTC (`2026-11-26T21:00:02Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_726_802_000), "2026-11-26T21:00:02Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
