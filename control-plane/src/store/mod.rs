//! Raft storage on sled: the log store ([`LogStore`]) and the state machine ([`StateMachine`]).
//!
//! Both live in one sled database under `<data-dir>/cp`, in separate trees. The log is the
//! durable part: an append is acknowledged only after `flush_async` completed. The state
//! machine keeps the registry in memory and persists it as snapshots; after a restart openraft
//! re-applies the committed log after the last snapshot, so applying needs no fsync of its own.

// openraft's storage traits return its `StorageError` (224 bytes); our helpers return the same
// type so that `?` works without conversions.
#![allow(clippy::result_large_err)]

mod log_store;
mod state_machine;

use openraft::{AnyError, StorageIOError};

pub use log_store::LogStore;
pub use state_machine::{SharedState, StateMachine};

use crate::types::StorageError;

/// Opens (or creates) the CP's sled database and returns both halves of the Raft storage.
pub fn open(path: &std::path::Path) -> Result<(LogStore, StateMachine), StorageError> {
    let db = sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|e| read_err(&e))?;
    let log = LogStore::new(&db)?;
    let sm = StateMachine::new(&db)?;
    Ok((log, sm))
}

fn read_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    StorageIOError::read(AnyError::new(e)).into()
}

fn write_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    StorageIOError::write(AnyError::new(e)).into()
}

#[cfg(test)]
mod tests;
