//! A snapshot's tree: the manifest (paths, kinds, modes, mtimes, symlink targets, chunk lists),
//! how a directory becomes one (walk + FastCDC), and how a manifest becomes a directory again.
//! The manifest itself travels as sealed chunks ([`Manifest::pieces`]), so any machine with the
//! owner key can list and restore.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hivemind_common::backup::ChunkId;
use serde::{Deserialize, Serialize};

use crate::crypto::OwnerKey;

/// FastCDC bounds: about 1 MiB on average (DESIGN.md §6d).
pub const CHUNK_MIN: usize = 256 * 1024;
pub const CHUNK_AVG: usize = 1024 * 1024;
pub const CHUNK_MAX: usize = 4 * 1024 * 1024;
/// The manifest is cut into pieces of this size before sealing.
pub const MANIFEST_PIECE: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub time_ms: u64,
    /// The backed-up directories, absolute, as bytes.
    pub roots: Vec<ByteBuf>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteBuf(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl ByteBuf {
    pub fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's absolute path at backup time.
    pub path: ByteBuf,
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
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
    pub fn files(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::File { .. }))
            .count() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.kind {
                Kind::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// Every data chunk the tree references.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.entries.iter().flat_map(|e| match &e.kind {
            Kind::File { chunks, .. } => chunks.iter().map(|(id, _)| *id).collect(),
            _ => Vec::new(),
        })
    }

    /// The manifest as plaintext pieces, to be sealed as chunks.
    pub fn pieces(&self) -> Vec<Vec<u8>> {
        let bytes = hivemind_common::encode(self);
        bytes.chunks(MANIFEST_PIECE).map(<[u8]>::to_vec).collect()
    }

    /// The manifest from its pieces, in order.
    pub fn from_pieces(pieces: &[Vec<u8>]) -> Result<Self, hivemind_common::CodecError> {
        hivemind_common::decode(&pieces.concat())
    }
}

/// Why a directory cannot be backed up.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{0} is not an absolute path to a directory")]
    NotADirectory(PathBuf),
    #[error("the upload stopped")]
    Stopped,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ScanError + '_ {
    move |error| ScanError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn entry(path: &Path, meta: &fs::Metadata, kind: Kind) -> Entry {
    Entry {
        path: ByteBuf(path.as_os_str().as_bytes().to_vec()),
        kind,
        mode: meta.mode() & 0o7777,
        mtime_secs: meta.mtime(),
        mtime_nanos: meta.mtime_nsec() as u32,
    }
}

/// Checks that every root is an absolute path to a readable directory (before anything runs).
pub fn check_roots(roots: &[PathBuf]) -> Result<(), ScanError> {
    for root in roots {
        if !root.is_absolute() {
            return Err(ScanError::NotADirectory(root.clone()));
        }
        let meta = fs::metadata(root).map_err(io_at(root))?;
        if !meta.is_dir() {
            return Err(ScanError::NotADirectory(root.clone()));
        }
        fs::read_dir(root).map_err(io_at(root))?;
    }
    Ok(())
}

/// Walks `roots` (blocking), cuts every file into chunks, and hands each chunk not handed
/// before in this walk to `chunk` (its id and plaintext). Answers the manifest. Sockets, fifos
/// and devices are skipped (counted in `skipped`).
pub fn scan(
    roots: &[PathBuf],
    key: &OwnerKey,
    time_ms: u64,
    chunk: &mut dyn FnMut(ChunkId, Vec<u8>) -> Result<(), ScanError>,
    skipped: &mut u64,
) -> Result<Manifest, ScanError> {
    check_roots(roots)?;
    let mut entries = Vec::new();
    let mut handed = HashSet::new();
    for root in roots {
        walk(root, key, &mut entries, &mut handed, chunk, skipped)?;
    }
    Ok(Manifest {
        time_ms,
        roots: roots
            .iter()
            .map(|r| ByteBuf(r.as_os_str().as_bytes().to_vec()))
            .collect(),
        entries,
    })
}

fn walk(
    path: &Path,
    key: &OwnerKey,
    entries: &mut Vec<Entry>,
    handed: &mut HashSet<ChunkId>,
    chunk: &mut dyn FnMut(ChunkId, Vec<u8>) -> Result<(), ScanError>,
    skipped: &mut u64,
) -> Result<(), ScanError> {
    let meta = fs::symlink_metadata(path).map_err(io_at(path))?;
    let kind = meta.file_type();
    if kind.is_dir() {
        entries.push(entry(path, &meta, Kind::Dir));
        let mut children: Vec<PathBuf> = fs::read_dir(path)
            .map_err(io_at(path))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io_at(path))?;
        children.sort();
        for child in children {
            walk(&child, key, entries, handed, chunk, skipped)?;
        }
    } else if kind.is_symlink() {
        let target = fs::read_link(path).map_err(io_at(path))?;
        let target = ByteBuf(target.as_os_str().as_bytes().to_vec());
        entries.push(entry(path, &meta, Kind::Symlink { target }));
    } else if kind.is_file() {
        let file = fs::File::open(path).map_err(io_at(path))?;
        let mut chunks = Vec::new();
        let mut size = 0u64;
        for piece in fastcdc::v2020::StreamCDC::new(file, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX) {
            let piece = piece.map_err(|e| io_at(path)(e.into()))?;
            let id = key.chunk_id(&piece.data);
            size += piece.length as u64;
            chunks.push((id, piece.length as u32));
            if handed.insert(id) {
                chunk(id, piece.data)?;
            }
        }
        entries.push(entry(path, &meta, Kind::File { size, chunks }));
    } else {
        *skipped += 1;
    }
    Ok(())
}

/// Where an entry of the snapshot lands under `to` (restic's layout: the original absolute
/// path below the target directory).
pub fn target_of(to: &Path, original: &Path) -> PathBuf {
    to.join(original.strip_prefix("/").unwrap_or(original))
}

/// Whether `original` is `sub` or below it (`sub` `None`: everything).
pub fn selected(original: &Path, sub: Option<&Path>) -> bool {
    sub.is_none_or(|sub| original.starts_with(sub))
}

/// Writes one entry under `to`; a file's content comes from `content` (its chunks in order).
/// Directories get their mode and mtime in [`finish_dirs`], after their children are written.
pub fn restore_entry(
    to: &Path,
    entry: &Entry,
    content: &mut dyn FnMut(&ChunkId) -> io::Result<Vec<u8>>,
) -> io::Result<()> {
    let target = target_of(to, entry.path.path());
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    match &entry.kind {
        Kind::Dir => fs::create_dir_all(&target)?,
        Kind::Symlink { target: link } => {
            let _ = fs::remove_file(&target);
            std::os::unix::fs::symlink(link.path(), &target)?;
            set_mtime(&target, entry)?;
        }
        Kind::File { size, chunks } => {
            use std::io::Write;
            let mut file = fs::File::create(&target)?;
            let mut written = 0u64;
            for (id, len) in chunks {
                let data = content(id)?;
                if data.len() != *len as usize {
                    return Err(io::Error::other(format!("chunk {id} has the wrong length")));
                }
                file.write_all(&data)?;
                written += data.len() as u64;
            }
            if written != *size {
                return Err(io::Error::other(format!(
                    "{}: {written} bytes restored of {size}",
                    target.display()
                )));
            }
            file.set_permissions(fs::Permissions::from_mode(entry.mode))?;
            set_mtime(&target, entry)?;
        }
    }
    Ok(())
}

/// Sets the directories' modes and mtimes, deepest first (writing a child changes its
/// parent's mtime).
pub fn finish_dirs(to: &Path, entries: &[&Entry]) -> io::Result<()> {
    let mut dirs: Vec<&&Entry> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Dir))
        .collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.0.len()));
    for dir in dirs {
        let target = target_of(to, dir.path.path());
        fs::set_permissions(&target, fs::Permissions::from_mode(dir.mode))?;
        set_mtime(&target, dir)?;
    }
    Ok(())
}

/// Sets `path`'s mtime to the entry's, without following a symlink (its atime is left alone).
fn set_mtime(path: &Path, entry: &Entry) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let mtime = TimeSpec::new(entry.mtime_secs, entry.mtime_nanos as _);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
#[path = "tree/tests.rs"]
mod tests;
