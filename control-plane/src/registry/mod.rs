//! The registry: the control plane's replicated state and the deterministic rules that change it.
//!
//! [`Registry::apply`] is the only way state changes. It validates a [`Command`] completely
//! before touching anything, so a rejected command changes nothing and returns a typed
//! [`RegistryError`]; an accepted one may append [`Event`]s stamped with the log index.
//! No IO, no clocks, no randomness: every replica computes the same result from the same log.

mod acl;
mod backup;
mod command;
mod error;
mod event;
mod keygroup_rules;
mod keygroups;
mod kv;
mod member;
mod rules;
mod state;

pub use acl::{AclOp, AclTable, Policy, Token, ANONYMOUS};
pub use backup::BackupLedger;
pub use command::{Command, CommandOutput};
pub use error::RegistryError;
pub use event::{Event, EventKind};
pub use keygroups::{
    new_secret, validate_keygroup_name, Actor, KeygroupConfig, KeygroupDelta, Responsibility,
    DEFAULT_TTL_SECS, MAX_TTL_SECS, SECRET_BYTES,
};
pub use kv::{
    ChangeKind, Compacted, Compare, Kv, KvChange, KvEntry, Lease, Txn, TxnOp, TxnResult,
    MAX_KEY_BYTES, MAX_LEASE_TTL_MS, MAX_TXN_OPS, MAX_VALUE_BYTES, MIN_LEASE_TTL_MS,
};
pub use member::{MemberInfo, MemberState};
pub use state::{
    FeedError, FeedPage, MemberRecord, NodeConfig, Registry, RegistryDigest, MAX_BATCH,
    MAX_BATCH_BYTES,
};
