use std::sync::Mutex;

use super::*;
use crate::scan::Scanner;
use crate::space::SpaceStore;
use crate::test_support::{inventory, make_tree, serve, Ledger};

fn key() -> OwnerKey {
    OwnerKey::from_bytes(&[5; 32])
}

/// A space on loopback holding `chunks` for owner "laptop", and a source reading from it.
async fn source_with(dir: &Path, chunks: Vec<(ChunkId, Vec<u8>)>) -> Source {
    let space = Arc::new(SpaceStore::open(dir.join("space"), 1 << 30, 60_000).unwrap());
    space
        .upload(&Ledger::default(), "laptop", 1, chunks)
        .await
        .unwrap();
    let addr = serve(space).await;
    let spaces = Spaces::public(None, None);
    let (at, errors) = spaces.locate(std::slice::from_ref(&addr), "laptop").await;
    assert!(errors.is_empty(), "{errors:?}");
    Source {
        spaces,
        owner: "laptop".into(),
        at,
    }
}

fn record(manifest: Vec<ChunkId>) -> SnapshotRecord {
    SnapshotRecord {
        id: "0123456789abcdef".into(),
        owner: "laptop".into(),
        time_ms: 0,
        files: 0,
        bytes: 0,
        manifest,
        sealed_paths: Vec::new(),
    }
}

/// Scans `root` as a run does; answers the sealed chunks and the root's id.
fn scan(root: &Path) -> (Vec<(ChunkId, Vec<u8>)>, ChunkId) {
    let key = key();
    let sent = Mutex::new(Vec::new());
    let held = |_: &ChunkId| false;
    let send = |id, sealed| {
        sent.lock().unwrap().push((id, sealed));
        Ok(())
    };
    let scanned = Scanner::new(&key, &held, &send, None, &Progress::default())
        .snapshot(&[root.to_path_buf()], 1)
        .unwrap();
    (sent.into_inner().unwrap(), scanned.root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_identically_in_jobs_and_a_sub_path_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    make_tree(&root);
    // Files bigger than a job, cut across jobs at chunk boundaries.
    std::fs::write(
        root.join("a/large"),
        crate::test_support::noise(3, 20 << 20),
    )
    .unwrap();
    let (chunks, top) = scan(&root);
    let source = source_with(dir.path(), chunks).await;
    let to = dir.path().join("restored");
    let progress = Arc::new(Progress::default());
    let view = restore(&key(), &record(vec![top]), &source, &to, None, &progress)
        .await
        .unwrap();
    assert_eq!(view.files, 5);
    assert_eq!(inventory(&tree::target_of(&to, &root)), inventory(&root));
    let done = progress.view();
    assert_eq!((done.files, done.bytes), (5, view.bytes));
    assert_eq!(done.total_bytes, Some(view.bytes));
    assert!(!done.active);

    let sub = root.join("a/b");
    let only = dir.path().join("only");
    restore(
        &key(),
        &record(vec![top]),
        &source,
        &only,
        Some(&sub),
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(inventory(&tree::target_of(&only, &sub)), inventory(&sub));
    assert!(!tree::target_of(&only, &root.join("big")).exists());
    let nothing = restore(
        &key(),
        &record(vec![top]),
        &source,
        &only,
        Some(&root.join("nope")),
        &progress,
    )
    .await;
    assert!(matches!(nothing, Err(RestoreError::NoSuchPath { .. })));
    // Another key: named as the wrong key.
    let other = OwnerKey::from_bytes(&[6; 32]);
    let wrong = restore(&other, &record(vec![top]), &source, &only, None, &progress).await;
    assert!(matches!(wrong, Err(RestoreError::WrongKey(_))), "{wrong:?}");
}

/// A snapshot as builds before trees and compression wrote it (format v1): one manifest in
/// pieces, every chunk sealed raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_written_before_trees_and_compression_still_restores() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    make_tree(&root);
    let key = key();
    let (pieces, sealed) = v1::write(&root, &key, 1).unwrap();
    let source = source_with(dir.path(), sealed).await;
    let to = dir.path().join("restored");
    let view = restore(
        &key,
        &record(pieces),
        &source,
        &to,
        None,
        &Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert_eq!(view.files, 4);
    assert_eq!(inventory(&tree::target_of(&to, &root)), inventory(&root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_a_newer_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let mut root = tree::ROOT_MAGIC.to_vec();
    root.extend([3, 0, 0]);
    let id = key.chunk_id(&root);
    let source = source_with(dir.path(), vec![(id, key.seal(&id, &root))]).await;
    let err = restore(
        &key,
        &record(vec![id]),
        &source,
        &dir.path().join("to"),
        None,
        &Arc::new(Progress::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RestoreError::Format(_, FormatError::Unknown(3))),
        "{err}"
    );
    assert!(err.to_string().contains("format v3"), "{err}");
}

#[test]
fn times_print_as_rfc3339() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_795_726_802_000), "2026-11-26T21:00:02Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
}
