//! The files and directories of a [`super::PowerFs`], in memory: what readers see and what a
//! power loss leaves (sans-IO).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo, RenameFlags};

/// One file or directory.
pub(super) struct Inode {
    pub(super) kind: FileType,
    pub(super) perm: u16,
    pub(super) nlink: u32,
    pub(super) open: u32,
    pub(super) children: BTreeMap<OsString, u64>,
    /// What readers see.
    pub(super) data: Vec<u8>,
    /// What a power loss leaves.
    pub(super) synced: Vec<u8>,
    /// Byte ranges written since the last sync (appends merge into one).
    pub(super) dirty: Vec<(usize, usize)>,
    pub(super) mtime: SystemTime,
}

impl Inode {
    pub(super) fn new(kind: FileType, perm: u16) -> Self {
        Self {
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            open: 0,
            children: BTreeMap::new(),
            data: Vec::new(),
            synced: Vec::new(),
            dirty: Vec::new(),
            mtime: SystemTime::now(),
        }
    }

    pub(super) fn write(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
        let full = self.dirty.len() >= 64;
        match self.dirty.last_mut() {
            Some(last) if last.0 <= end && offset <= last.1 => {
                *last = (last.0.min(offset), last.1.max(end));
            }
            _ if full => {
                let lo = self.dirty.iter().map(|r| r.0).min().unwrap_or(offset);
                let hi = self.dirty.iter().map(|r| r.1).max().unwrap_or(end);
                self.dirty = vec![(lo.min(offset), hi.max(end))];
            }
            _ => self.dirty.push((offset, end)),
        }
        self.mtime = SystemTime::now();
    }

    /// `fsync`: what readers see now survives a power loss.
    pub(super) fn sync(&mut self) {
        self.synced.resize(self.data.len(), 0);
        for (lo, hi) in self.dirty.drain(..) {
            let hi = hi.min(self.data.len());
            if lo < hi {
                self.synced[lo..hi].copy_from_slice(&self.data[lo..hi]);
            }
        }
    }

    pub(super) fn lose_unsynced(&mut self) {
        self.data.clone_from(&self.synced);
        self.dirty.clear();
    }
}

#[derive(Default)]
pub(super) struct Tree {
    pub(super) inodes: HashMap<u64, Inode>,
    pub(super) next: u64,
    /// Bytes written that a power loss dropped, over the mount's life (for reports).
    pub(super) lost_bytes: u64,
}

impl Tree {
    pub(super) fn attr(&self, ino: u64) -> Option<FileAttr> {
        let i = self.inodes.get(&ino)?;
        Some(FileAttr {
            ino: INodeNo(ino),
            size: i.data.len() as u64,
            blocks: (i.data.len() as u64).div_ceil(512),
            atime: i.mtime,
            mtime: i.mtime,
            ctime: i.mtime,
            crtime: i.mtime,
            kind: i.kind,
            perm: i.perm,
            nlink: i.nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    pub(super) fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let dir = self.inodes.get(&parent).ok_or(Errno::ENOENT)?;
        dir.children.get(name).copied().ok_or(Errno::ENOENT)
    }

    pub(super) fn add(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        perm: u16,
    ) -> Result<u64, Errno> {
        let dir = self.inodes.get(&parent).ok_or(Errno::ENOENT)?;
        if dir.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        if dir.children.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        self.next += 1;
        let ino = self.next;
        self.inodes.insert(ino, Inode::new(kind, perm));
        let dir = self.inodes.get_mut(&parent).ok_or(Errno::ENOENT)?;
        dir.children.insert(name.to_owned(), ino);
        if kind == FileType::Directory {
            dir.nlink += 1;
        }
        Ok(ino)
    }

    /// Drops a name; the inode goes once no name and no open handle is left.
    pub(super) fn unlink(&mut self, parent: u64, name: &OsStr, dirs: bool) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        let node = self.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        match (node.kind == FileType::Directory, dirs) {
            (true, false) => return Err(Errno::EISDIR),
            (false, true) => return Err(Errno::ENOTDIR),
            (true, true) if !node.children.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        if let Some(dir) = self.inodes.get_mut(&parent) {
            dir.children.remove(name);
            if dirs {
                dir.nlink -= 1;
            }
        }
        self.release_name(ino);
        Ok(())
    }

    pub(super) fn release_name(&mut self, ino: u64) {
        if let Some(node) = self.inodes.get_mut(&ino) {
            node.nlink = node
                .nlink
                .saturating_sub(if node.kind == FileType::Directory {
                    2
                } else {
                    1
                });
            if node.nlink == 0 && node.open == 0 {
                self.inodes.remove(&ino);
            }
        }
    }

    pub(super) fn rename(
        &mut self,
        from: (u64, &OsStr),
        to: (u64, &OsStr),
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let ino = self.child(from.0, from.1)?;
        if let Ok(existing) = self.child(to.0, to.1) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if existing != ino {
                let dirs = self
                    .inodes
                    .get(&existing)
                    .is_some_and(|n| n.kind == FileType::Directory);
                self.unlink(to.0, to.1, dirs)?;
            }
        }
        let is_dir = self
            .inodes
            .get(&ino)
            .is_some_and(|n| n.kind == FileType::Directory);
        let source = self.inodes.get_mut(&from.0).ok_or(Errno::ENOENT)?;
        source.children.remove(from.1);
        if is_dir {
            source.nlink -= 1;
        }
        let target = self.inodes.get_mut(&to.0).ok_or(Errno::ENOENT)?;
        target.children.insert(to.1.to_owned(), ino);
        if is_dir {
            target.nlink += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ROOT;
    use super::*;

    #[test]
    fn unsynced_writes_and_truncations_are_lost_and_synced_ones_kept() {
        let mut f = Inode::new(FileType::RegularFile, 0o644);
        f.write(0, b"hello ");
        f.sync();
        f.write(6, b"world");
        assert_eq!(f.data, b"hello world");
        f.lose_unsynced();
        assert_eq!(f.data, b"hello ");
        f.write(6, b"again");
        f.write(0, b"J");
        f.sync();
        f.data.truncate(2);
        f.dirty.push((2, 2));
        f.lose_unsynced();
        assert_eq!(f.data, b"Jello again");
    }

    #[test]
    fn many_scattered_writes_are_all_synced() {
        let mut f = Inode::new(FileType::RegularFile, 0o644);
        for i in 0..200usize {
            f.write(i * 10, &[i as u8; 3]);
        }
        f.sync();
        f.write(5000, b"x");
        f.lose_unsynced();
        assert_eq!(f.data.len(), 1993);
        for i in 0..200usize {
            assert_eq!(&f.data[i * 10..i * 10 + 3], &[i as u8; 3]);
        }
    }

    #[test]
    fn renames_replace_and_unlinks_remove_names() {
        let mut t = Tree {
            next: ROOT,
            ..Tree::default()
        };
        t.inodes
            .insert(ROOT, Inode::new(FileType::Directory, 0o755));
        let a = t
            .add(ROOT, OsStr::new("a"), FileType::RegularFile, 0o644)
            .unwrap();
        let b = t
            .add(ROOT, OsStr::new("b"), FileType::RegularFile, 0o644)
            .unwrap();
        t.rename(
            (ROOT, OsStr::new("a")),
            (ROOT, OsStr::new("b")),
            RenameFlags::empty(),
        )
        .unwrap();
        assert_eq!(t.child(ROOT, OsStr::new("b")), Ok(a));
        assert!(!t.inodes.contains_key(&b));
        assert_eq!(t.child(ROOT, OsStr::new("a")), Err(Errno::ENOENT));
        let d = t
            .add(ROOT, OsStr::new("d"), FileType::Directory, 0o755)
            .unwrap();
        t.add(d, OsStr::new("x"), FileType::RegularFile, 0o644)
            .unwrap();
        assert_eq!(t.unlink(ROOT, OsStr::new("d"), true), Err(Errno::ENOTEMPTY));
        t.unlink(d, OsStr::new("x"), false).unwrap();
        t.unlink(ROOT, OsStr::new("d"), true).unwrap();
        assert_eq!(t.inodes.len(), 2);
    }
}
