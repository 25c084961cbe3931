//! Turning directories into a snapshot (DESIGN.md §6d-2): walk, read, chunk (FastCDC), hash,
//! compress and seal on every core (a rayon pool: the entries of each directory in parallel,
//! nested), one tree blob per directory. A file whose size, mtime, ctime and inode match the
//! last run's tree ([`TreeCache`]) and whose chunks are stored R times is not read again
//! (restic's parent snapshot); an unchanged directory encodes to the same blob and is not sent.
//! Blocking; the owner runs it beside the task runtime and takes the sealed chunks from
//! [`Scanner::send`].

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hivemind_common::backup::ChunkId;
use rayon::prelude::*;

use crate::crypto::OwnerKey;
use crate::progress::Progress;
use crate::tree::{
    check_roots, io_at, ByteBuf, Change, Meta, Node, NodeKind, ScanError, SnapshotRoot, Tree,
    CHUNK_AVG, CHUNK_MAX, CHUNK_MIN,
};

/// The last run's tree blobs by directory path, on the owner's disk
/// (`<data-dir>/backup/trees/`): a cache, not fsync'd (a lost one means files are read again).
pub struct TreeCache {
    dir: PathBuf,
    written: Mutex<HashSet<OsString>>,
}

impl TreeCache {
    pub fn open(dir: PathBuf) -> Self {
        if let Err(e) = fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "the backup tree cache cannot be created: every file is read at every run");
        }
        Self {
            dir,
            written: Mutex::default(),
        }
    }

    fn file(&self, path: &Path) -> PathBuf {
        let name = blake3::hash(path.as_os_str().as_bytes()).to_hex();
        self.dir.join(&name[..32])
    }

    fn get(&self, path: &Path) -> Option<Tree> {
        Tree::decode(&fs::read(self.file(path)).ok()?).ok()
    }

    fn put(&self, path: &Path, plain: &[u8]) {
        let file = self.file(path);
        let tmp = file.with_extension("tmp");
        if fs::write(&tmp, plain)
            .and_then(|()| fs::rename(&tmp, &file))
            .is_ok()
        {
            if let Some(name) = file.file_name() {
                self.written
                    .lock()
                    .expect("written")
                    .insert(name.to_owned());
            }
        }
    }

    /// Removes the blobs of directories the last run did not see (gone since).
    pub fn sweep(&self) {
        let written = self.written.lock().expect("written");
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if !written.contains(&entry.file_name()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// A scan's result.
#[derive(Debug)]
pub struct Scanned {
    /// The snapshot root's blob.
    pub root: ChunkId,
    pub files: u64,
    pub bytes: u64,
    /// Every chunk and blob the snapshot references.
    pub referenced: HashSet<ChunkId>,
    /// Sockets, fifos and devices, not backed up.
    pub skipped: u64,
    /// Files read and chunked (the others matched the last run's tree).
    pub files_read: u64,
}

pub struct Scanner<'a> {
    pub key: &'a OwnerKey,
    /// Whether a chunk is stored R times already (not sent again).
    pub held: &'a (dyn Fn(&ChunkId) -> bool + Sync),
    /// Takes a sealed chunk to upload (blocks while the uploads are behind).
    pub send: &'a (dyn Fn(ChunkId, Vec<u8>) -> Result<(), ScanError> + Sync),
    pub cache: Option<&'a TreeCache>,
    pub progress: &'a Progress,
    referenced: Mutex<HashSet<ChunkId>>,
    skipped: AtomicU64,
    files_read: AtomicU64,
}

impl<'a> Scanner<'a> {
    pub fn new(
        key: &'a OwnerKey,
        held: &'a (dyn Fn(&ChunkId) -> bool + Sync),
        send: &'a (dyn Fn(ChunkId, Vec<u8>) -> Result<(), ScanError> + Sync),
        cache: Option<&'a TreeCache>,
        progress: &'a Progress,
    ) -> Self {
        Self {
            key,
            held,
            send,
            cache,
            progress,
            referenced: Mutex::default(),
            skipped: AtomicU64::new(0),
            files_read: AtomicU64::new(0),
        }
    }

    /// Scans `roots` into a snapshot taken at `time_ms` (call inside the rayon pool that should
    /// do the work).
    pub fn snapshot(self, roots: &[PathBuf], time_ms: u64) -> Result<Scanned, ScanError> {
        check_roots(roots)?;
        let nodes = roots
            .par_iter()
            .map(|root| {
                let meta = fs::metadata(root).map_err(io_at(root))?;
                self.dir(root, ByteBuf::of(root), &meta)
            })
            .collect::<Result<Vec<Node>, ScanError>>()?;
        let root = SnapshotRoot {
            time_ms,
            roots: nodes,
        };
        let plain = root.encode();
        let id = self.key.chunk_id(&plain);
        self.offer(id, &plain)?;
        let (files, bytes) = root.totals();
        Ok(Scanned {
            root: id,
            files,
            bytes,
            referenced: self.referenced.into_inner().expect("referenced"),
            skipped: self.skipped.into_inner(),
            files_read: self.files_read.into_inner(),
        })
    }

    /// References a chunk; seals and sends it unless this run sent it or it is stored R times.
    fn offer(&self, id: ChunkId, plain: &[u8]) -> Result<(), ScanError> {
        let new = self.referenced.lock().expect("referenced").insert(id);
        if new && !(self.held)(&id) {
            let sealed = self.key.seal(&id, plain);
            (self.send)(id, sealed)?;
        }
        Ok(())
    }

    fn dir(&self, path: &Path, name: ByteBuf, meta: &fs::Metadata) -> Result<Node, ScanError> {
        let mut children: Vec<OsString> = fs::read_dir(path)
            .map_err(io_at(path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_at(path))?;
        children.sort();
        let cached: HashMap<Vec<u8>, Node> = self
            .cache
            .and_then(|c| c.get(path))
            .map(|t| t.nodes.into_iter().map(|n| (n.name.0.clone(), n)).collect())
            .unwrap_or_default();
        let nodes = children
            .par_iter()
            .map(|child| {
                let before = cached.get(child.as_bytes());
                self.child(&path.join(child), child, before)
            })
            .collect::<Result<Vec<Option<Node>>, ScanError>>()?;
        let tree = Tree {
            nodes: nodes.into_iter().flatten().collect(),
        };
        let (files, bytes) = tree
            .nodes
            .iter()
            .map(Node::totals)
            .fold((0, 0), |(f, b), (nf, nb)| (f + nf, b + nb));
        let plain = tree.encode();
        let id = self.key.chunk_id(&plain);
        self.offer(id, &plain)?;
        if let Some(cache) = self.cache {
            cache.put(path, &plain);
        }
        Ok(Node {
            name,
            meta: Meta::of(meta),
            change: Change::of(meta),
            kind: NodeKind::Dir {
                tree: id,
                files,
                bytes,
            },
        })
    }

    fn child(
        &self,
        path: &Path,
        name: &OsString,
        before: Option<&Node>,
    ) -> Result<Option<Node>, ScanError> {
        let meta = fs::symlink_metadata(path).map_err(io_at(path))?;
        let kind = meta.file_type();
        let name = ByteBuf(name.as_bytes().to_vec());
        if kind.is_dir() {
            return self.dir(path, name, &meta).map(Some);
        }
        let kind = if kind.is_symlink() {
            let target = fs::read_link(path).map_err(io_at(path))?;
            NodeKind::Symlink {
                target: ByteBuf::of(&target),
            }
        } else if kind.is_file() {
            self.file(path, &meta, before)?
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        Ok(Some(Node {
            name,
            meta: Meta::of(&meta),
            change: Change::of(&meta),
            kind,
        }))
    }

    fn file(
        &self,
        path: &Path,
        meta: &fs::Metadata,
        before: Option<&Node>,
    ) -> Result<NodeKind, ScanError> {
        if let Some(chunks) = self.unchanged(meta, before) {
            for (id, _) in &chunks {
                self.referenced.lock().expect("referenced").insert(*id);
            }
            self.progress.bytes_done(meta.len());
            self.progress.file_done();
            return Ok(NodeKind::File {
                size: meta.len(),
                chunks,
            });
        }
        let file = fs::File::open(path).map_err(io_at(path))?;
        self.files_read.fetch_add(1, Ordering::Relaxed);
        let mut chunks = Vec::new();
        let mut size = 0u64;
        for piece in fastcdc::v2020::StreamCDC::new(file, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX) {
            let piece = piece.map_err(|e| io_at(path)(e.into()))?;
            let id = self.key.chunk_id(&piece.data);
            size += piece.length as u64;
            chunks.push((id, piece.length as u32));
            self.offer(id, &piece.data)?;
            self.progress.bytes_done(piece.length as u64);
        }
        self.progress.file_done();
        Ok(NodeKind::File { size, chunks })
    }

    /// The last run's chunk list for a file that did not change since, if all its chunks are
    /// stored R times.
    fn unchanged(&self, meta: &fs::Metadata, before: Option<&Node>) -> Option<Vec<(ChunkId, u32)>> {
        let before = before?;
        let NodeKind::File { size, chunks } = &before.kind else {
            return None;
        };
        let same = *size == meta.len()
            && before.meta == Meta::of(meta)
            && before.change == Change::of(meta);
        (same && chunks.iter().all(|(id, _)| (self.held)(id))).then(|| chunks.clone())
    }
}

/// Files and bytes below `roots` (a quick walk of the metadata, for the progress's totals).
pub fn count(roots: &[PathBuf]) -> (u64, u64) {
    fn walk(path: &Path, totals: &mut (u64, u64)) {
        let Ok(entries) = fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(&entry.path(), totals);
            } else if meta.is_file() {
                totals.0 += 1;
                totals.1 += meta.len();
            }
        }
    }
    let mut totals = (0, 0);
    for root in roots {
        walk(root, &mut totals);
    }
    totals
}

#[cfg(test)]
#[path = "scan/tests.rs"]
mod tests;
