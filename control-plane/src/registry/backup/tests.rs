use hivemind_common::backup::ChunkId;
use proptest::prelude::*;

use super::*;

fn id(n: u64) -> MemberId {
    MemberId::new(n).unwrap()
}

fn offer(capacity: u64, stored: u64) -> BackupOp {
    BackupOp::Offer { capacity, stored }
}

fn reserve(spaces: &[(u64, u64)], ttl_ms: u64) -> BackupOp {
    BackupOp::Reserve {
        spaces: spaces.iter().map(|(s, b)| (id(*s), *b)).collect(),
        ttl_ms,
    }
}

fn reserved_ids(outcome: BackupOutcome) -> Vec<u64> {
    match outcome {
        BackupOutcome::Reserved(ids) => ids.into_iter().map(|(_, r)| r).collect(),
        other => panic!("{other:?}"),
    }
}

fn record(owner: &str, sid: &str) -> BackupOp {
    BackupOp::Record {
        snapshot: SnapshotRecord {
            id: sid.into(),
            owner: owner.into(),
            time_ms: 1,
            files: 1,
            bytes: 1,
            manifest: vec![ChunkId([1; 32])],
            sealed_paths: vec![],
        },
    }
}

#[test]
fn a_reservation_is_granted_only_within_capacity_all_or_none() {
    let mut l = BackupLedger::default();
    l.apply(id(1), "s1", 0, &offer(100, 10)).unwrap();
    l.apply(id(2), "s2", 0, &offer(50, 0)).unwrap();
    let err = l
        .apply(id(9), "o", 0, &reserve(&[(1, 80), (2, 51)], 1000))
        .unwrap_err();
    assert_eq!(err.code(), "no_space");
    assert_eq!(l.spaces()[&id(1)].reserved, 0, "all or none");
    l.apply(id(9), "o", 0, &reserve(&[(1, 90), (2, 50)], 1000))
        .unwrap();
    assert_eq!(
        l.apply(id(9), "o", 0, &reserve(&[(1, 1)], 1000))
            .unwrap_err()
            .code(),
        "no_space"
    );
    assert_eq!(
        l.apply(id(9), "o", 0, &reserve(&[(3, 1)], 1000))
            .unwrap_err()
            .code(),
        "unknown_space"
    );
    l.check().unwrap();
}

#[test]
fn an_upload_consumes_its_reservation_and_an_unused_one_expires() {
    let mut l = BackupLedger::default();
    l.apply(id(1), "s1", 0, &offer(100, 0)).unwrap();
    let r = reserved_ids(
        l.apply(id(9), "o", 1_000, &reserve(&[(1, 60)], 500))
            .unwrap(),
    );
    // Only the space it is on consumes it, and with no more bytes than reserved.
    assert!(l
        .apply(
            id(2),
            "s2",
            1_100,
            &BackupOp::Consume {
                reservation: r[0],
                bytes: 10
            }
        )
        .is_err());
    assert!(l
        .apply(
            id(1),
            "s1",
            1_100,
            &BackupOp::Consume {
                reservation: r[0],
                bytes: 61
            }
        )
        .is_err());
    l.apply(
        id(1),
        "s1",
        1_200,
        &BackupOp::Consume {
            reservation: r[0],
            bytes: 55,
        },
    )
    .unwrap();
    assert_eq!(
        l.spaces()[&id(1)],
        SpaceRecord {
            capacity: 100,
            stored: 55,
            reserved: 0
        }
    );

    // A reservation without upload: its bytes return at expiry, and it cannot be consumed then.
    let r = reserved_ids(
        l.apply(id(9), "o", 2_000, &reserve(&[(1, 45)], 500))
            .unwrap(),
    );
    assert_eq!(l.spaces()[&id(1)].reserved, 45);
    let late = BackupOp::Consume {
        reservation: r[0],
        bytes: 45,
    };
    assert_eq!(
        l.apply(id(1), "s1", 2_500, &late).unwrap_err().code(),
        "unknown_reservation"
    );
    // The rejected consume changed nothing, the next accepted command expires it.
    assert_eq!(l.spaces()[&id(1)].reserved, 45);
    l.apply(id(1), "s1", 2_500, &offer(100, 55)).unwrap();
    assert_eq!(l.spaces()[&id(1)].reserved, 0);
    l.check().unwrap();
}

#[test]
fn the_clock_never_runs_backwards_and_a_space_cannot_shrink_under_its_use() {
    let mut l = BackupLedger::default();
    l.apply(id(1), "s1", 5_000, &offer(100, 0)).unwrap();
    l.apply(id(9), "o", 5_000, &reserve(&[(1, 50)], 1_000))
        .unwrap();
    // A CP member with a slow clock does not revive anything or expire early.
    l.apply(id(1), "s1", 1_000, &offer(100, 0)).unwrap();
    assert_eq!(l.spaces()[&id(1)].reserved, 50);
    let err = l.apply(id(1), "s1", 5_500, &offer(60, 20)).unwrap_err();
    assert_eq!(err.code(), "invalid");
    l.apply(id(1), "s1", 5_500, &offer(70, 20)).unwrap();
    l.check().unwrap();
}

#[test]
fn a_failed_space_releases_its_reservations() {
    let mut l = BackupLedger::default();
    l.apply(id(1), "s1", 0, &offer(100, 0)).unwrap();
    l.apply(id(9), "o", 0, &reserve(&[(1, 50)], 1_000)).unwrap();
    l.release_space(id(1));
    assert_eq!(l.spaces()[&id(1)].reserved, 0);
    assert!(l.state().reservations.is_empty());
}

#[test]
fn snapshots_are_recorded_per_owner_and_forgotten_by_id() {
    let mut l = BackupLedger::default();
    l.apply(id(9), "o", 0, &record("o", "00000000000000aa"))
        .unwrap();
    assert_eq!(
        l.apply(id(9), "o", 0, &record("o", "00000000000000aa"))
            .unwrap_err()
            .code(),
        "invalid"
    );
    assert_eq!(
        l.apply(id(9), "o", 0, &record("p", "00000000000000bb"))
            .unwrap_err()
            .code(),
        "invalid",
        "an owner records only its own"
    );
    assert_eq!(
        l.apply(id(9), "o", 0, &record("o", "XYZ"))
            .unwrap_err()
            .code(),
        "invalid"
    );
    let forget = BackupOp::Forget {
        id: "00000000000000aa".into(),
    };
    assert_eq!(
        l.apply(id(8), "p", 0, &forget).unwrap_err().code(),
        "unknown_snapshot"
    );
    l.apply(id(9), "o", 0, &forget).unwrap();
    assert!(l.state().snapshots.is_empty());
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    Offer {
        space: u64,
        capacity: u64,
        stored: u64,
    },
    Reserve {
        owner: u64,
        spaces: Vec<(u64, u64)>,
        ttl: u64,
    },
    Upload {
        pick: usize,
        fraction: u64,
    },
    Tick {
        ms: u64,
    },
    Fail {
        space: u64,
    },
    Record {
        owner: u64,
        n: u8,
    },
    Forget {
        owner: u64,
        n: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..=4, 0u64..2_000, 0u64..1_500).prop_map(|(space, capacity, stored)| Step::Offer {
            space,
            capacity,
            stored
        }),
        (
            11u64..=20,
            proptest::collection::vec((1u64..=4, 1u64..400), 1..4),
            1u64..3_000
        )
            .prop_map(|(owner, spaces, ttl)| Step::Reserve { owner, spaces, ttl }),
        (0usize..16, 0u64..=100).prop_map(|(pick, fraction)| Step::Upload { pick, fraction }),
        (0u64..2_000).prop_map(|ms| Step::Tick { ms }),
        (1u64..=4).prop_map(|space| Step::Fail { space }),
        (11u64..=20, 0u8..4).prop_map(|(owner, n)| Step::Record { owner, n }),
        (11u64..=20, 0u8..4).prop_map(|(owner, n)| Step::Forget { owner, n }),
    ]
}

proptest! {
    /// Random interleavings of reserve, upload, expiry, forget and space failure from 10 owners
    /// keep `reserved + stored <= capacity` (and reserved = the live reservations) at every
    /// index.
    #[test]
    fn the_quota_holds_at_every_index(steps in proptest::collection::vec(step(), 1..120)) {
        let mut l = BackupLedger::default();
        let mut now = 0u64;
        for step in steps {
            let before = l.clone();
            let result = match step {
                Step::Offer { space, capacity, stored } => l
                    .apply(id(space), &format!("s{space}"), now, &offer(capacity, stored))
                    .map(|_| ()),
                Step::Reserve { owner, spaces, ttl } => l
                    .apply(id(owner), &format!("o{owner}"), now, &reserve(&spaces, ttl))
                    .map(|_| ()),
                Step::Upload { pick, fraction } => {
                    let live = l.state().reservations;
                    match live.get(pick % live.len().max(1)) {
                        Some((rid, r)) => l
                            .apply(
                                r.space,
                                "space",
                                now,
                                &BackupOp::Consume {
                                    reservation: *rid,
                                    bytes: r.bytes * fraction / 100,
                                },
                            )
                            .map(|_| ()),
                        None => Ok(()),
                    }
                }
                Step::Tick { ms } => {
                    now += ms;
                    Ok(())
                }
                Step::Fail { space } => {
                    l.release_space(id(space));
                    Ok(())
                }
                Step::Record { owner, n } => l
                    .apply(id(owner), &format!("o{owner}"), now, &record(&format!("o{owner}"), &format!("{:016x}", n)))
                    .map(|_| ()),
                Step::Forget { owner, n } => l
                    .apply(id(owner), &format!("o{owner}"), now, &BackupOp::Forget { id: format!("{:016x}", n) })
                    .map(|_| ()),
            };
            if result.is_err() {
                prop_assert_eq!(&l, &before, "a rejected op changed the ledger");
            }
            prop_assert!(l.check().is_ok(), "{:?}", l.check());
        }
    }
}
