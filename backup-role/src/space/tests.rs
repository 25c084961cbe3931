use std::sync::Mutex;

use hivemind_common::backup::{BackupOutcome, BackupState};
use hivemind_common::role::{BoxFuture, Claim, KeygroupInfo, RoleReport};

use super::*;

/// A control plane that grants or refuses every consume, and remembers what it was asked.
#[derive(Default)]
struct Ledger {
    refuse: bool,
    asked: Mutex<Vec<BackupOp>>,
}

fn unused<T>() -> BoxFuture<Result<T, CpCallError>> {
    unreachable!("a space asks the control plane only about its ledger")
}

impl ControlPlaneClient for Ledger {
    fn keygroup(&self, _: String) -> BoxFuture<Result<Option<KeygroupInfo>, CpCallError>> {
        unused()
    }
    fn join_keygroup(&self, _: String) -> BoxFuture<Result<KeygroupInfo, CpCallError>> {
        unused()
    }
    fn claim(&self, _: String) -> BoxFuture<Result<Claim, CpCallError>> {
        unused()
    }
    fn report(&self, _: RoleReport) -> BoxFuture<Result<u64, CpCallError>> {
        unused()
    }
    fn backup(&self, op: BackupOp) -> BoxFuture<Result<BackupOutcome, CpCallError>> {
        self.asked.lock().unwrap().push(op);
        let refuse = self.refuse;
        Box::pin(async move {
            if refuse {
                Err(CpCallError {
                    code: "unknown_reservation".into(),
                    message: "expired".into(),
                })
            } else {
                Ok(BackupOutcome::Consumed)
            }
        })
    }
    fn backup_state(&self) -> BoxFuture<Result<BackupState, CpCallError>> {
        unused()
    }
}

fn c(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

#[tokio::test]
async fn an_upload_is_written_only_after_its_reservation_is_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let space = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 1_000, 60_000).unwrap());
    let refusing = Ledger {
        refuse: true,
        ..Default::default()
    };
    let err = space
        .upload(&refusing, "laptop", 7, vec![(c(1), vec![1; 100])])
        .await
        .unwrap_err();
    assert!(matches!(err, SpaceError::Refused(_)), "{err}");
    assert_eq!(space.stored(), 0);
    assert!(space.list("laptop").unwrap().is_empty());

    let granting = Ledger::default();
    let stored = space
        .upload(
            &granting,
            "laptop",
            8,
            vec![(c(1), vec![1; 100]), (c(2), vec![2; 50])],
        )
        .await
        .unwrap();
    assert_eq!(stored, 150);
    // Only the bytes not held yet are consumed and counted.
    let again = space
        .upload(
            &granting,
            "laptop",
            9,
            vec![(c(2), vec![2; 50]), (c(3), vec![3; 10])],
        )
        .await
        .unwrap();
    assert_eq!(again, 10);
    assert_eq!(
        granting.asked.lock().unwrap()[1],
        BackupOp::Consume {
            reservation: 9,
            bytes: 10
        }
    );
    // More than the space holds: refused before the ledger is asked.
    let full = space
        .upload(&granting, "laptop", 10, vec![(c(4), vec![4; 900])])
        .await
        .unwrap_err();
    assert!(
        matches!(
            full,
            SpaceError::Full {
                needed: 900,
                free: 840
            }
        ),
        "{full}"
    );
    assert_eq!(granting.asked.lock().unwrap().len(), 2);
    assert_eq!(space.read("laptop", c(2)).await.unwrap(), vec![2; 50]);
    assert!(matches!(
        space.read("laptop", c(9)).await,
        Err(SpaceError::NoChunk(_))
    ));
    assert!(matches!(space.list("../etc"), Err(SpaceError::BadOwner(_))));
}

#[tokio::test]
async fn a_restarted_space_keeps_its_chunks_leases_and_drops_what_the_disk_lost() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    {
        let space = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 1_000, 60_000).unwrap());
        space
            .upload(
                &ledger,
                "laptop",
                1,
                vec![(c(1), vec![1; 10]), (c(2), vec![2; 20])],
            )
            .await
            .unwrap();
        // The owner's heartbeat drops nothing it lists, names what is missing.
        let beat = space
            .heartbeat("laptop", vec![c(1), c(2), c(3)])
            .await
            .unwrap();
        assert_eq!(beat.missing, [c(3)]);
    }
    // A chunk file lost behind the space's back (a disk error): no longer held after a restart.
    std::fs::remove_file(dir.path().join("chunks/laptop").join(c(2).hex())).unwrap();
    let space = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 1_000, 60_000).unwrap());
    assert_eq!(space.list("laptop").unwrap(), [c(1)]);
    assert_eq!(space.stored(), 10);
    // A heartbeat that no longer lists a chunk drops it from the disk too.
    let beat = space.heartbeat("laptop", vec![]).await.unwrap();
    assert_eq!(beat.dropped, [c(1)]);
    assert!(!dir.path().join("chunks/laptop").join(c(1).hex()).exists());
    assert_eq!(space.stored(), 0);
}

#[tokio::test]
async fn a_lost_leases_file_gives_the_chunks_on_disk_a_fresh_lease() {
    let dir = tempfile::tempdir().unwrap();
    {
        let space = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 1_000, 1).unwrap());
        space
            .upload(&Ledger::default(), "laptop", 1, vec![(c(1), vec![1; 10])])
            .await
            .unwrap();
    }
    std::fs::remove_file(dir.path().join("leases.bin")).unwrap();
    let space = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 1_000, 60_000).unwrap());
    assert_eq!(space.expire().await.unwrap(), 0, "kept for a fresh lease");
    assert_eq!(space.list("laptop").unwrap(), [c(1)]);
}

#[test]
fn concurrent_persists_all_succeed() {
    // Heartbeats, stores and expiries persist on blocking threads at once; they shared one
    // temporary file, and a rename could find it gone.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 1 << 20, 60_000).unwrap());
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || (0..50).map(|_| store.persist()).collect::<Vec<_>>())
        })
        .collect();
    for writer in writers {
        for outcome in writer.join().unwrap() {
            outcome.expect("a persist failed while another ran");
        }
    }
}
