//! A space: the disk a member offers (`--backup-space`), holding owners' sealed chunks in pack
//! files (DESIGN.md §6d-2) under `<data-dir>/backup/packs/<owner>/<pack>`, with the chunks'
//! leases in `<data-dir>/backup/leases.bin` (rewritten atomically after every change) and the
//! index of where each chunk lies rebuilt from the packs' trailers at start. It reports its
//! numbers to the ledger ([`SpaceStore::offer`]), takes uploads only against a reservation the
//! control plane consumes first (one fsync per pack), answers heartbeats, drops expired
//! chunks, deletes packs nothing lives in and repacks mostly dead ones.
//!
//! A space written before packs (`<data-dir>/backup/chunks/<owner>/<chunk id>`, one file per
//! chunk) is moved into packs when it opens.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hivemind_common::backup::{BackupOp, ChunkId};
use hivemind_common::names::is_valid_name;
use hivemind_common::role::{ControlPlaneClient, CpCallError};

use crate::leases::{Beat, Leases};
use crate::pack::{self, Packs, Tidy};

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

/// What the space knows, changed under one lock.
#[derive(Default)]
struct State {
    leases: Leases,
    packs: Packs,
}

impl State {
    /// Forgets chunks in both the leases and the pack index.
    fn drop_chunks<'a>(&mut self, gone: impl IntoIterator<Item = (&'a str, ChunkId)>) {
        for (owner, id) in gone {
            self.leases.remove(owner, &id);
            self.packs.remove(owner, &id);
        }
    }
}

pub struct SpaceStore {
    dir: PathBuf,
    pub capacity: u64,
    lease_ms: u64,
    state: Mutex<State>,
    /// Persists one at a time, in the order their states were taken.
    persist_turn: Mutex<()>,
    /// One tidy (delete, repack) at a time.
    tidy_turn: Mutex<()>,
    /// Uploads and offers one at a time, so an offer never counts bytes a consume also adds.
    pub ledger_turn: tokio::sync::Mutex<()>,
    pub offer_failures: std::sync::atomic::AtomicU64,
    /// Chunks whose bytes did not match their pack's check (never served).
    pub damaged: std::sync::atomic::AtomicU64,
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

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename (the directory's fsync is
/// the caller's, once for all files it wrote).
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SpaceError> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let tmp = path.with_extension("tmp");
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        // A full disk: what was written goes, so the space stays usable.
        let _ = std::fs::remove_file(&tmp);
        return Err(io_at(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_at(path))
}

fn sync_dir(dir: &Path) -> Result<(), SpaceError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), SpaceError> {
    write_file(path, bytes)?;
    sync_dir(path.parent().expect("a file in a directory"))
}

fn new_pack_name() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a pack's index from its file (`Err` for a torn or damaged pack).
fn read_pack_index(path: &Path) -> Result<(u64, Vec<pack::Entry>), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let read_at = |at: u64, n: usize| {
        let mut buf = vec![0; n];
        file.read_exact_at(&mut buf, at).map(|()| buf)
    };
    let footer_at = len.checked_sub(pack::FOOTER_LEN).ok_or("too short")?;
    let footer = read_at(footer_at, pack::FOOTER_LEN as usize).map_err(|e| e.to_string())?;
    let start = pack::trailer_start(len, &footer).map_err(|e| e.to_string())?;
    let tail = read_at(start, (len - start) as usize).map_err(|e| e.to_string())?;
    let head = read_at(0, pack::MAGIC.len()).map_err(|e| e.to_string())?;
    let entries = pack::entries(len, &head, &tail).map_err(|e| e.to_string())?;
    Ok((len, entries))
}

impl SpaceStore {
    /// Opens the space under `dir`: the packs that verify, and the leases it recorded for the
    /// chunks in them; chunks it has no lease for get a fresh one. Torn packs are deleted
    /// (their chunks are named missing at the owner's next heartbeat, which repairs them).
    pub fn open(dir: PathBuf, capacity: u64, lease_ms: u64) -> Result<Self, SpaceError> {
        let packs_dir = dir.join("packs");
        std::fs::create_dir_all(&packs_dir).map_err(io_at(&packs_dir))?;
        let recorded: Leases = std::fs::read(dir.join("leases.bin"))
            .ok()
            .and_then(|b| hivemind_common::decode(&b).ok())
            .unwrap_or_default();
        migrate_chunk_files(&dir)?;
        let mut state = State::default();
        let now = now_ms();
        for owner in std::fs::read_dir(&packs_dir).map_err(io_at(&packs_dir))? {
            let owner = owner.map_err(io_at(&packs_dir))?;
            let name = owner.file_name().to_string_lossy().to_string();
            if !is_valid_name(&name) {
                continue;
            }
            for file in std::fs::read_dir(owner.path()).map_err(io_at(&owner.path()))? {
                let path = file.map_err(io_at(&owner.path()))?.path();
                let pack_name = path
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default();
                if path.extension().is_some() {
                    // A temporary file from a write that did not finish.
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                match read_pack_index(&path) {
                    Ok((size, entries)) => {
                        for e in state.packs.add(&name, &pack_name, size, &entries) {
                            match recorded.get(&name, &e.id) {
                                Some(held) => {
                                    state.leases.add(&name, e.id, held.len, held.expires_ms, 0)
                                }
                                None => {
                                    state
                                        .leases
                                        .add(&name, e.id, u64::from(e.len), now, lease_ms)
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(pack = %path.display(), error = %e, "a torn or damaged backup pack is deleted; its chunks are repaired from other copies");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        let store = Self {
            dir,
            capacity,
            lease_ms,
            state: Mutex::new(state),
            persist_turn: Mutex::new(()),
            tidy_turn: Mutex::new(()),
            ledger_turn: tokio::sync::Mutex::new(()),
            offer_failures: Default::default(),
            damaged: Default::default(),
        };
        store.tidy()?;
        store.persist()?;
        Ok(store)
    }

    fn pack_path(&self, owner: &str, pack: &str) -> PathBuf {
        self.dir.join("packs").join(owner).join(pack)
    }

    fn persist(&self) -> Result<(), SpaceError> {
        // One at a time and in order: two persists at once shared `leases.tmp` (a rename found
        // it gone, seen in CI), and an older state could land last.
        let _turn = self.persist_turn.lock().expect("persist turn");
        let bytes = hivemind_common::encode(&self.state.lock().expect("state").leases);
        write_durably(&self.dir.join("leases.bin"), &bytes)
    }

    /// Bytes of pack files on disk.
    pub fn stored(&self) -> u64 {
        self.state.lock().expect("state").packs.stored()
    }

    pub fn pack_count(&self) -> usize {
        self.state.lock().expect("state").packs.pack_count()
    }

    pub fn list(&self, owner: &str) -> Result<Vec<ChunkId>, SpaceError> {
        check_owner(owner)?;
        Ok(self.state.lock().expect("state").leases.list(owner))
    }

    pub fn owners(&self) -> Vec<(String, usize)> {
        self.state
            .lock()
            .expect("state")
            .leases
            .owners()
            .map(|(o, n)| (o.clone(), n))
            .collect()
    }

    /// Stores an upload made against `reservation` as packs: the control plane consumes the
    /// reservation first (refused: nothing is written), then the packs are written durably.
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
            let state = self.state.lock().expect("state");
            let mut seen = std::collections::HashSet::new();
            chunks
                .into_iter()
                .filter(|(id, _)| !state.packs.holds(owner, id) && seen.insert(*id))
                .collect()
        };
        if new.is_empty() {
            // Nothing to store (a resumed run sent what is here): the reservation is released.
            cp.backup(BackupOp::Consume {
                reservation,
                bytes: 0,
            })
            .await
            .map_err(SpaceError::Refused)?;
            return Ok(0);
        }
        let packs = tokio::task::spawn_blocking(move || {
            pack::group(new, Vec::len)
                .into_iter()
                .map(|group| {
                    let refs: Vec<(ChunkId, &[u8])> =
                        group.iter().map(|(id, b)| (*id, b.as_slice())).collect();
                    pack::encode(&refs)
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("packing does not panic");
        let needed: u64 = packs.iter().map(|(bytes, _)| bytes.len() as u64).sum();
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
            let mut written = Vec::with_capacity(packs.len());
            for (bytes, entries) in packs {
                let name = new_pack_name();
                write_file(&this.pack_path(&owner, &name), &bytes)?;
                written.push((name, bytes.len() as u64, entries));
            }
            sync_dir(&this.dir.join("packs").join(&owner))?;
            {
                let mut state = this.state.lock().expect("state");
                let now = now_ms();
                for (name, size, entries) in &written {
                    for e in state.packs.add(&owner, name, *size, entries) {
                        state
                            .leases
                            .add(&owner, e.id, u64::from(e.len), now, this.lease_ms);
                    }
                }
            }
            this.persist()?;
            Ok(needed)
        })
        .await
        .expect("the upload task does not panic")
    }

    pub async fn read(self: &Arc<Self>, owner: &str, id: ChunkId) -> Result<Vec<u8>, SpaceError> {
        let mut found = self.read_many(owner, vec![id]).await?;
        found.pop().map(|(_, b)| b).ok_or(SpaceError::NoChunk(id))
    }

    /// The sealed bytes of those of `ids` this space holds intact, pack by pack in file
    /// order; a chunk that fails its check is dropped and never served.
    pub async fn read_many(
        self: &Arc<Self>,
        owner: &str,
        ids: Vec<ChunkId>,
    ) -> Result<Vec<(ChunkId, Vec<u8>)>, SpaceError> {
        check_owner(owner)?;
        let this = self.clone();
        let owner = owner.to_string();
        tokio::task::spawn_blocking(move || this.read_blocking(&owner, &ids))
            .await
            .expect("the read task does not panic")
    }

    fn read_blocking(
        &self,
        owner: &str,
        ids: &[ChunkId],
    ) -> Result<Vec<(ChunkId, Vec<u8>)>, SpaceError> {
        let mut at: Vec<pack::Location> = {
            let state = self.state.lock().expect("state");
            ids.iter()
                .filter_map(|id| state.packs.locate(owner, id).cloned())
                .collect()
        };
        at.sort_by(|a, b| (&a.pack, a.entry.offset).cmp(&(&b.pack, b.entry.offset)));
        let mut out = Vec::with_capacity(at.len());
        let mut open: Option<(String, std::fs::File)> = None;
        for loc in at {
            if open.as_ref().is_none_or(|(name, _)| *name != loc.pack) {
                let path = self.pack_path(owner, &loc.pack);
                match std::fs::File::open(&path) {
                    Ok(f) => open = Some((loc.pack.clone(), f)),
                    // Repacked meanwhile: its chunks are read from their new pack next time.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(SpaceError::Io { path, error: e }),
                }
            }
            let (_, file) = open.as_ref().expect("opened");
            let mut buf = vec![0; loc.entry.len as usize];
            let read = file.read_exact_at(&mut buf, loc.entry.offset);
            if read.is_ok() && pack::verify(&loc.entry, &buf) {
                out.push((loc.entry.id, buf));
            } else {
                self.damaged
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(chunk = %loc.entry.id, pack = %loc.pack, "a backup chunk does not match its pack's check: dropped, never served");
                self.state
                    .lock()
                    .expect("state")
                    .drop_chunks([(owner, loc.entry.id)]);
            }
        }
        Ok(out)
    }

    /// The owner's heartbeat: refreshes the leases of what it lists, drops what it no longer
    /// lists, answers what it lists that is not here.
    pub async fn heartbeat(
        self: &Arc<Self>,
        owner: &str,
        listed: Vec<ChunkId>,
    ) -> Result<Beat, SpaceError> {
        check_owner(owner)?;
        let beat = {
            let mut state = self.state.lock().expect("state");
            let beat = state
                .leases
                .heartbeat(owner, &listed, now_ms(), self.lease_ms);
            for id in &beat.dropped {
                state.packs.remove(owner, id);
            }
            beat
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.tidy()?;
            this.persist()
        })
        .await
        .expect("the heartbeat task does not panic")?;
        Ok(beat)
    }

    /// Deletes the chunks whose lease ended; answers how many.
    pub async fn expire(self: &Arc<Self>) -> Result<usize, SpaceError> {
        let n = {
            let mut state = self.state.lock().expect("state");
            let gone = state.leases.expire(now_ms());
            for (owner, id) in &gone {
                state.packs.remove(owner, id);
            }
            gone.len()
        };
        if n == 0 {
            return Ok(0);
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.tidy()?;
            this.persist()
        })
        .await
        .expect("the expiry task does not panic")?;
        Ok(n)
    }

    /// Deletes the packs nothing lives in and repacks the mostly dead ones (blocking).
    fn tidy(&self) -> Result<(), SpaceError> {
        let _turn = self.tidy_turn.lock().expect("tidy turn");
        let actions = self.state.lock().expect("state").packs.tidy();
        for action in actions {
            match action {
                Tidy::Delete { owner, pack } => {
                    let _ = std::fs::remove_file(self.pack_path(&owner, &pack));
                    self.state
                        .lock()
                        .expect("state")
                        .packs
                        .forget_pack(&owner, &pack);
                }
                Tidy::Repack { owner, pack, live } => {
                    let ids: Vec<ChunkId> = live.iter().map(|e| e.id).collect();
                    let bodies = self.read_blocking(&owner, &ids)?;
                    let refs: Vec<(ChunkId, &[u8])> =
                        bodies.iter().map(|(id, b)| (*id, b.as_slice())).collect();
                    let (bytes, entries) = pack::encode(&refs);
                    let name = new_pack_name();
                    write_durably(&self.pack_path(&owner, &name), &bytes)?;
                    {
                        let packs = &mut self.state.lock().expect("state").packs;
                        packs.moved(&owner, &pack, &name, bytes.len() as u64, &entries);
                        packs.forget_pack(&owner, &pack);
                    }
                    let _ = std::fs::remove_file(self.pack_path(&owner, &pack));
                }
            }
        }
        Ok(())
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

/// Moves a space written before packs (one file per chunk under `chunks/<owner>/`) into packs,
/// then removes the chunk files.
fn migrate_chunk_files(dir: &Path) -> Result<(), SpaceError> {
    let chunks = dir.join("chunks");
    let Ok(owners) = std::fs::read_dir(&chunks) else {
        return Ok(());
    };
    for owner in owners {
        let owner = owner.map_err(io_at(&chunks))?;
        let name = owner.file_name().to_string_lossy().to_string();
        if !is_valid_name(&name) {
            continue;
        }
        let mut files = Vec::new();
        for file in std::fs::read_dir(owner.path()).map_err(io_at(&owner.path()))? {
            let path = file.map_err(io_at(&owner.path()))?.path();
            let id = path
                .file_name()
                .and_then(|f| ChunkId::from_hex(&f.to_string_lossy()));
            if let Some(id) = id {
                files.push((id, path));
            }
        }
        let mut batch: Vec<(ChunkId, Vec<u8>)> = Vec::new();
        let mut bytes = 0u64;
        let mut done = Vec::new();
        let flush = |batch: &mut Vec<(ChunkId, Vec<u8>)>| -> Result<(), SpaceError> {
            let refs: Vec<(ChunkId, &[u8])> =
                batch.iter().map(|(id, b)| (*id, b.as_slice())).collect();
            let (pack_bytes, _) = pack::encode(&refs);
            let path = dir.join("packs").join(&name).join(new_pack_name());
            write_durably(&path, &pack_bytes)?;
            batch.clear();
            Ok(())
        };
        for (id, path) in files {
            let data = std::fs::read(&path).map_err(io_at(&path))?;
            bytes += data.len() as u64;
            batch.push((id, data));
            done.push(path);
            if bytes >= pack::TARGET {
                flush(&mut batch)?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            flush(&mut batch)?;
        }
        for path in done {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_dir(owner.path());
        tracing::info!(owner = %name, "backup chunk files moved into packs");
    }
    let _ = std::fs::remove_dir(&chunks);
    Ok(())
}

#[cfg(test)]
#[path = "space/tests.rs"]
mod tests;
