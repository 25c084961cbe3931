use proptest::prelude::*;

use super::*;

fn c(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

fn body(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| n.wrapping_add(i as u8)).collect()
}

#[test]
fn a_pack_round_trips_and_every_chunk_reads_back_verified() {
    let chunks: Vec<(ChunkId, Vec<u8>)> =
        (1..=5).map(|n| (c(n), body(n, 100 * n as usize))).collect();
    let refs: Vec<(ChunkId, &[u8])> = chunks.iter().map(|(id, b)| (*id, b.as_slice())).collect();
    let (pack, entries) = encode(&refs);
    assert_eq!(parse(&pack).unwrap(), entries);
    for (e, (id, data)) in entries.iter().zip(&chunks) {
        assert_eq!(e.id, *id);
        let at = &pack[e.offset as usize..e.offset as usize + e.len as usize];
        assert_eq!(at, data.as_slice());
        assert!(verify(e, at));
    }
    // A flipped bit in a chunk is caught by its check, never served as the chunk.
    let e = entries[2];
    let mut damaged = pack[e.offset as usize..e.offset as usize + e.len as usize].to_vec();
    damaged[7] ^= 1;
    assert!(!verify(&e, &damaged));
}

#[test]
fn a_torn_or_damaged_pack_is_refused() {
    let data = body(9, 5000);
    let (pack, _) = encode(&[(c(1), &data[..]), (c(2), &data[..100])]);
    for cut in [1, 10, 36, 100, pack.len() / 2, pack.len() - 8] {
        assert!(
            parse(&pack[..pack.len() - cut]).is_err(),
            "torn by {cut} bytes"
        );
    }
    assert!(parse(&pack[..4]).is_err());
    let mut header = pack.clone();
    header[0] = b'X';
    assert_eq!(parse(&header), Err(PackError::NoHeader));
    let mut trailer = pack.clone();
    let at = trailer.len() - FOOTER_LEN as usize - 3;
    trailer[at] ^= 0xff;
    assert_eq!(parse(&trailer), Err(PackError::BadTrailer));
}

#[test]
fn chunks_group_into_packs_of_about_the_target_size() {
    let chunks: Vec<(ChunkId, usize)> = (0..40).map(|n| (c(n), 1 << 20)).collect();
    let packs = group(chunks, |len| *len);
    assert_eq!(packs.iter().map(Vec::len).collect::<Vec<_>>(), [16, 16, 8]);
    assert!(group(Vec::<(ChunkId, usize)>::new(), |l| *l).is_empty());
}

#[test]
fn an_empty_pack_is_deleted_a_mostly_dead_one_repacked_a_mostly_live_one_kept() {
    let mut packs = Packs::default();
    let e = |n: u8, offset: u64| Entry {
        id: c(n),
        offset,
        len: 100,
        check: [0; 16],
    };
    packs.add("o", "a", 1000, &[e(1, 8), e(2, 108)]);
    packs.add("o", "b", 1000, &[e(3, 8), e(4, 108), e(5, 208)]);
    // A chunk already indexed stays in its first pack.
    assert_eq!(packs.add("o", "c", 500, &[e(1, 8), e(6, 108)]), [e(6, 108)]);
    assert_eq!(packs.locate("o", &c(1)).unwrap().pack, "a");
    assert_eq!(packs.stored(), 2500);
    assert!(packs.tidy().is_empty(), "c is half live: kept");

    packs.remove("o", &c(1));
    packs.remove("o", &c(2));
    packs.remove("o", &c(3));
    packs.remove("o", &c(4));
    let tidy = packs.tidy();
    assert!(
        tidy.contains(&Tidy::Delete {
            owner: "o".into(),
            pack: "a".into()
        }),
        "{tidy:?}"
    );
    assert!(
        tidy.contains(&Tidy::Repack {
            owner: "o".into(),
            pack: "b".into(),
            live: vec![e(5, 208)]
        }),
        "{tidy:?}"
    );
    packs.forget_pack("o", "a");
    packs.moved("o", "b", "d", 200, &[e(5, 8)]);
    assert_eq!(packs.locate("o", &c(5)).unwrap().pack, "d");
    assert_eq!(packs.stored(), 700);
    assert!(packs.tidy().is_empty());
}

#[test]
fn a_chunk_dropped_during_a_repack_stays_dropped() {
    let mut packs = Packs::default();
    let e = |n: u8, offset: u64| Entry {
        id: c(n),
        offset,
        len: 10,
        check: [0; 16],
    };
    packs.add("o", "a", 100, &[e(1, 8), e(2, 18), e(3, 28)]);
    packs.remove("o", &c(1));
    packs.remove("o", &c(2));
    let Tidy::Repack { live, .. } = packs.tidy().remove(0) else {
        panic!()
    };
    assert_eq!(live, [e(3, 28)]);
    packs.remove("o", &c(3)); // a heartbeat dropped it while the copy was written
    packs.moved("o", "a", "b", 50, &[e(3, 8)]);
    assert!(!packs.holds("o", &c(3)));
    assert_eq!(
        packs.tidy(),
        [Tidy::Delete {
            owner: "o".into(),
            pack: "b".into()
        }]
    );
}

proptest! {
    #[test]
    fn packs_round_trip(lens in proptest::collection::vec(0usize..3000, 0..30)) {
        let chunks: Vec<(ChunkId, Vec<u8>)> = lens.iter().enumerate().map(|(i, l)| (c(i as u8), body(i as u8, *l))).collect();
        let refs: Vec<(ChunkId, &[u8])> = chunks.iter().map(|(id, b)| (*id, b.as_slice())).collect();
        let (pack, entries) = encode(&refs);
        prop_assert_eq!(parse(&pack).unwrap(), entries.clone());
        for (e, (_, data)) in entries.iter().zip(&chunks) {
            prop_assert!(verify(e, &pack[e.offset as usize..e.offset as usize + e.len as usize]));
            prop_assert_eq!(e.len as usize, data.len());
        }
    }

    /// Whatever is dropped, tidying (deleting and repacking) keeps every live chunk readable
    /// at its new place with its own bytes, and nothing dropped comes back.
    #[test]
    fn repack_keeps_every_live_chunk(n in 1u8..40, dropped in proptest::collection::btree_set(0u8..40, 0..40)) {
        let chunks: Vec<(ChunkId, Vec<u8>)> = (0..n).map(|i| (c(i), body(i, 50 + i as usize))).collect();
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut packs = Packs::default();
        for (p, group) in chunks.chunks(7).enumerate() {
            let refs: Vec<(ChunkId, &[u8])> = group.iter().map(|(id, b)| (*id, b.as_slice())).collect();
            let (bytes, entries) = encode(&refs);
            packs.add("o", &format!("p{p}"), bytes.len() as u64, &entries);
            files.insert(format!("p{p}"), bytes);
        }
        for d in &dropped {
            packs.remove("o", &c(*d));
        }
        for (round, action) in packs.tidy().into_iter().enumerate() {
            match action {
                Tidy::Delete { pack, .. } => {
                    packs.forget_pack("o", &pack);
                    files.remove(&pack);
                }
                Tidy::Repack { pack, live, .. } => {
                    let old = &files[&pack];
                    let bodies: Vec<(ChunkId, Vec<u8>)> = live.iter().map(|e| (e.id, old[e.offset as usize..(e.offset + u64::from(e.len)) as usize].to_vec())).collect();
                    let refs: Vec<(ChunkId, &[u8])> = bodies.iter().map(|(id, b)| (*id, b.as_slice())).collect();
                    let (bytes, entries) = encode(&refs);
                    let new = format!("r{round}");
                    packs.moved("o", &pack, &new, bytes.len() as u64, &entries);
                    files.insert(new, bytes);
                    files.remove(&pack);
                }
            }
        }
        for (id, data) in &chunks {
            let loc = packs.locate("o", id);
            if dropped.contains(&id.0[0]) {
                prop_assert!(loc.is_none());
                continue;
            }
            let loc = loc.expect("a live chunk stays indexed");
            let file = &files[&loc.pack];
            let at = &file[loc.entry.offset as usize..(loc.entry.offset + u64::from(loc.entry.len)) as usize];
            prop_assert_eq!(at, data.as_slice());
            prop_assert!(verify(&loc.entry, at));
        }
        prop_assert_eq!(packs.stored(), files.values().map(|f| f.len() as u64).sum::<u64>());
    }
}

#[test]
fn the_reserved_upper_bound_covers_the_packs_written() {
    for n in [0usize, 1, 7, 100] {
        let chunks: Vec<(ChunkId, Vec<u8>)> =
            (0..n).map(|i| (c(i as u8), body(1, 300 + i))).collect();
        let bytes: u64 = chunks.iter().map(|(_, b)| b.len() as u64).sum();
        let packs = group(chunks, Vec::len);
        let written: u64 = packs
            .iter()
            .map(|p| {
                let refs: Vec<(ChunkId, &[u8])> =
                    p.iter().map(|(id, b)| (*id, b.as_slice())).collect();
                encode(&refs).0.len() as u64
            })
            .sum();
        assert!(written <= upper_bound(n, bytes), "{n}: {written}");
    }
}
