//! A filesystem that loses what was not synced when the power fails (in the style of LazyFS),
//! for a member's data directory (IO: FUSE through the `fuser` crate).
//!
//! Files live in memory. Every write is visible to readers at once, but survives a power loss
//! only once the file was `fsync`ed or `fdatasync`ed: [`PowerFs::lose_unsynced`] puts every
//! file back to its content at its last sync (longer or shorter, as it was then). Directory
//! operations (create, rename, unlink, mkdir) are durable at once, as LazyFS passes them
//! through; so the model is a disk that reorders nothing but forgets unsynced data. Pages are
//! never cached by the kernel (`direct_io`, attributes with no lifetime), so what a restarted
//! member reads is exactly what survived.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

pub(crate) const ROOT: u64 = 1;
const NO_CACHE: Duration = Duration::ZERO;

mod tree;

use tree::{Inode, Tree};

/// The filesystem as FUSE serves it.
struct PowerFsImpl {
    tree: Arc<Mutex<Tree>>,
}

impl PowerFsImpl {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, result: Result<u64, Errno>, reply: ReplyEntry) {
        let tree = self.tree();
        match result.and_then(|ino| tree.attr(ino).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.entry(&NO_CACHE, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

/// The permission bits of a `mode`.
fn perm(mode: u32) -> u16 {
    (mode & 0o7777) as u16
}

fn reply_attr(tree: &Tree, ino: u64, reply: ReplyAttr) {
    match tree.attr(ino) {
        Some(attr) => reply.attr(&NO_CACHE, &attr),
        None => reply.error(Errno::ENOENT),
    }
}

fn done(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PowerFsImpl {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.tree().child(parent.0, name);
        self.entry(found, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(&self.tree(), ino.0, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut tree = self.tree();
        let Some(node) = tree.inodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(mode) = mode {
            node.perm = perm(mode);
        }
        if let Some(size) = size {
            // A truncation is data: it survives a power loss only once synced.
            let size = size as usize;
            if size > node.data.len() {
                let old = node.data.len();
                node.write(old, &vec![0; size - old]);
            } else {
                node.data.truncate(size);
                node.dirty.push((size, size));
            }
        }
        node.mtime = SystemTime::now();
        reply_attr(&tree, ino.0, reply);
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let made = self
            .tree()
            .add(parent.0, name, FileType::RegularFile, perm(mode));
        self.entry(made, reply);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self
            .tree()
            .add(parent.0, name, FileType::Directory, perm(mode));
        self.entry(made, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(self.tree().unlink(parent.0, name, false), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(self.tree().unlink(parent.0, name, true), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        done(
            self.tree()
                .rename((parent.0, name), (newparent.0, newname), flags),
            reply,
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree().inodes.get_mut(&ino.0) {
            Some(node) => {
                node.open += 1;
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut tree = self.tree();
        let made = tree.add(parent.0, name, FileType::RegularFile, perm(mode));
        match made.and_then(|ino| tree.attr(ino).ok_or(Errno::ENOENT).map(|a| (ino, a))) {
            Ok((ino, attr)) => {
                if let Some(node) = tree.inodes.get_mut(&ino) {
                    node.open += 1;
                }
                reply.created(
                    &NO_CACHE,
                    &attr,
                    Generation(0),
                    FileHandle(0),
                    FopenFlags::FOPEN_DIRECT_IO,
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let tree = self.tree();
        let Some(node) = tree.inodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let start = (offset as usize).min(node.data.len());
        let end = (start + size as usize).min(node.data.len());
        reply.data(&node.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.tree().inodes.get_mut(&ino.0) {
            Some(node) => {
                node.write(offset as usize, data);
                reply.written(data.len() as u32);
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // close() is not a sync
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut tree = self.tree();
        if let Some(node) = tree.inodes.get_mut(&ino.0) {
            node.open = node.open.saturating_sub(1);
            if node.open == 0 && node.nlink == 0 {
                tree.inodes.remove(&ino.0);
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.tree().inodes.get_mut(&ino.0) {
            Some(node) => {
                node.sync();
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // directory operations are durable at once
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.tree();
        let Some(dir) = tree.inodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (ROOT, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in &dir.children {
            let kind = tree
                .inodes
                .get(child)
                .map_or(FileType::RegularFile, |n| n.kind);
            entries.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.tree().inodes.get_mut(&ino.0) {
            Some(node) => {
                let end = (offset + length) as usize;
                if node.data.len() < end {
                    let old = node.data.len();
                    node.write(old, &vec![0; end - old]);
                }
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// A mounted power-loss filesystem; unmounted on drop.
pub struct PowerFs {
    tree: Arc<Mutex<Tree>>,
    _session: fuser::BackgroundSession,
}

impl PowerFs {
    /// Mounts an empty filesystem on `dir` (an existing empty directory).
    pub fn mount(dir: &Path) -> std::io::Result<Self> {
        let mut tree = Tree {
            next: ROOT,
            ..Tree::default()
        };
        tree.inodes
            .insert(ROOT, Inode::new(FileType::Directory, 0o755));
        let tree = Arc::new(Mutex::new(tree));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("hivemind-powerfs".into()),
            fuser::MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount(PowerFsImpl { tree: tree.clone() }, dir, &config)?;
        Ok(Self {
            tree,
            _session: session,
        })
    }

    /// The power fails: every file goes back to what it held at its last sync. Call only
    /// while no process uses the filesystem (the member was killed first).
    pub fn lose_unsynced(&self) -> u64 {
        let mut tree = self.tree.lock().unwrap_or_else(|p| p.into_inner());
        let mut lost = 0;
        for node in tree.inodes.values_mut() {
            lost += node
                .dirty
                .iter()
                .map(|(lo, hi)| (hi - lo) as u64)
                .sum::<u64>();
            node.lose_unsynced();
        }
        tree.lost_bytes += lost;
        lost
    }

    /// Bytes written that power losses dropped so far.
    pub fn lost_bytes(&self) -> u64 {
        self.tree
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lost_bytes
    }
}
