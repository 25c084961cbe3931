use std::collections::HashMap;

use super::*;
use crate::test_support::make_tree;

fn key() -> OwnerKey {
    OwnerKey::from_bytes(&[7; 32])
}

/// One scan: what it sent (sealed, by id) and its result.
fn scan_once(
    roots: &[PathBuf],
    held: &HashSet<ChunkId>,
    cache: Option<&TreeCache>,
    time_ms: u64,
) -> (HashMap<ChunkId, Vec<u8>>, Scanned) {
    let key = key();
    let sent = Mutex::new(HashMap::new());
    let held_fn = |id: &ChunkId| held.contains(id);
    let send_fn = |id: ChunkId, sealed: Vec<u8>| {
        assert!(
            sent.lock().unwrap().insert(id, sealed).is_none(),
            "each chunk sent once"
        );
        Ok(())
    };
    let progress = Progress::default();
    let scanned = Scanner::new(&key, &held_fn, &send_fn, cache, &progress)
        .snapshot(roots, time_ms)
        .unwrap();
    (sent.into_inner().unwrap(), scanned)
}

fn tree_of(sent: &HashMap<ChunkId, Vec<u8>>, id: &ChunkId) -> Tree {
    Tree::decode(&key().open(id, &sent[id]).unwrap()).unwrap()
}

fn subtree(tree: &Tree, name: &[u8]) -> ChunkId {
    match tree.nodes.iter().find(|n| n.name.0 == name).unwrap().kind {
        NodeKind::Dir { tree, .. } => tree,
        _ => panic!("not a directory"),
    }
}

#[test]
fn a_scan_sends_each_chunk_once_and_the_root_names_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    make_tree(&root);
    let (sent, scanned) = scan_once(std::slice::from_ref(&root), &HashSet::new(), None, 42);
    assert_eq!(scanned.files, 4);
    assert_eq!(scanned.bytes, 3_000_000 + 8 + 45_000);
    assert_eq!(scanned.files_read, 4);
    assert_eq!(sent.len(), scanned.referenced.len());
    let plain = key().open(&scanned.root, &sent[&scanned.root]).unwrap();
    let snapshot = SnapshotRoot::decode(&plain).unwrap().unwrap();
    assert_eq!(snapshot.roots[0].name.path(), root);
    let NodeKind::Dir { tree, .. } = snapshot.roots[0].kind else {
        panic!("a root is a directory")
    };
    let top = tree_of(&sent, &tree);
    let names: Vec<&[u8]> = top.nodes.iter().map(|n| n.name.0.as_slice()).collect();
    assert_eq!(
        names,
        [&b"a"[..], b"big", b"dangling", b"link", b"other"],
        "sorted by name"
    );
    // The text compresses: its sealed chunk is far smaller than the file.
    let other = tree_of(&sent, &subtree(&top, b"other"));
    let NodeKind::File { chunks, .. } = &other.nodes[0].kind else {
        panic!()
    };
    assert!(
        sent[&chunks[0].0].len() < 1000,
        "{}",
        sent[&chunks[0].0].len()
    );
}

#[test]
fn an_unchanged_directory_reuses_its_blob_and_an_unchanged_tree_sends_only_a_new_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    make_tree(&root);
    let cache = TreeCache::open(dir.path().join("cache"));
    let roots = std::slice::from_ref(&root);
    let (first, scanned) = scan_once(roots, &HashSet::new(), Some(&cache), 42);
    // Everything is stored now and nothing changed: no file is read again, and only the new
    // root (a new time) is sent.
    let held: HashSet<ChunkId> = first.keys().copied().collect();
    let (again, rescanned) = scan_once(roots, &held, Some(&cache), 43);
    assert_eq!(again.keys().collect::<Vec<_>>(), [&rescanned.root]);
    assert_eq!(rescanned.files_read, 0, "unchanged files are not read");
    assert_eq!(rescanned.referenced.len(), scanned.referenced.len());

    // One file changes: its chunk, its directory's blob and those above it go (c, b, a, the
    // top), and the root; the untouched directory's blob is the same id as before.
    std::fs::write(root.join("a/b/c/odd"), b"changed").unwrap();
    let (changed, rescanned) = scan_once(roots, &held, Some(&cache), 44);
    assert_eq!(changed.len(), 1 + 4 + 1, "{:?}", changed.keys());
    assert_eq!(rescanned.files_read, 1);
    let plain = key()
        .open(&rescanned.root, &changed[&rescanned.root])
        .unwrap();
    let NodeKind::Dir { tree, .. } = SnapshotRoot::decode(&plain).unwrap().unwrap().roots[0].kind
    else {
        panic!()
    };
    let other = subtree(&tree_of(&changed, &tree), b"other");
    assert!(first.contains_key(&other) && !changed.contains_key(&other));
}

#[test]
fn the_cache_forgets_directories_that_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    make_tree(&root);
    let cache_dir = dir.path().join("cache");
    let cache = TreeCache::open(cache_dir.clone());
    scan_once(
        std::slice::from_ref(&root),
        &HashSet::new(),
        Some(&cache),
        1,
    );
    let count = || std::fs::read_dir(&cache_dir).unwrap().count();
    assert_eq!(count(), 5, "src, a, a/b, a/b/c, other");
    std::fs::remove_dir_all(root.join("other")).unwrap();
    let cache = TreeCache::open(cache_dir.clone());
    scan_once(
        std::slice::from_ref(&root),
        &HashSet::new(),
        Some(&cache),
        2,
    );
    cache.sweep();
    assert_eq!(count(), 4);
    assert_eq!(super::count(std::slice::from_ref(&root)), (3, 3_000_008));
}
