use std::path::{Path, PathBuf};

use super::*;

use crate::test_support::Ledger;

fn c(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

/// The pack files of `owner` under the space's directory.
fn pack_files(dir: &Path, owner: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("packs").join(owner))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test]
async fn an_upload_is_written_as_one_pack_only_after_its_reservation_is_consumed() {
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
    assert!(pack_files(dir.path(), "laptop").is_empty());

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
    let files = pack_files(dir.path(), "laptop");
    assert_eq!(files.len(), 1, "one pack for the upload");
    assert_eq!(stored, std::fs::metadata(&files[0]).unwrap().len());
    assert!(stored <= crate::pack::upper_bound(2, 150));
    assert_eq!(space.stored(), stored);
    // Only the chunks not held yet are packed, consumed and counted.
    let again = space
        .upload(
            &granting,
            "laptop",
            9,
            vec![(c(2), vec![2; 50]), (c(3), vec![3; 10])],
        )
        .await
        .unwrap();
    assert!(again < 150, "{again}");
    assert_eq!(
        granting.asked.lock().unwrap()[1],
        BackupOp::Consume {
            reservation: 9,
            bytes: again
        }
    );
    // More than the space holds: refused before the ledger is asked.
    let full = space
        .upload(&granting, "laptop", 10, vec![(c(4), vec![4; 900])])
        .await
        .unwrap_err();
    assert!(matches!(full, SpaceError::Full { .. }), "{full}");
    assert_eq!(granting.asked.lock().unwrap().len(), 2);
    assert_eq!(space.read("laptop", c(2)).await.unwrap(), vec![2; 50]);
    let many = space
        .read_many("laptop", vec![c(3), c(9), c(1)])
        .await
        .unwrap();
    let mut many = many;
    many.sort();
    assert_eq!(many, [(c(1), vec![1; 100]), (c(3), vec![3; 10])]);
    assert!(matches!(
        space.read("laptop", c(9)).await,
        Err(SpaceError::NoChunk(_))
    ));
    assert!(matches!(space.list("../etc"), Err(SpaceError::BadOwner(_))));
}

#[tokio::test]
async fn a_restarted_space_keeps_its_chunks_leases_and_drops_a_torn_pack() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    {
        let space = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 10_000, 60_000).unwrap());
        space
            .upload(&ledger, "laptop", 1, vec![(c(1), vec![1; 10])])
            .await
            .unwrap();
        space
            .upload(&ledger, "laptop", 2, vec![(c(2), vec![2; 20])])
            .await
            .unwrap();
        // The owner's heartbeat drops nothing it lists, names what is missing.
        let beat = space
            .heartbeat("laptop", vec![c(1), c(2), c(3)])
            .await
            .unwrap();
        assert_eq!(beat.missing, [c(3)]);
    }
    // A pack torn behind the space's back (a crash on a disk that lied about fsync): the
    // restarted space does not index it, so never serves it.
    let torn = pack_files(dir.path(), "laptop")
        .into_iter()
        .find(|f| crate::pack::parse(&std::fs::read(f).unwrap()).unwrap()[0].id == c(2))
        .unwrap();
    let bytes = std::fs::read(&torn).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() - 10]).unwrap();
    let space = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 10_000, 60_000).unwrap());
    assert_eq!(space.list("laptop").unwrap(), [c(1)]);
    assert!(matches!(
        space.read("laptop", c(2)).await,
        Err(SpaceError::NoChunk(_))
    ));
    assert!(!torn.exists());
    // A heartbeat that no longer lists a chunk drops it, and its empty pack goes from disk.
    let beat = space.heartbeat("laptop", vec![]).await.unwrap();
    assert_eq!(beat.dropped, [c(1)]);
    assert!(pack_files(dir.path(), "laptop").is_empty());
    assert_eq!(space.stored(), 0);
}

#[tokio::test]
async fn a_damaged_chunk_is_never_served_and_a_mostly_dropped_pack_is_repacked() {
    let dir = tempfile::tempdir().unwrap();
    let space = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 1 << 20, 60_000).unwrap());
    let chunks: Vec<(ChunkId, Vec<u8>)> = (1..=6).map(|n| (c(n), vec![n; 1000])).collect();
    space
        .upload(&Ledger::default(), "laptop", 1, chunks)
        .await
        .unwrap();
    let before = space.stored();
    // Five of six dropped: the pack is rewritten with the one left, which reads back.
    let beat = space.heartbeat("laptop", vec![c(6)]).await.unwrap();
    assert_eq!(beat.dropped.len(), 5);
    assert!(
        space.stored() < before / 3,
        "{} of {before}",
        space.stored()
    );
    assert_eq!(pack_files(dir.path(), "laptop").len(), 1);
    assert_eq!(space.read("laptop", c(6)).await.unwrap(), vec![6; 1000]);
    // A flipped bit in the chunk's bytes: refused by its check, dropped, named missing.
    let file = &pack_files(dir.path(), "laptop")[0];
    let mut bytes = std::fs::read(file).unwrap();
    bytes[100] ^= 1;
    std::fs::write(file, &bytes).unwrap();
    assert!(matches!(
        space.read("laptop", c(6)).await,
        Err(SpaceError::NoChunk(_))
    ));
    assert_eq!(space.damaged.load(std::sync::atomic::Ordering::Relaxed), 1);
    let beat = space.heartbeat("laptop", vec![c(6)]).await.unwrap();
    assert_eq!(beat.missing, [c(6)]);
}

#[tokio::test]
async fn a_space_written_before_packs_moves_its_chunk_files_into_packs() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("chunks/laptop");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join(c(1).hex()), [1; 30]).unwrap();
    std::fs::write(old.join(c(2).hex()), [2; 40]).unwrap();
    let space = Arc::new(SpaceStore::open(dir.path().to_path_buf(), 1 << 20, 60_000).unwrap());
    let mut listed = space.list("laptop").unwrap();
    listed.sort();
    assert_eq!(listed, [c(1), c(2)]);
    assert_eq!(space.read("laptop", c(2)).await.unwrap(), vec![2; 40]);
    assert!(!dir.path().join("chunks").exists());
    assert_eq!(pack_files(dir.path(), "laptop").len(), 1);
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
