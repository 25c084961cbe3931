use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn key() -> OwnerKey {
    OwnerKey::from_bytes(&[7; 32])
}

/// A small tree with the awkward cases: nesting, an empty file, odd modes, an old mtime,
/// symlinks (one dangling), a file of several chunks.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/empty"), b"").unwrap();
    fs::write(root.join("a/b/c/odd"), b"odd mode").unwrap();
    fs::set_permissions(root.join("a/b/c/odd"), fs::Permissions::from_mode(0o741)).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(root.join("big"), &big).unwrap();
    fs::File::options()
        .write(true)
        .open(root.join("big"))
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    symlink("a/empty", root.join("link")).unwrap();
    symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
}

#[test]
fn a_tree_scans_into_a_manifest_and_restores_identically() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    make_tree(&root);
    let mut store: HashMap<ChunkId, Vec<u8>> = HashMap::new();
    let mut skipped = 0;
    let manifest = scan(
        std::slice::from_ref(&root),
        &key(),
        42,
        &mut |id, data| {
            assert!(store.insert(id, data).is_none(), "each chunk handed once");
            Ok(())
        },
        &mut skipped,
    )
    .unwrap();
    assert_eq!(manifest.files(), 3);
    assert_eq!(manifest.bytes(), 3_000_000 + 8);
    assert!(store.len() >= 3, "the big file is several chunks");

    // Through its sealed form and back.
    let pieces = manifest.pieces();
    assert_eq!(Manifest::from_pieces(&pieces).unwrap(), manifest);

    let to = dir.path().join("restored");
    let mut content = |id: &ChunkId| Ok(store[id].clone());
    for e in &manifest.entries {
        restore_entry(&to, e, &mut content).unwrap();
    }
    finish_dirs(&to, &manifest.entries.iter().collect::<Vec<_>>()).unwrap();
    let back = target_of(&to, &root);

    // Scanning the restored tree gives the same entries, up to where they are.
    let again = scan(
        std::slice::from_ref(&back),
        &key(),
        42,
        &mut |_, _| Ok(()),
        &mut 0,
    )
    .unwrap();
    let strip = |m: &Manifest, base: &Path| -> Vec<(PathBuf, Kind, u32, i64, u32)> {
        m.entries
            .iter()
            .map(|e| {
                let p = e.path.path().strip_prefix(base).unwrap().to_path_buf();
                (p, e.kind.clone(), e.mode, e.mtime_secs, e.mtime_nanos)
            })
            .filter(|(p, k, ..)| !(p.as_os_str().is_empty() && matches!(k, Kind::Dir)))
            .collect()
    };
    assert_eq!(strip(&again, &back), strip(&manifest, &root));
}

#[test]
fn a_missing_or_relative_root_is_named() {
    let err = scan(
        &[PathBuf::from("/no/such/dir")],
        &key(),
        0,
        &mut |_, _| Ok(()),
        &mut 0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
    assert!(matches!(
        check_roots(&[PathBuf::from("relative")]),
        Err(ScanError::NotADirectory(_))
    ));
}

#[test]
fn a_sub_path_selects_itself_and_below() {
    assert!(selected(Path::new("/a/b/c"), Some(Path::new("/a/b"))));
    assert!(selected(Path::new("/a/b"), Some(Path::new("/a/b"))));
    assert!(!selected(Path::new("/a/bc"), Some(Path::new("/a/b"))));
    assert!(selected(Path::new("/x"), None));
    assert_eq!(
        target_of(Path::new("/to"), Path::new("/a/b")),
        PathBuf::from("/to/a/b")
    );
}
