//! openraft's storage conformance suite against the fjall store, restart durability, and the
//! refusal of a data dir an older version wrote with sled.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, RaftLogReader};

use super::{LogStore, StateMachine};
use crate::types::{LogId, StorageError, TypeConfig, Vote};

struct FjallBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FjallBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = super::open(&dir.path().join("cp"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn fjall_store_passes_the_openraft_suite() {
    Suite::test_all(FjallBuilder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

#[tokio::test]
async fn votes_entries_and_purges_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    {
        let (mut log, _sm) = super::open(&path).unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        let entries: Vec<_> = (1..=20)
            .map(|i| crate::types::Entry {
                log_id: log_id(3, i),
                payload: openraft::EntryPayload::Blank,
            })
            .collect();
        log.blocking_append(entries).await.unwrap();
        log.purge(log_id(3, 5)).await.unwrap();
        log.truncate(log_id(3, 18)).await.unwrap();
    }
    let (mut log, _sm) = super::open(&path).unwrap();
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
    let Err(error) = super::open(&path) else {
        panic!("a sled data dir was opened");
    };
    assert!(error.to_string().contains("older hivemind"), "{error}");
}
