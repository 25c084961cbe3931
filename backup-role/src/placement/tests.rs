use proptest::prelude::*;

use super::*;

fn id(n: u64) -> MemberId {
    MemberId::new(n).unwrap()
}

fn cand(n: u64, node: &str, free: u64) -> Candidate {
    Candidate {
        id: id(n),
        node: node.into(),
        free,
    }
}

fn chunk(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

#[test]
fn placement_prefers_new_nodes_then_the_most_free_space() {
    let mut c = vec![cand(1, "a", 100), cand(2, "a", 90), cand(3, "b", 10)];
    // Node b has less room but no copy yet.
    assert_eq!(
        place(&mut c, &BTreeSet::new(), 5, 2).unwrap(),
        [id(1), id(3)]
    );
    assert_eq!((c[0].free, c[2].free), (95, 5));
    // Not on a space that holds it; falls back to the same node when no other has room.
    let holding = BTreeSet::from([id(1)]);
    assert_eq!(place(&mut c, &holding, 20, 1).unwrap(), [id(2)]);
    let err = place(&mut c, &BTreeSet::new(), 80, 2).unwrap_err();
    assert_eq!(
        err,
        PlaceError::NotEnoughSpace {
            bytes: 80,
            wanted: 2,
            found: 1
        }
    );
}

#[test]
fn the_plan_copies_what_is_short_drops_what_is_beyond_r_and_names_the_lost() {
    let mut index = Index::default();
    for (n, spaces) in [
        (1u8, vec![1u64]),
        (2, vec![1, 2, 3]),
        (3, vec![]),
        (4, vec![2, 3]),
    ] {
        index.chunks.insert(
            chunk(n),
            Stored {
                sealed_len: 10,
                spaces: spaces.into_iter().map(id).collect(),
            },
        );
    }
    index
        .snapshots
        .insert("s".into(), [1, 2, 3, 4].map(chunk).into_iter().collect());
    let plan = index.plan(2);
    assert_eq!(plan.copy, [(chunk(1), 1, id(1))]);
    assert_eq!(plan.drop, [(chunk(2), id(3))]);
    assert_eq!(plan.lost, [chunk(3)]);

    // A space that fails takes its copies with it.
    index.lose(id(2), None);
    assert_eq!(index.plan(2).copy.len(), 2, "chunks 1 and 4");
    // A heartbeat answer names only some chunks.
    index.lose(id(1), Some(&[chunk(1)]));
    assert_eq!(index.plan(2).lost, [chunk(1), chunk(3)]);
}

#[test]
fn forgetting_a_snapshot_prunes_only_chunks_nothing_else_references() {
    let mut index = Index::default();
    for n in 1..=3 {
        index.chunks.insert(chunk(n), Stored::default());
    }
    index
        .snapshots
        .insert("old".into(), [chunk(1), chunk(2)].into());
    index.snapshots.insert("new".into(), [chunk(2)].into());
    index.pending.insert(chunk(3));
    index.snapshots.remove("old");
    index.prune();
    assert_eq!(
        index.chunks.keys().copied().collect::<Vec<_>>(),
        [chunk(2), chunk(3)]
    );
}

proptest! {
    /// Placement never picks a space twice, one that holds the chunk, or one without room, and
    /// it never overspends a space's free bytes.
    #[test]
    fn placement_respects_room_and_distinctness(
        frees in proptest::collection::vec(0u64..100, 1..8),
        chunks in proptest::collection::vec((1u64..40, 1usize..4), 1..30),
    ) {
        let mut c: Vec<Candidate> = frees
            .iter()
            .enumerate()
            .map(|(i, f)| cand(i as u64 + 1, &format!("n{}", i % 3), *f))
            .collect();
        let start: Vec<u64> = frees.clone();
        let mut used = vec![0u64; c.len()];
        for (bytes, r) in chunks {
            let before = c.clone();
            if let Ok(chosen) = place(&mut c, &BTreeSet::new(), bytes, r) {
                let distinct: BTreeSet<_> = chosen.iter().collect();
                prop_assert_eq!(distinct.len(), r);
                for s in chosen {
                    let i = (s.get() - 1) as usize;
                    prop_assert!(before[i].free >= bytes);
                    used[i] += bytes;
                }
            }
        }
        for i in 0..c.len() {
            prop_assert!(used[i] <= start[i]);
        }
    }
}
