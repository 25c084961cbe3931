//! A snapshot's tree (DESIGN.md §6d-2, restic's trees): one blob per directory ([`Tree`]: its
//! entries' names, kinds, modes, mtimes, symlink targets, chunk lists, and subdirectories by
//! their blob's id), and a snapshot root ([`SnapshotRoot`]) naming the backed-up directories.
//! Blobs are sealed chunks like file data, so an unchanged directory encodes to the same blob,
//! the same id, and is not sent again; any machine with the owner key can list and restore.
//!
//! Also here: what a restore writes ([`Item`], one entry at its original path) and how, shared
//! by both formats: this one (v2) and the single manifest of v1 ([`v1`]).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hivemind_common::backup::ChunkId;
use serde::{Deserialize, Serialize};

pub mod v1;

/// FastCDC bounds: about 1 MiB on average (DESIGN.md §6d).
pub const CHUNK_MIN: usize = 256 * 1024;
pub const CHUNK_AVG: usize = 1024 * 1024;
pub const CHUNK_MAX: usize = 4 * 1024 * 1024;
/// A snapshot root starts with this, then its format's number.
pub const ROOT_MAGIC: &[u8] = b"hivemind snapshot\0";
/// The tree format this build writes (v1: one manifest for the whole snapshot).
pub const FORMAT: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteBuf(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl ByteBuf {
    pub fn of(path: &Path) -> Self {
        Self(path.as_os_str().as_bytes().to_vec())
    }

    pub fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }
}

/// What a restore puts back on an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

impl Meta {
    pub fn of(meta: &fs::Metadata) -> Self {
        Self {
            mode: meta.mode() & 0o7777,
            mtime_secs: meta.mtime(),
            mtime_nanos: meta.mtime_nsec() as u32,
        }
    }
}

/// What tells an unchanged file without reading it (restic's change detection): with the
/// size and the mtime, the inode and the ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub inode: u64,
    pub ctime_secs: i64,
    pub ctime_nanos: u32,
}

impl Change {
    pub fn of(meta: &fs::Metadata) -> Self {
        Self {
            inode: meta.ino(),
            ctime_secs: meta.ctime(),
            ctime_nanos: meta.ctime_nsec() as u32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The entry's name in its directory (a snapshot root's: its absolute path).
    pub name: ByteBuf,
    pub meta: Meta,
    pub change: Change,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A directory: its blob, and the files and bytes below it.
    Dir {
        tree: ChunkId,
        files: u64,
        bytes: u64,
    },
    File {
        size: u64,
        chunks: Vec<(ChunkId, u32)>,
    },
    Symlink {
        target: ByteBuf,
    },
}

impl Node {
    /// Files and bytes at or below this node.
    pub fn totals(&self) -> (u64, u64) {
        match &self.kind {
            NodeKind::Dir { files, bytes, .. } => (*files, *bytes),
            NodeKind::File { size, .. } => (1, *size),
            NodeKind::Symlink { .. } => (0, 0),
        }
    }
}

/// One directory's blob: its entries, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        hivemind_common::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, hivemind_common::CodecError> {
        hivemind_common::decode(bytes)
    }
}

/// A snapshot's root blob: when, and the backed-up directories (named by absolute path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRoot {
    pub time_ms: u64,
    pub roots: Vec<Node>,
}

/// Why a snapshot's first blob is not one this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the snapshot is in format v{0}, which this hivemind does not read (it reads v1 and v{FORMAT}): restore it with a newer hivemind")]
    Unknown(u8),
    #[error("the snapshot's root does not decode: {0}")]
    Damaged(String),
}

impl SnapshotRoot {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = ROOT_MAGIC.to_vec();
        out.push(FORMAT);
        out.extend(hivemind_common::encode(self));
        out
    }

    /// The root in `bytes`; `Ok(None)` when they are not a root at all (a v1 manifest).
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, FormatError> {
        let Some(rest) = bytes.strip_prefix(ROOT_MAGIC) else {
            return Ok(None);
        };
        match rest.split_first() {
            Some((&FORMAT, body)) => hivemind_common::decode(body)
                .map(Some)
                .map_err(|e| FormatError::Damaged(e.to_string())),
            Some((other, _)) => Err(FormatError::Unknown(*other)),
            None => Err(FormatError::Damaged("empty".into())),
        }
    }

    pub fn totals(&self) -> (u64, u64) {
        self.roots
            .iter()
            .map(Node::totals)
            .fold((0, 0), |(f, b), (nf, nb)| (f + nf, b + nb))
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

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ScanError + '_ {
    move |error| ScanError::Io {
        path: path.to_path_buf(),
        error,
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

/// One entry a restore writes, at its original absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub path: PathBuf,
    pub meta: Meta,
    pub kind: ItemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    Dir,
    File {
        size: u64,
        chunks: Vec<(ChunkId, u32)>,
    },
    Symlink {
        target: PathBuf,
    },
}

impl Item {
    /// The item a node at `path` restores to (a directory's children come from its blob).
    pub fn of(path: PathBuf, node: &Node) -> Self {
        let kind = match &node.kind {
            NodeKind::Dir { .. } => ItemKind::Dir,
            NodeKind::File { size, chunks } => ItemKind::File {
                size: *size,
                chunks: chunks.clone(),
            },
            NodeKind::Symlink { target } => ItemKind::Symlink {
                target: target.path().to_path_buf(),
            },
        };
        Self {
            path,
            meta: node.meta,
            kind,
        }
    }
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

/// Whether `original` lies on the way to `sub` (a directory to walk into for it).
pub fn leads_to(original: &Path, sub: Option<&Path>) -> bool {
    sub.is_none_or(|sub| sub.starts_with(original) || original.starts_with(sub))
}

/// Writes a directory or symlink item under `to` (files are the restore's, chunk by chunk).
/// Directories get their mode and mtime in [`finish_dirs`], after their children are written.
pub fn make_entry(to: &Path, item: &Item) -> io::Result<()> {
    let target = target_of(to, &item.path);
    match &item.kind {
        ItemKind::Dir => fs::create_dir_all(&target),
        ItemKind::Symlink { target: link } => {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            let _ = fs::remove_file(&target);
            std::os::unix::fs::symlink(link, &target)?;
            set_mtime(&target, &item.meta)
        }
        ItemKind::File { .. } => Ok(()),
    }
}

/// Gives a restored file its mode and mtime (after its last byte is written).
pub fn finish_file(path: &Path, meta: &Meta) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))?;
    set_mtime(path, meta)
}

/// Sets the directories' modes and mtimes, deepest first (writing a child changes its
/// parent's mtime).
pub fn finish_dirs(to: &Path, dirs: &mut [(PathBuf, Meta)]) -> io::Result<()> {
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().len()));
    for (path, meta) in dirs.iter() {
        let target = target_of(to, path);
        fs::set_permissions(&target, fs::Permissions::from_mode(meta.mode))?;
        set_mtime(&target, meta)?;
    }
    Ok(())
}

/// Sets `path`'s mtime, without following a symlink (its atime is left alone).
fn set_mtime(path: &Path, meta: &Meta) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let mtime = TimeSpec::new(meta.mtime_secs, meta.mtime_nanos as _);
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
