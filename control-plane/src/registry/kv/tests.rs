use super::*;
use proptest::prelude::*;

fn put(key: &str, value: &str, lease: Option<u64>) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        lease,
    }
}

#[test]
fn a_watch_reads_only_changes_under_its_prefix_after_its_index() {
    let mut kv = Kv::default();
    kv.put(5, "app/a", b"1", None).unwrap();
    kv.put(6, "other/x", b"2", None).unwrap();
    kv.put(7, "app/b", b"3", None).unwrap();
    assert!(kv.delete(8, "app/a", None).unwrap());
    let seen: Vec<(u64, ChangeKind, &str)> = kv
        .changes_after("app/", 5)
        .unwrap()
        .iter()
        .map(|c| (c.index, c.kind, c.key.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (7, ChangeKind::Put, "app/b"),
            (8, ChangeKind::Delete, "app/a")
        ]
    );
    let deleted = kv.changes_after("app/a", 7).unwrap()[0].clone();
    assert_eq!((deleted.create_index, deleted.modify_index), (5, 8));
    assert!(
        !kv.delete(9, "app/a", None).unwrap(),
        "deleting nothing records nothing"
    );
    assert_eq!(kv.changes_after("", 8).unwrap().len(), 0);
}

#[test]
fn the_oldest_changes_go_and_a_watch_from_before_them_is_compacted() {
    let mut kv = Kv::default();
    for i in 1..=(MAX_CHANGES as u64 + 10) {
        kv.put(i, "k", b"v", None).unwrap();
    }
    assert_eq!(kv.first_change_index(), 10);
    assert_eq!(kv.changes_after("k", 9), Err(Compacted { first_index: 10 }));
    assert_eq!(kv.changes_after("k", 10).unwrap().len(), MAX_CHANGES);
}

#[test]
fn a_leases_keys_go_with_it_in_one_index() {
    let mut kv = Kv::default();
    assert_eq!(kv.grant(3, 10_000), Ok(3));
    let (ok, _) = kv
        .txn(
            4,
            &Txn {
                success: vec![put("l/a", "1", Some(3)), put("l/b", "2", Some(3))],
                ..Default::default()
            },
        )
        .unwrap();
    assert!(ok);
    assert_eq!(kv.get("l/a").unwrap().lease, Some(3));
    // A plain put takes the key off the lease.
    kv.put(5, "l/b", b"mine", None).unwrap();
    assert_eq!(kv.end_lease(6, 3), Ok(1));
    assert!(kv.get("l/a").is_none() && kv.get("l/b").is_some());
    let change = &kv.changes_after("l/", 5).unwrap()[0];
    assert_eq!(
        (change.index, change.kind, change.key.as_str()),
        (6, ChangeKind::Delete, "l/a")
    );
    assert_eq!(
        kv.end_lease(7, 3),
        Err(RegistryError::UnknownLease { id: 3 })
    );
    assert!(kv.grant(8, 999).is_err() && kv.grant(8, MAX_LEASE_TTL_MS + 1).is_err());
}

#[test]
fn a_transaction_runs_one_branch_whole_or_changes_nothing() {
    let mut kv = Kv::default();
    kv.put(1, "a", b"old", None).unwrap();
    let txn = Txn {
        compare: vec![
            Compare::ModifyIndex {
                key: "a".into(),
                index: 1,
            },
            Compare::Exists {
                key: "b".into(),
                exists: false,
            },
        ],
        success: vec![
            put("a", "new", None),
            put("b", "x", None),
            TxnOp::Get { key: "a".into() },
        ],
        failure: vec![TxnOp::Get { key: "a".into() }],
    };
    let (ok, results) = kv.txn(2, &txn).unwrap();
    assert!(ok);
    assert_eq!(results[0], TxnResult::Put { modify_index: 2 });
    let TxnResult::Get {
        entry: Some((_, e)),
    } = &results[2]
    else {
        panic!("{results:?}")
    };
    assert_eq!(e.value, b"new");
    // The same compares now fail: the failure branch runs, nothing is written.
    let (ok, results) = kv.txn(3, &txn).unwrap();
    assert!(!ok && results.len() == 1);
    assert_eq!(kv.get("a").unwrap().modify_index, 2);
    // Malformed: refused whole, before any op ran.
    let bad = Txn {
        success: vec![put("c", "1", None), put("c", "2", None)],
        ..Default::default()
    };
    assert!(kv.txn(4, &bad).is_err());
    let unknown = Txn {
        success: vec![put("c", "1", None), put("d", "2", Some(99))],
        ..Default::default()
    };
    assert_eq!(
        kv.txn(4, &unknown),
        Err(RegistryError::UnknownLease { id: 99 })
    );
    assert!(
        kv.get("c").is_none(),
        "nothing of a refused transaction applied"
    );
    let value = Txn {
        compare: vec![Compare::Value {
            key: "b".into(),
            value: b"x".to_vec(),
        }],
        success: vec![TxnOp::Delete { key: "b".into() }],
        ..Default::default()
    };
    assert_eq!(
        kv.txn(5, &value).unwrap(),
        (true, vec![TxnResult::Delete { deleted: true }])
    );
}

proptest! {
    /// Replaying the changes under a prefix from any kept point onto the entries of that point
    /// gives the entries now: a watcher never misses a change.
    #[test]
    fn replaying_the_changes_rebuilds_the_entries(
        ops in proptest::collection::vec((0u8..4, 0u8..4, 0u8..3), 1..80),
        from in 0usize..80,
    ) {
        let mut kv = Kv::default();
        let mut snapshots = vec![BTreeMap::new()];
        for (i, (op, key, lease)) in ops.iter().enumerate() {
            let index = i as u64 + 1;
            let key = format!("p/{key}");
            match op {
                0 => { kv.put(index, &key, &[*lease], None).unwrap(); }
                1 => { kv.delete(index, &key, None).unwrap(); }
                2 => {
                    if kv.grant(index, 5_000).is_ok() {
                        let _ = kv.txn(index, &Txn { success: vec![put(&key, "l", Some(index))], ..Default::default() });
                    }
                }
                _ => {
                    let id = kv.leases().keys().next().copied();
                    if let Some(id) = id { kv.end_lease(index, id).unwrap(); }
                }
            }
            snapshots.push(kv.prefix("p/").map(|(k, e)| (k.clone(), e.value.clone())).collect::<BTreeMap<_, _>>());
        }
        let from = from.min(ops.len());
        let mut replayed = snapshots[from].clone();
        for change in kv.changes_after("p/", from as u64).unwrap() {
            match change.kind {
                ChangeKind::Put => { replayed.insert(change.key.clone(), change.value.clone()); }
                ChangeKind::Delete => { replayed.remove(&change.key); }
            }
        }
        prop_assert_eq!(&replayed, snapshots.last().unwrap());
    }
}
