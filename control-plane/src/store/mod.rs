//! Raft storage on fjall: the log store ([`LogStore`]) and the state machine ([`StateMachine`]).
//!
//! The log lives in a fjall database under `<data-dir>/cp`, the state machine's snapshot in a
//! file beside it (`snapshot.bin`, see `state_machine.rs`). The log is the durable part: an
//! append is acknowledged only after the journal was `fdatasync`ed. The state machine keeps
//! the registry in memory and persists it as snapshots; after a restart openraft re-applies the
//! committed log after the last snapshot, so applying needs no fsync of its own.
//! The leader's own appends are reported to openraft before their fsync so that replication
//! does not wait for it; [`durable`] holds the rules that keep this safe.
//!
//! Why fjall and not sled (DESIGN §2 keeps the engine swappable for this): every sled flush
//! hands the write to sled's IO thread pool, whose `notify_all` wakes all seven of its threads
//! (measured: about 21 context switches and most of a member's CPU per replicated write on a
//! 2-core machine). fjall writes its journal and `fdatasync`s it on the calling thread.

// openraft's storage traits return its `StorageError` (224 bytes); our helpers return the same
// type so that `?` works without conversions.
#![allow(clippy::result_large_err)]

pub mod durable;
mod log_store;
pub mod restart;
mod state_machine;

use openraft::{AnyError, StorageIOError};

pub use log_store::LogStore;
pub use state_machine::{
    decode_snapshot_file, encode_snapshot_file, SharedState, SmData, StateMachine,
};

use crate::types::{NodeId, StorageError};

/// Opens (or creates) the CP's database and returns both halves of the Raft storage, for the
/// member whose node id is `me`.
pub fn open(path: &std::path::Path, me: NodeId) -> Result<(LogStore, StateMachine), StorageError> {
    if path.join("conf").is_file() && path.join("db").is_file() {
        let message = format!(
            "{} holds a sled store written by an older hivemind: remove it and start the member \
             again (it catches up from the leader)",
            path.display()
        );
        return Err(read_err(&std::io::Error::other(message)));
    }
    let db = fjall::Database::builder(path)
        // Durability is ours to decide: one persist per follower append or per group commit.
        .manual_journal_persist(true)
        // The registry is small: bound memory and the journal's disk use well below fjall's
        // defaults (64 MiB memtables, 512 MiB of journal).
        .cache_size(16 << 20)
        .max_journaling_size(64 << 20)
        .open()
        .map_err(|e| read_err(&e))?;
    let log = LogStore::new(&db, me)?;
    let sm = StateMachine::new(path, &db, log.durable())?;
    Ok((log, sm))
}

fn read_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    StorageIOError::read(AnyError::new(e)).into()
}

/// Keyspace settings: memtables of at most 8 MiB (written out to tables beyond that).
fn keyspace_options() -> fjall::KeyspaceCreateOptions {
    fjall::KeyspaceCreateOptions::default().max_memtable_size(8 << 20)
}

fn write_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    StorageIOError::write(AnyError::new(e)).into()
}

/// Makes everything written so far durable (the journal, `fdatasync`).
fn persist(db: &fjall::Database) -> Result<(), fjall::Error> {
    db.persist(fjall::PersistMode::SyncData)
}

#[cfg(test)]
mod tests;
