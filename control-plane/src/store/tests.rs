//! openraft's storage conformance suite against the fjall store, restart durability, and the
//! refusal of a data dir an older version wrote with sled.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, RaftLogReader};

use super::{LogStore, StateMachine};
use crate::types::{LogId, StorageError, TypeConfig, Vote};

struct FjallBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FjallBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = super::open(&dir.path().join("cp"), 1)?;
        // The suite applies entries to the state machine that were never appended to the log;
        // in a member the state machine applies only what the log holds on disk (tested below).
        log.durable()
            .advance(LogId::new(CommittedLeaderId::new(0, 0), u64::MAX));
        Ok((dir, log, sm))
    }
}

#[test]
fn fjall_store_passes_the_openraft_suite() {
    Suite::test_all(FjallBuilder).unwrap();
}

/// Regression (issue 16): a leader killed with every other member must not resume its term
/// after the restart. openraft resumes leadership when the vote it starts from is committed and
/// names the member, and a resumed leader's read index is the commit index saved on disk, which
/// lags the writes it had acknowledged. The state openraft starts from must not be a leader's.
#[tokio::test]
async fn a_leader_restarts_as_a_follower_of_its_old_term() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    {
        let (mut log, _sm) = super::open(&path, 1).unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        log.blocking_append(entries(3, 1, 0..=10)).await.unwrap();
        // The commit of the last entries was learned but never recorded before the kill.
        log.save_committed(Some(log_id(3, 4))).await.unwrap();
    }
    let (mut log, mut sm) = super::open(&path, 1).unwrap();
    let state = openraft::storage::StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(
        state.vote_ref(),
        &Vote::new(3, 1),
        "term and candidate kept"
    );
    assert!(
        !state.vote_ref().is_committed(),
        "a restarted leader must win a new election before it serves a read index"
    );
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

#[tokio::test]
async fn votes_entries_and_purges_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    {
        let (mut log, _sm) = super::open(&path, 1).unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        log.blocking_append(entries(3, 1, 1..=20)).await.unwrap();
        log.purge(log_id(3, 5)).await.unwrap();
        log.truncate(log_id(3, 18)).await.unwrap();
    }
    let (mut log, _sm) = super::open(&path, 1).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 5)));
    assert_eq!(state.last_log_id, Some(log_id(3, 17)));
    let indexes: Vec<u64> = log
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(indexes, (6..=17).collect::<Vec<_>>());
}

#[test]
fn a_data_dir_written_by_sled_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("conf"), b"segment_size: 524288").unwrap();
    std::fs::write(path.join("db"), b"").unwrap();
    let Err(error) = super::open(&path, 1) else {
        panic!("a sled data dir was opened");
    };
    assert!(error.to_string().contains("older hivemind"), "{error}");
}

/// Fails with `otherwise` if `task` finishes within 200 ms (it should be held back).
async fn assert_still_waiting<T>(task: &mut tokio::task::JoinHandle<T>, otherwise: &str) {
    let finished = tokio::time::timeout(std::time::Duration::from_millis(200), task).await;
    assert!(finished.is_err(), "{otherwise}");
}

fn entries(
    term: u64,
    leader: u64,
    indexes: std::ops::RangeInclusive<u64>,
) -> Vec<crate::types::Entry> {
    indexes
        .map(|i| crate::types::Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, leader), i),
            payload: openraft::EntryPayload::Blank,
        })
        .collect()
}

/// A single-threaded member hands a follower's append to the flusher thread.
#[test]
fn a_followers_append_on_one_thread_is_reported_only_once_durable() {
    followers_append_is_reported_only_once_durable(tokio::runtime::Builder::new_current_thread());
}

/// A multi-threaded member persists it on the appending worker (`block_in_place`).
#[test]
fn a_followers_append_on_many_threads_is_reported_only_once_durable() {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(2);
    followers_append_is_reported_only_once_durable(runtime);
}

/// The disk is held back (the persist gate) while a follower's append runs on a runtime of its
/// own, in another thread: the append is not reported until the gate opens.
fn followers_append_is_reported_only_once_durable(mut runtime: tokio::runtime::Builder) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = super::open(&dir.path().join("cp"), 2).unwrap();
    let runtime = runtime.enable_all().build().unwrap();
    runtime
        .block_on(log.save_vote(&Vote::new_committed(3, 1)))
        .unwrap();
    let gate = log.flush_gate.clone();
    let held = gate.hold();
    let appending = std::thread::spawn({
        let mut log = log.clone();
        move || runtime.block_on(log.blocking_append(entries(3, 1, 1..=5)))
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !appending.is_finished(),
        "a follower's append was reported before its fsync"
    );
    assert_eq!(log.durable().last(), None);
    drop(held);
    appending.join().unwrap().unwrap();
    assert_eq!(log.durable().last().map(|l| l.index), Some(5));
}

#[tokio::test]
async fn nothing_is_applied_after_the_log_failed_to_become_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = super::open(&dir.path().join("cp"), 1).unwrap();
    log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
    log.blocking_append(entries(3, 1, 1..=2)).await.unwrap();
    sm.apply(entries(3, 1, 1..=2)).await.unwrap();
    log.durable().fail("disk full".into());
    let error = sm.apply(entries(3, 1, 3..=3)).await.unwrap_err();
    assert!(error.to_string().contains("disk full"), "{error}");
    let error = log.blocking_append(entries(3, 1, 3..=3)).await.unwrap_err();
    assert!(error.to_string().contains("disk full"), "{error}");
}

#[tokio::test]
async fn what_was_recovered_is_durable_and_a_truncation_moves_the_end_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    {
        let (mut log, _sm) = super::open(&path, 2).unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        log.blocking_append(entries(3, 1, 1..=9)).await.unwrap();
    }
    let (mut log, _sm) = super::open(&path, 2).unwrap();
    assert_eq!(log.durable().last().map(|l| l.index), Some(9));
    log.truncate(log_id(3, 7)).await.unwrap();
    assert_eq!(log.durable().last().map(|l| l.index), Some(6));
    log.blocking_append(entries(4, 1, 7..=7)).await.unwrap();
    assert_eq!(
        log.durable().last(),
        Some(LogId::new(CommittedLeaderId::new(4, 1), 7))
    );
}

#[tokio::test]
// The gate is held across awaits on purpose: it holds back the flusher thread, not a task.
#[allow(clippy::await_holding_lock)]
async fn the_leader_replicates_before_its_fsync_but_applies_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = super::open(&dir.path().join("cp"), 1).unwrap();
    log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
    log.blocking_append(entries(3, 1, 1..=1)).await.unwrap();
    sm.apply(entries(3, 1, 1..=1)).await.unwrap();

    // The disk is slow: the flusher cannot persist.
    let gate = log.flush_gate.clone();
    let held = gate.hold();
    // The leader's own append is reported at once (openraft goes on to replicate it)...
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        log.blocking_append(entries(3, 1, 2..=3)),
    )
    .await
    .expect("the leader's own append waited for the disk")
    .unwrap();
    // ...and readable for replication, but not durable.
    assert_eq!(log.try_get_log_entries(2..=3).await.unwrap().len(), 2);
    assert_eq!(log.durable().last().map(|l| l.index), Some(1));
    // Say a follower's acknowledgement committed it: it is not applied before the fsync, and
    // followers are told of no commit beyond the durable end.
    let mut applying = tokio::spawn({
        let mut sm = sm.clone();
        async move { sm.apply(entries(3, 1, 2..=3)).await }
    });
    assert_still_waiting(&mut applying, "applied before the leader's fsync").await;
    assert_eq!(
        log.durable().clamp_commit(Some(log_id(3, 3))),
        Some(log_id(3, 1))
    );

    drop(held);
    applying.await.unwrap().unwrap();
    assert_eq!(log.durable().last().map(|l| l.index), Some(3));
    assert_eq!(
        log.durable().clamp_commit(Some(log_id(3, 3))),
        Some(log_id(3, 3))
    );
    assert!(log.durable().take_released());
}

/// Polls `condition` every 10 ms until it holds; fails after 10 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(0..1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[tokio::test]
// The gate is held across awaits on purpose: it holds back the purger thread, not a task.
#[allow(clippy::await_holding_lock)]
async fn a_purge_hides_entries_at_once_and_the_purger_removes_them_later() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = super::open(&dir.path().join("cp"), 2).unwrap();
    log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
    log.blocking_append(entries(3, 1, 1..=10)).await.unwrap();

    let gate = log.purge_gate.clone();
    let held = gate.hold();
    log.purge(log_id(3, 6)).await.unwrap();
    // Gone for every reader before anything is removed from disk.
    assert_eq!(indexes(&mut log).await, (7..=10).collect::<Vec<_>>());
    assert_eq!(log.stored_indexes(), (1..=10).collect::<Vec<_>>());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 6)));
    assert_eq!(state.last_log_id, Some(log_id(3, 10)));
    // Purging everything: the log's end is the purge point, though the entries are still there.
    log.purge(log_id(3, 10)).await.unwrap();
    assert!(indexes(&mut log).await.is_empty());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(3, 10)));

    drop(held);
    eventually("the purger removed the entries", || {
        log.stored_indexes().is_empty()
    })
    .await;
    log.blocking_append(entries(3, 1, 11..=12)).await.unwrap();
    assert_eq!(indexes(&mut log).await, vec![11, 12]);
}

#[tokio::test]
async fn a_purge_cut_short_by_a_crash_is_finished_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    {
        let (mut log, _sm) = super::open(&path, 2).unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        log.blocking_append(entries(3, 1, 1..=5)).await.unwrap();
        log.record_purge_point_only(log_id(3, 3));
    }
    let (mut log, _sm) = super::open(&path, 2).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 3)));
    assert_eq!(state.last_log_id, Some(log_id(3, 5)));
    assert_eq!(indexes(&mut log).await, vec![4, 5]);
    eventually("the purger removed the leftovers", || {
        log.stored_indexes() == vec![4, 5]
    })
    .await;
}

#[tokio::test]
async fn the_commit_index_is_recorded_with_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    {
        let (mut log, _sm) = super::open(&path, 2).unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        log.blocking_append(entries(3, 1, 1..=3)).await.unwrap();
        log.save_committed(Some(log_id(3, 2))).await.unwrap();
        // Not written yet, but read back as saved.
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(3, 2)));
        log.blocking_append(entries(3, 1, 4..=4)).await.unwrap();
    }
    let (mut log, _sm) = super::open(&path, 2).unwrap();
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(3, 2)));
}

/// Opens a store, applies entries 1..=3 and builds a snapshot of them.
async fn store_with_a_snapshot(path: &std::path::Path) {
    use openraft::RaftSnapshotBuilder;
    let (mut log, mut sm) = super::open(path, 1).unwrap();
    log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
    log.blocking_append(entries(3, 1, 1..=3)).await.unwrap();
    sm.apply(entries(3, 1, 1..=3)).await.unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(3, 3)));
}

#[tokio::test]
async fn a_snapshot_survives_a_reopen_and_a_damaged_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    store_with_a_snapshot(&path).await;
    {
        let (_log, mut sm) = super::open(&path, 1).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(3, 3)));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id(3, 3)));
    }
    let file = path.join("snapshot.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    let (meta, data) = super::decode_snapshot_file(bytes.clone()).expect("the file decodes");
    assert_eq!(meta.last_log_id, Some(log_id(3, 3)));
    assert_eq!(data.last_applied, Some(log_id(3, 3)));
    assert_eq!(
        super::encode_snapshot_file(meta, &data),
        bytes,
        "the fuzz corpus's encoding"
    );
    *bytes.last_mut().unwrap() ^= 0xff;
    assert!(super::decode_snapshot_file(bytes.clone()).is_none());
    std::fs::write(&file, bytes).unwrap();
    let Err(error) = super::open(&path, 1) else {
        panic!("a damaged snapshot was loaded");
    };
    assert!(error.to_string().contains("checksum"), "{error}");
}

#[tokio::test]
async fn a_snapshot_kept_in_fjall_by_an_older_build_moves_to_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    store_with_a_snapshot(&path).await;
    // Put the data dir back the way older builds left it: the snapshot in a keyspace.
    let file = path.join("snapshot.bin");
    let payload = std::fs::read(&file).unwrap().split_off(4);
    std::fs::remove_file(&file).unwrap();
    {
        let db = fjall::Database::builder(&path).open().unwrap();
        let legacy = db
            .keyspace("sm_snapshot", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        legacy.insert(b"current", payload).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    {
        let (_log, mut sm) = super::open(&path, 1).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(3, 3)));
        assert!(file.is_file());
    }
    let db = fjall::Database::builder(&path).open().unwrap();
    assert!(!db.keyspace_exists("sm_snapshot"));
}
