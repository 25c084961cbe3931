//! The backup ledger (DESIGN.md §6d): the spaces members offer, the reservations on them and
//! the owners' snapshot records, with the quota rule enforced in apply.
//!
//! **Invariant:** on every space, at every index, `reserved + stored <= capacity`, and
//! `reserved` is the sum of the live reservations on it. A reservation is granted only while
//! the rule holds after it; it is consumed by the upload (its bytes become stored) or released
//! at expiry, or when its space leaves or fails. Time is the ledger's clock: the largest
//! `now_ms` a command carried (the control plane stamps it), so replaying the log gives the same
//! expiries on every replica.

use std::collections::BTreeMap;

use hivemind_common::backup::{
    BackupOp, BackupOutcome, BackupState, Reservation, SnapshotRecord, SpaceRecord,
};
use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};

use super::error::RegistryError;

/// Most spaces one reservation request names.
pub const MAX_RESERVE_SPACES: usize = 64;
/// Longest a reservation may live without its upload.
pub const MAX_RESERVATION_MS: u64 = 24 * 3600 * 1000;
/// Most manifest chunks one snapshot record names.
pub const MAX_MANIFEST_CHUNKS: usize = 4096;
/// Largest sealed path list of one snapshot record.
pub const MAX_SEALED_PATHS: usize = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupLedger {
    /// The largest time a command carried (ms since the Unix epoch).
    clock_ms: u64,
    next_reservation: u64,
    spaces: BTreeMap<MemberId, SpaceRecord>,
    reservations: BTreeMap<u64, Reservation>,
    /// Per owner name, in the order they were recorded.
    snapshots: BTreeMap<String, Vec<SnapshotRecord>>,
}

impl BackupLedger {
    /// Applies `op` asked by `member` (named `name`) at time `now_ms`. Validates completely
    /// first: a rejected op changes nothing, not even the clock.
    pub fn apply(
        &mut self,
        member: MemberId,
        name: &str,
        now_ms: u64,
        op: &BackupOp,
    ) -> Result<BackupOutcome, RegistryError> {
        let clock = self.clock_ms.max(now_ms);
        let expiring: Vec<u64> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires_ms <= clock)
            .map(|(id, _)| *id)
            .collect();
        // What each space's reserved bytes are once the expired reservations are released.
        let reserved_after = |space: MemberId| -> u64 {
            let record = self.spaces.get(&space).map_or(0, |s| s.reserved);
            let expired: u64 = expiring
                .iter()
                .filter_map(|id| self.reservations.get(id))
                .filter(|r| r.space == space)
                .map(|r| r.bytes)
                .sum();
            record - expired
        };
        self.validate(member, name, op, &expiring, reserved_after)?;

        self.clock_ms = clock;
        for id in expiring {
            self.release(id);
        }
        Ok(match op {
            BackupOp::Offer { capacity, stored } => {
                let space = self.spaces.entry(member).or_default();
                space.capacity = *capacity;
                space.stored = *stored;
                BackupOutcome::Offered
            }
            BackupOp::Reserve { spaces, ttl_ms } => {
                let mut granted = Vec::with_capacity(spaces.len());
                for (space, bytes) in spaces {
                    self.next_reservation += 1;
                    let id = self.next_reservation;
                    self.reservations.insert(
                        id,
                        Reservation {
                            owner: member,
                            space: *space,
                            bytes: *bytes,
                            expires_ms: clock + ttl_ms,
                        },
                    );
                    self.spaces.get_mut(space).expect("validated").reserved += bytes;
                    granted.push((*space, id));
                }
                BackupOutcome::Reserved(granted)
            }
            BackupOp::Consume { reservation, bytes } => {
                let r = self.reservations.remove(reservation).expect("validated");
                let space = self.spaces.get_mut(&r.space).expect("a reserved space");
                space.reserved -= r.bytes;
                space.stored += bytes;
                BackupOutcome::Consumed
            }
            BackupOp::Record { snapshot } => {
                self.snapshots
                    .entry(name.to_string())
                    .or_default()
                    .push(snapshot.clone());
                BackupOutcome::Recorded
            }
            BackupOp::Forget { id } => {
                let list = self.snapshots.get_mut(name).expect("validated");
                list.retain(|s| &s.id != id);
                if list.is_empty() {
                    self.snapshots.remove(name);
                }
                BackupOutcome::Forgotten
            }
        })
    }

    fn validate(
        &self,
        member: MemberId,
        name: &str,
        op: &BackupOp,
        expiring: &[u64],
        reserved_after: impl Fn(MemberId) -> u64,
    ) -> Result<(), RegistryError> {
        match op {
            BackupOp::Offer { capacity, stored } => {
                let reserved = reserved_after(member);
                if stored.saturating_add(reserved) > *capacity {
                    return Err(RegistryError::invalid(
                        "capacity",
                        format!(
                            "{capacity} bytes is less than the {stored} stored and {reserved} \
                             reserved"
                        ),
                    ));
                }
            }
            BackupOp::Reserve { spaces, ttl_ms } => {
                if spaces.is_empty() || spaces.len() > MAX_RESERVE_SPACES {
                    return Err(RegistryError::invalid(
                        "spaces",
                        format!("must name 1 to {MAX_RESERVE_SPACES} spaces"),
                    ));
                }
                if *ttl_ms == 0 || *ttl_ms > MAX_RESERVATION_MS {
                    return Err(RegistryError::invalid(
                        "ttl_ms",
                        format!("must be 1 to {MAX_RESERVATION_MS}"),
                    ));
                }
                let mut seen = std::collections::BTreeSet::new();
                for (space, bytes) in spaces {
                    if !seen.insert(*space) {
                        return Err(RegistryError::invalid(
                            "spaces",
                            format!("space {space} appears twice"),
                        ));
                    }
                    if *bytes == 0 {
                        return Err(RegistryError::invalid("bytes", "must be more than 0"));
                    }
                    let record = self
                        .spaces
                        .get(space)
                        .ok_or(RegistryError::UnknownSpace { space: *space })?;
                    let free = record
                        .capacity
                        .saturating_sub(record.stored)
                        .saturating_sub(reserved_after(*space));
                    if *bytes > free {
                        return Err(RegistryError::NoSpace {
                            space: *space,
                            asked: *bytes,
                            free,
                        });
                    }
                }
            }
            BackupOp::Consume { reservation, bytes } => {
                let r = self
                    .reservations
                    .get(reservation)
                    .filter(|_| !expiring.contains(reservation))
                    .ok_or(RegistryError::UnknownReservation { id: *reservation })?;
                if r.space != member {
                    return Err(RegistryError::invalid(
                        "reservation",
                        format!("reservation {reservation} is on another space"),
                    ));
                }
                if *bytes > r.bytes {
                    return Err(RegistryError::invalid(
                        "bytes",
                        format!("{bytes} is more than the {} reserved", r.bytes),
                    ));
                }
            }
            BackupOp::Record { snapshot } => {
                let valid_id = snapshot.id.len() == 16
                    && snapshot
                        .id
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !valid_id {
                    return Err(RegistryError::invalid(
                        "id",
                        "must be 16 lowercase hex digits",
                    ));
                }
                if snapshot.owner != name {
                    return Err(RegistryError::invalid(
                        "owner",
                        format!("{:?} is not the asking member {name:?}", snapshot.owner),
                    ));
                }
                if snapshot.manifest.is_empty() || snapshot.manifest.len() > MAX_MANIFEST_CHUNKS {
                    return Err(RegistryError::invalid(
                        "manifest",
                        format!("must name 1 to {MAX_MANIFEST_CHUNKS} chunks"),
                    ));
                }
                if snapshot.sealed_paths.len() > MAX_SEALED_PATHS {
                    return Err(RegistryError::invalid(
                        "sealed_paths",
                        format!("more than {MAX_SEALED_PATHS} bytes"),
                    ));
                }
                if self.snapshot(name, &snapshot.id).is_some() {
                    return Err(RegistryError::invalid(
                        "id",
                        format!("snapshot {} exists", snapshot.id),
                    ));
                }
            }
            BackupOp::Forget { id } => {
                if self.snapshot(name, id).is_none() {
                    return Err(RegistryError::UnknownSnapshot {
                        owner: name.to_string(),
                        id: id.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    fn release(&mut self, id: u64) {
        if let Some(r) = self.reservations.remove(&id) {
            if let Some(space) = self.spaces.get_mut(&r.space) {
                space.reserved -= r.bytes;
            }
        }
    }

    /// A space that left or failed: its reservations can no longer be consumed.
    pub(crate) fn release_space(&mut self, space: MemberId) {
        let ids: Vec<u64> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.space == space)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.release(id);
        }
    }

    pub fn snapshot(&self, owner: &str, id: &str) -> Option<&SnapshotRecord> {
        self.snapshots.get(owner)?.iter().find(|s| s.id == id)
    }

    pub fn spaces(&self) -> &BTreeMap<MemberId, SpaceRecord> {
        &self.spaces
    }

    /// The ledger as roles read it.
    pub fn state(&self) -> BackupState {
        BackupState {
            spaces: self.spaces.iter().map(|(k, v)| (*k, v.clone())).collect(),
            snapshots: self.snapshots.values().flatten().cloned().collect(),
            reservations: self
                .reservations
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        }
    }

    /// Checks the invariant (for tests): every space's reserved bytes are its live
    /// reservations' and `reserved + stored <= capacity`.
    pub fn check(&self) -> Result<(), String> {
        for (id, space) in &self.spaces {
            let live: u64 = self
                .reservations
                .values()
                .filter(|r| r.space == *id)
                .map(|r| r.bytes)
                .sum();
            if live != space.reserved {
                return Err(format!("space {id}: reserved {} != {live}", space.reserved));
            }
            if space.reserved + space.stored > space.capacity {
                return Err(format!("space {id}: over capacity: {space:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "backup/tests.rs"]
mod tests;
