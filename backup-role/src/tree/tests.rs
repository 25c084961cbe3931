use super::*;

fn node(name: &str, kind: NodeKind) -> Node {
    Node {
        name: ByteBuf(name.as_bytes().to_vec()),
        meta: Meta {
            mode: 0o644,
            mtime_secs: 1,
            mtime_nanos: 2,
        },
        change: Change {
            inode: 3,
            ctime_secs: 4,
            ctime_nanos: 5,
        },
        kind,
    }
}

#[test]
fn a_snapshot_root_round_trips_and_names_its_format() {
    let root = SnapshotRoot {
        time_ms: 42,
        roots: vec![node(
            "/data",
            NodeKind::Dir {
                tree: ChunkId([1; 32]),
                files: 3,
                bytes: 30,
            },
        )],
    };
    let bytes = root.encode();
    assert!(bytes.starts_with(ROOT_MAGIC));
    assert_eq!(SnapshotRoot::decode(&bytes), Ok(Some(root.clone())));
    assert_eq!(root.totals(), (3, 30));
    // A v1 manifest piece is not a root; a newer format is named, not misread.
    assert_eq!(SnapshotRoot::decode(b"\x2a\0\0\0\0\0\0\0"), Ok(None));
    let mut newer = ROOT_MAGIC.to_vec();
    newer.extend([9, 1, 2, 3]);
    let err = SnapshotRoot::decode(&newer).unwrap_err();
    assert_eq!(err, FormatError::Unknown(9));
    assert!(err.to_string().contains("v9"), "{err}");
    assert!(SnapshotRoot::decode(&bytes[..bytes.len() - 3]).is_err());
}

#[test]
fn equal_directories_encode_to_equal_blobs() {
    let file = |size| NodeKind::File {
        size,
        chunks: vec![(ChunkId([7; 32]), size as u32)],
    };
    let a = Tree {
        nodes: vec![node("x", file(5)), node("y", file(6))],
    };
    let b = Tree {
        nodes: vec![node("x", file(5)), node("y", file(6))],
    };
    assert_eq!(a.encode(), b.encode());
    let changed = Tree {
        nodes: vec![node("x", file(5)), node("y", file(7))],
    };
    assert_ne!(a.encode(), changed.encode());
    assert_eq!(Tree::decode(&a.encode()).unwrap(), a);
}

#[test]
fn a_missing_or_relative_root_is_named() {
    let err = check_roots(&[PathBuf::from("/no/such/dir")]).unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
    assert!(matches!(
        check_roots(&[PathBuf::from("relative")]),
        Err(ScanError::NotADirectory(_))
    ));
}

#[test]
fn a_sub_path_selects_itself_and_below_and_walks_the_way_there() {
    assert!(selected(Path::new("/a/b/c"), Some(Path::new("/a/b"))));
    assert!(selected(Path::new("/a/b"), Some(Path::new("/a/b"))));
    assert!(!selected(Path::new("/a/bc"), Some(Path::new("/a/b"))));
    assert!(!selected(Path::new("/a"), Some(Path::new("/a/b"))));
    assert!(leads_to(Path::new("/a"), Some(Path::new("/a/b"))));
    assert!(leads_to(Path::new("/a/b/c"), Some(Path::new("/a/b"))));
    assert!(!leads_to(Path::new("/x"), Some(Path::new("/a/b"))));
    assert!(selected(Path::new("/x"), None));
    assert_eq!(
        target_of(Path::new("/to"), Path::new("/a/b")),
        PathBuf::from("/to/a/b")
    );
}
