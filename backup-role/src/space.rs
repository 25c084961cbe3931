//! A space: the disk a member offers (`--backup-space`), holding owners' sealed chunks under
//! `<data-dir>/backup/chunks/<owner>/<chunk id>` with their leases in
//! `<data-dir>/backup/leases.bin` (rewritten atomically after every change). It reports its
//! numbers to the ledger ([`SpaceStore::offer`]), takes uploads only against a reservation the
//! control plane consumes first, answers heartbeats and drops expired chunks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hivemind_common::backup::{BackupOp, ChunkId};
use hivemind_common::names::is_valid_name;
use hivemind_common::role::{ControlPlaneClient, CpCallError};

use crate::leases::{Beat, Leases};

/// Why a space refuses or fails a request.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("{0:?} is not a valid owner name")]
    BadOwner(String),
    #[error("the reservation was refused: {0}")]
    Refused(CpCallError),
    #[error("this space has {free} bytes free, the upload needs {needed}")]
    Full { needed: u64, free: u64 },
    #[error("no chunk {0}")]
    NoChunk(ChunkId),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> SpaceError + '_ {
    move |error| SpaceError::Io {
        path: path.to_path_buf(),
        error,
    }
}

pub struct SpaceStore {
    dir: PathBuf,
    pub capacity: u64,
    lease_ms: u64,
    leases: Mutex<Leases>,
    /// Uploads and offers one at a time, so an offer never counts bytes a consume also adds.
    pub ledger_turn: tokio::sync::Mutex<()>,
    pub offer_failures: std::sync::atomic::AtomicU64,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn check_owner(owner: &str) -> Result<(), SpaceError> {
    if is_valid_name(owner) {
        Ok(())
    } else {
        Err(SpaceError::BadOwner(owner.to_string()))
    }
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, fsync of the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), SpaceError> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(bytes).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

impl SpaceStore {
    /// Opens the space under `dir`: the leases it recorded, for the chunks still on disk;
    /// chunks on disk it has no lease for get a fresh one.
    pub fn open(dir: PathBuf, capacity: u64, lease_ms: u64) -> Result<Self, SpaceError> {
        let chunks = dir.join("chunks");
        std::fs::create_dir_all(&chunks).map_err(io_at(&chunks))?;
        let recorded: Leases = std::fs::read(dir.join("leases.bin"))
            .ok()
            .and_then(|b| hivemind_common::decode(&b).ok())
            .unwrap_or_default();
        // Only chunks still on disk are held; those recorded keep their lease, others (a lost
        // leases file) get a fresh one.
        let mut leases = Leases::default();
        let now = now_ms();
        for owner in std::fs::read_dir(&chunks).map_err(io_at(&chunks))? {
            let owner = owner.map_err(io_at(&chunks))?;
            let name = owner.file_name().to_string_lossy().to_string();
            if !is_valid_name(&name) {
                continue;
            }
            for file in std::fs::read_dir(owner.path()).map_err(io_at(&owner.path()))? {
                let file = file.map_err(io_at(&owner.path()))?;
                let Some(id) = ChunkId::from_hex(&file.file_name().to_string_lossy()) else {
                    continue;
                };
                let len = file.metadata().map_err(io_at(&file.path()))?.len();
                match recorded.get(&name, &id) {
                    Some(held) => leases.add(&name, id, held.len, held.expires_ms, 0),
                    None => leases.add(&name, id, len, now, lease_ms),
                }
            }
        }
        let store = Self {
            dir,
            capacity,
            lease_ms,
            leases: Mutex::new(leases),
            ledger_turn: tokio::sync::Mutex::new(()),
            offer_failures: Default::default(),
        };
        store.persist()?;
        Ok(store)
    }

    fn chunk_path(&self, owner: &str, id: &ChunkId) -> PathBuf {
        self.dir.join("chunks").join(owner).join(id.hex())
    }

    fn persist(&self) -> Result<(), SpaceError> {
        // Written under the lock: two persists at once shared `leases.tmp`, so one's rename
        // found the file gone (`leases.bin: No such file or directory`, seen in CI), and the
        // older state could land last.
        let leases = self.leases.lock().expect("leases");
        write_durably(
            &self.dir.join("leases.bin"),
            &hivemind_common::encode(&*leases),
        )
    }

    pub fn stored(&self) -> u64 {
        self.leases.lock().expect("leases").stored()
    }

    pub fn list(&self, owner: &str) -> Result<Vec<ChunkId>, SpaceError> {
        check_owner(owner)?;
        Ok(self.leases.lock().expect("leases").list(owner))
    }

    pub fn owners(&self) -> Vec<(String, usize)> {
        self.leases
            .lock()
            .expect("leases")
            .owners()
            .map(|(o, n)| (o.clone(), n))
            .collect()
    }

    /// Stores an upload made against `reservation`: the control plane consumes the
    /// reservation first (refused: nothing is written), then the chunks are written durably.
    /// Answers the bytes newly stored.
    pub async fn upload(
        self: &Arc<Self>,
        cp: &dyn ControlPlaneClient,
        owner: &str,
        reservation: u64,
        chunks: Vec<(ChunkId, Vec<u8>)>,
    ) -> Result<u64, SpaceError> {
        check_owner(owner)?;
        let _turn = self.ledger_turn.lock().await;
        let new: Vec<(ChunkId, Vec<u8>)> = {
            let leases = self.leases.lock().expect("leases");
            chunks
                .into_iter()
                .filter(|(id, _)| !leases.holds(owner, id))
                .collect()
        };
        let needed: u64 = new.iter().map(|(_, c)| c.len() as u64).sum();
        let free = self.capacity.saturating_sub(self.stored());
        if needed > free {
            return Err(SpaceError::Full { needed, free });
        }
        cp.backup(BackupOp::Consume {
            reservation,
            bytes: needed,
        })
        .await
        .map_err(SpaceError::Refused)?;
        let this = self.clone();
        let owner = owner.to_string();
        tokio::task::spawn_blocking(move || {
            for (id, data) in &new {
                write_durably(&this.chunk_path(&owner, id), data)?;
                this.leases.lock().expect("leases").add(
                    &owner,
                    *id,
                    data.len() as u64,
                    now_ms(),
                    this.lease_ms,
                );
            }
            this.persist()?;
            Ok(needed)
        })
        .await
        .expect("the upload task does not panic")
    }

    pub async fn read(self: &Arc<Self>, owner: &str, id: ChunkId) -> Result<Vec<u8>, SpaceError> {
        check_owner(owner)?;
        if !self.leases.lock().expect("leases").holds(owner, &id) {
            return Err(SpaceError::NoChunk(id));
        }
        let path = self.chunk_path(owner, &id);
        tokio::fs::read(&path).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SpaceError::NoChunk(id),
            _ => SpaceError::Io { path, error: e },
        })
    }

    /// The owner's heartbeat: refreshes the leases of what it lists, drops what it no longer
    /// lists, answers what it lists that is not here.
    pub async fn heartbeat(
        self: &Arc<Self>,
        owner: &str,
        listed: Vec<ChunkId>,
    ) -> Result<Beat, SpaceError> {
        check_owner(owner)?;
        let beat =
            self.leases
                .lock()
                .expect("leases")
                .heartbeat(owner, &listed, now_ms(), self.lease_ms);
        let this = self.clone();
        let owner = owner.to_string();
        let dropped = beat.dropped.clone();
        tokio::task::spawn_blocking(move || {
            for id in dropped {
                let _ = std::fs::remove_file(this.chunk_path(&owner, &id));
            }
            this.persist()
        })
        .await
        .expect("the heartbeat task does not panic")?;
        Ok(beat)
    }

    /// Deletes the chunks whose lease ended; answers how many.
    pub async fn expire(self: &Arc<Self>) -> Result<usize, SpaceError> {
        let gone = self.leases.lock().expect("leases").expire(now_ms());
        if gone.is_empty() {
            return Ok(0);
        }
        let this = self.clone();
        let n = gone.len();
        tokio::task::spawn_blocking(move || {
            for (owner, id) in gone {
                let _ = std::fs::remove_file(this.chunk_path(&owner, &id));
            }
            this.persist()
        })
        .await
        .expect("the expiry task does not panic")?;
        Ok(n)
    }

    /// Tells the ledger this space's capacity and stored bytes.
    pub async fn offer(&self, cp: &dyn ControlPlaneClient) -> Result<(u64, u64), CpCallError> {
        let _turn = self.ledger_turn.lock().await;
        let stored = self.stored();
        cp.backup(BackupOp::Offer {
            capacity: self.capacity,
            stored,
        })
        .await?;
        Ok((self.capacity, stored))
    }
}

#[cfg(test)]
#[path = "space/tests.rs"]
mod tests;
