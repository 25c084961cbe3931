//! The KV namespace (DESIGN.md §6h, sans IO): its entries, the recent changes that watches read,
//! leases and the keys tied to them, and transactions. Every change of an entry goes through
//! [`Kv::set`] or [`Kv::remove`], which record it in the change log, so a watch never misses
//! one: a watcher from before what the log still holds gets `Compacted`, never a gap.
//!
//! Leases are replicated facts (id, TTL, keys); when one expires is the leader's business
//! (`crate::leases`), which proposes `LeaseExpire` and never keeps deadlines in this state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Longest accepted KV key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest accepted KV value, in bytes (the registry is a small namespace, not a blob store).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

use serde::{Deserialize, Serialize};

use super::error::RegistryError;

/// Changes the log keeps at most, and value bytes: past either, the oldest go (etcd's
/// compaction), and a watch from before them answers `Compacted`. The log is part of every Raft
/// snapshot (taken every 5,000 entries by default), which bounds it well below the KV itself.
pub const MAX_CHANGES: usize = 10_000;
pub const MAX_CHANGE_BYTES: usize = 16 * 1024 * 1024;
/// The shortest and longest lease TTL.
pub const MIN_LEASE_TTL_MS: u64 = 1_000;
pub const MAX_LEASE_TTL_MS: u64 = 24 * 3600 * 1000;
/// Most operations (and compares) in one transaction (etcd's `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_index: u64,
    pub modify_index: u64,
    /// The lease the key lives on, if any: it is deleted when the lease ends.
    pub lease: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Put,
    Delete,
}

/// One change of one key, at the log index that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvChange {
    pub index: u64,
    pub kind: ChangeKind,
    pub key: String,
    /// The new value (empty for a delete).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// For a put, the key's create index; for a delete, that of the deleted entry.
    pub create_index: u64,
    pub modify_index: u64,
}

/// A lease: granted at index `id` for `ttl_ms`, carrying `keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ttl_ms: u64,
    pub keys: BTreeSet<String>,
}

/// Why a watch cannot answer from where the watcher stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// Changes after this index are kept: re-list, then watch from there.
    pub first_index: u64,
}

/// The KV namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    entries: BTreeMap<String, KvEntry>,
    /// Recent changes, oldest first.
    changes: VecDeque<KvChange>,
    /// Every change after this index is in `changes`.
    changes_after: u64,
    change_bytes: usize,
    leases: BTreeMap<u64, Lease>,
}

/// A transaction's compare (DESIGN.md §6h).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    Exists {
        key: String,
        exists: bool,
    },
    ModifyIndex {
        key: String,
        index: u64,
    },
    Value {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

/// A transaction's operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        lease: Option<u64>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// What one operation of a transaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    Put { modify_index: u64 },
    Delete { deleted: bool },
    Get { entry: Option<(String, KvEntry)> },
}

impl Compare {
    fn key(&self) -> &str {
        match self {
            Compare::Exists { key, .. }
            | Compare::ModifyIndex { key, .. }
            | Compare::Value { key, .. } => key,
        }
    }
}

impl TxnOp {
    fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }
}

/// Keys are non-empty UTF-8 of at most [`MAX_KEY_BYTES`] without control characters.
pub(super) fn validate_key(key: &str) -> Result<(), RegistryError> {
    if key.is_empty() {
        return Err(RegistryError::invalid("key", "must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(RegistryError::invalid(
            "key",
            format!(
                "{} bytes is more than the limit of {MAX_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(RegistryError::invalid(
            "key",
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn validate_value(value: &[u8]) -> Result<(), RegistryError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(RegistryError::invalid(
            "value",
            format!(
                "{} bytes is more than the limit of {MAX_VALUE_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(())
}

impl Kv {
    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// Keys starting with `prefix`, in order.
    pub fn prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a KvEntry)> + 'a {
        self.entries
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn lease(&self, id: u64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn leases(&self) -> &BTreeMap<u64, Lease> {
        &self.leases
    }

    /// The changes under `prefix` with index above `after`, in index order; `Compacted` when the
    /// log no longer holds every change after `after`.
    pub fn changes_after(&self, prefix: &str, after: u64) -> Result<Vec<&KvChange>, Compacted> {
        if after < self.changes_after {
            return Err(Compacted {
                first_index: self.changes_after,
            });
        }
        let start = self.changes.partition_point(|c| c.index <= after);
        Ok(self
            .changes
            .range(start..)
            .filter(|c| c.key.starts_with(prefix))
            .collect())
    }

    /// The index after which the log holds every change (watches from before it are compacted).
    pub fn first_change_index(&self) -> u64 {
        self.changes_after
    }

    fn record(&mut self, change: KvChange) {
        self.change_bytes += change.value.len() + change.key.len();
        self.changes.push_back(change);
        while self.changes.len() > MAX_CHANGES || self.change_bytes > MAX_CHANGE_BYTES {
            let Some(old) = self.changes.pop_front() else {
                break;
            };
            self.change_bytes -= old.value.len() + old.key.len();
            self.changes_after = old.index;
        }
    }

    /// Writes `key` at `index` (on `lease`, or on none), recording the change.
    fn set(&mut self, index: u64, key: &str, value: &[u8], lease: Option<u64>) -> u64 {
        let previous = self.entries.get(key);
        let create_index = previous.map_or(index, |e| e.create_index);
        if let Some(old) = previous.and_then(|e| e.lease) {
            if Some(old) != lease {
                if let Some(l) = self.leases.get_mut(&old) {
                    l.keys.remove(key);
                }
            }
        }
        if let Some(id) = lease {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key.to_string());
            }
        }
        self.entries.insert(
            key.to_string(),
            KvEntry {
                value: value.to_vec(),
                create_index,
                modify_index: index,
                lease,
            },
        );
        self.record(KvChange {
            index,
            kind: ChangeKind::Put,
            key: key.to_string(),
            value: value.to_vec(),
            create_index,
            modify_index: index,
        });
        index
    }

    /// Deletes `key` at `index`, recording the change; answers whether it existed.
    fn remove(&mut self, index: u64, key: &str) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        if let Some(l) = entry.lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.remove(key);
        }
        self.record(KvChange {
            index,
            kind: ChangeKind::Delete,
            key: key.to_string(),
            value: Vec::new(),
            create_index: entry.create_index,
            modify_index: index,
        });
        true
    }

    fn check_cas(&self, key: &str, cas: Option<u64>) -> Result<(), RegistryError> {
        let Some(expected) = cas else { return Ok(()) };
        let actual = self.entries.get(key).map(|e| e.modify_index);
        let ok = match actual {
            None => expected == 0,
            Some(current) => current == expected,
        };
        if ok {
            Ok(())
        } else {
            Err(RegistryError::CasFailed {
                key: key.to_string(),
                expected,
                actual,
            })
        }
    }

    /// `KvPut`: `cas` `Some(0)` = only if absent, `Some(i)` = only if its modify index is i.
    pub(super) fn put(
        &mut self,
        index: u64,
        key: &str,
        value: &[u8],
        cas: Option<u64>,
    ) -> Result<u64, RegistryError> {
        validate_key(key)?;
        validate_value(value)?;
        self.check_cas(key, cas)?;
        Ok(self.set(index, key, value, None))
    }

    /// `KvDelete`, with the same compare-and-set rule.
    pub(super) fn delete(
        &mut self,
        index: u64,
        key: &str,
        cas: Option<u64>,
    ) -> Result<bool, RegistryError> {
        validate_key(key)?;
        self.check_cas(key, cas)?;
        Ok(self.remove(index, key))
    }

    /// Grants a lease of `ttl_ms`; its id is `index`.
    pub(super) fn grant(&mut self, index: u64, ttl_ms: u64) -> Result<u64, RegistryError> {
        if !(MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&ttl_ms) {
            return Err(RegistryError::invalid("ttl", "must be from 1s to 24h"));
        }
        self.leases.insert(
            index,
            Lease {
                ttl_ms,
                keys: BTreeSet::new(),
            },
        );
        Ok(index)
    }

    /// Ends lease `id` (revoked or expired): its keys are deleted at `index`, in this one
    /// entry. Answers how many keys went.
    pub(super) fn end_lease(&mut self, index: u64, id: u64) -> Result<usize, RegistryError> {
        let lease = self
            .leases
            .remove(&id)
            .ok_or(RegistryError::UnknownLease { id })?;
        let mut gone = 0;
        for key in &lease.keys {
            gone += usize::from(self.remove(index, key));
        }
        Ok(gone)
    }

    /// Runs `txn` at `index`: validated whole first (keys, values, leases, sizes, no key written
    /// twice in a branch), then its compares decide which branch runs, all of it.
    pub(super) fn txn(
        &mut self,
        index: u64,
        txn: &Txn,
    ) -> Result<(bool, Vec<TxnResult>), RegistryError> {
        if txn.compare.len() > MAX_TXN_OPS
            || txn.success.len() > MAX_TXN_OPS
            || txn.failure.len() > MAX_TXN_OPS
        {
            return Err(RegistryError::invalid(
                "txn",
                format!("at most {MAX_TXN_OPS} compares and ops per branch"),
            ));
        }
        for c in &txn.compare {
            validate_key(c.key())?;
        }
        for (branch, ops) in [("success", &txn.success), ("failure", &txn.failure)] {
            let mut written = BTreeSet::new();
            for op in ops {
                validate_key(op.key())?;
                match op {
                    TxnOp::Put { key, value, lease } => {
                        validate_value(value)?;
                        if let Some(id) = lease {
                            if !self.leases.contains_key(id) {
                                return Err(RegistryError::UnknownLease { id: *id });
                            }
                        }
                        if !written.insert(key.as_str()) {
                            return Err(RegistryError::invalid(
                                branch,
                                format!("key {key:?} is written twice"),
                            ));
                        }
                    }
                    TxnOp::Delete { key } => {
                        if !written.insert(key.as_str()) {
                            return Err(RegistryError::invalid(
                                branch,
                                format!("key {key:?} is written twice"),
                            ));
                        }
                    }
                    TxnOp::Get { .. } => {}
                }
            }
        }
        let holds = txn.compare.iter().all(|c| match c {
            Compare::Exists { key, exists } => self.entries.contains_key(key) == *exists,
            Compare::ModifyIndex { key, index } => {
                self.entries.get(key).map_or(0, |e| e.modify_index) == *index
            }
            Compare::Value { key, value } => {
                self.entries.get(key).is_some_and(|e| &e.value == value)
            }
        });
        let ops = if holds { &txn.success } else { &txn.failure };
        let results = ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value, lease } => TxnResult::Put {
                    modify_index: self.set(index, key, value, *lease),
                },
                TxnOp::Delete { key } => TxnResult::Delete {
                    deleted: self.remove(index, key),
                },
                TxnOp::Get { key } => TxnResult::Get {
                    entry: self.entries.get(key).map(|e| (key.clone(), e.clone())),
                },
            })
            .collect();
        Ok((holds, results))
    }
}

#[cfg(test)]
#[path = "kv/tests.rs"]
mod tests;
