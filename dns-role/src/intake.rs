//! The record intake both roles share: the newest record per host, keygroup secrets and
//! versions, where this machine stands per keygroup, and the counters.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;
use std::time::Instant;

use hickory_proto::rr::Name;
use hivemind_common::records;
use hivemind_common::records::HostRecord;
use hivemind_common::records::OpenError;
use hivemind_common::records::SeqBook;
use hivemind_common::role::ControlPlaneClient;
use hivemind_common::role::KeygroupInfo;
use hivemind_common::role::Membership;
use hivemind_common::role::RoleContext;

use crate::server;
use crate::subscriptions;
use crate::subscriptions::Target;
use crate::subscriptions::Via;
use crate::trigger;
use crate::wire;
use crate::zone::Zone;
use crate::Mode;
use crate::RELAY_CAPACITY;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) applied: AtomicU64,
    /// Records that did not open with the keygroup's secret even after re-reading it ([5]).
    pub(crate) refused_sealed: AtomicU64,
    pub(crate) stream_errors: AtomicU64,
    /// Records copied from another dns member when this one started (simple join).
    pub(crate) copied: AtomicU64,
    pub(crate) streams_open: AtomicU64,
    /// Records opened from host streams (whether newer or not): what a new holder's first
    /// subscription delivers (the failover benchmark watches it).
    pub(crate) received_from_hosts: AtomicU64,
    /// Records opened from the holder's intra-node stream.
    pub(crate) received_from_holder: AtomicU64,
    /// Times this machine became responsible for a keygroup (a claim granted, or found held
    /// by this machine when it was not before).
    pub(crate) claims: AtomicU64,
    pub(crate) webhook_delivered: AtomicU64,
    pub(crate) webhook_failures: AtomicU64,
    pub(crate) webhook_dropped: AtomicU64,
}

/// Whether this machine holds a keygroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    Mine,
    HeldBy,
    /// No claim outcome yet (the control plane did not answer).
    Waiting,
}

/// Where this machine stands for one keygroup, for `GET /v1/roles/dns/status`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Position {
    pub(crate) claim: ClaimState,
    /// The claim's fence when this machine holds it.
    pub(crate) fence: Option<u64>,
    /// The holder's name when another machine holds it.
    pub(crate) holder: Option<String>,
    /// Streams held for the keygroup: host streams (holder) or the holder's stream.
    pub(crate) subscriptions: usize,
    /// The keygroup config version this machine holds.
    pub(crate) version: u64,
}

pub(crate) struct Shared {
    pub(crate) mode: Mode,
    pub(crate) origin: Name,
    pub(crate) book: Mutex<SeqBook>,
    pub(crate) keygroups: RwLock<BTreeMap<String, KeygroupInfo>>,
    pub(crate) membership: RwLock<Arc<Membership>>,
    pub(crate) zone: Arc<RwLock<Arc<Zone>>>,
    /// The zone's finished UDP answers, swapped together with it.
    pub(crate) wire: RwLock<Arc<wire::WireAnswers>>,
    pub(crate) serial: AtomicU64,
    pub(crate) counters: Counters,
    /// Keygroups already seeded from a sibling (simple join happens once per keygroup).
    pub(crate) copied_once: Mutex<BTreeSet<String>>,
    pub(crate) queries: Arc<server::QueryCounts>,
    pub(crate) cp: Arc<dyn ControlPlaneClient>,
    pub(crate) cluster_secret: Option<String>,
    pub(crate) http: reqwest::Client,
    /// Every record applied here, for the node's other machines (intra-node streams).
    pub(crate) relay: tokio::sync::broadcast::Sender<HostRecord>,
    pub(crate) positions: RwLock<BTreeMap<String, Position>>,
    /// A stream carried a newer keygroup config version than the one held (seed event [7]):
    /// the reconcile loop re-reads the configs now.
    pub(crate) config_behind: tokio::sync::Notify,
    /// Trigger mode: the record changes, numbered; `change_tx` carries the last index.
    pub(crate) changes: Mutex<trigger::ChangeLog>,
    pub(crate) change_tx: tokio::sync::watch::Sender<u64>,
    /// Per keygroup, the secret a rotation replaced and when.
    pub(crate) previous_secrets: Mutex<BTreeMap<String, (Vec<u8>, Instant)>>,
    /// How long a replaced secret still opens records: twice `--reread-every`, by which time
    /// every publisher re-read the config even if it missed the event.
    pub(crate) rotation_grace: Duration,
}

impl Shared {
    /// Rebuilds the zone from the book and the membership and swaps it in.
    pub(crate) fn rebuild(&self) {
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let keygroups = self.keygroups.read().unwrap_or_else(|p| p.into_inner());
        let ttls: BTreeMap<String, u32> = keygroups
            .values()
            .map(|k| (k.name.clone(), k.ttl_secs))
            .collect();
        drop(keygroups);
        let membership = self
            .membership
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let records: Vec<&HostRecord> = book.records().collect();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) as u32 + 1;
        let zone = Zone::build(&self.origin, &records, &ttls, &membership, serial);
        let answers = wire::WireAnswers::build(&zone);
        // Swap both under the zone's lock, so a UDP answer never mixes two versions.
        let mut current = self.zone.write().unwrap_or_else(|p| p.into_inner());
        *self.wire.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(answers);
        *current = Arc::new(zone);
    }

    pub(crate) fn secret(&self, keygroup: &str) -> Vec<u8> {
        self.keygroups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keygroup)
            .map(|k| k.secret.clone())
            .unwrap_or_default()
    }

    /// Notes the keygroup config version a received record was sealed under (seed event
    /// [7]); answers whether it is newer than the config held, in which case the reconcile
    /// loop re-reads it (B).
    pub(crate) fn heard_version(&self, keygroup: &str, version: u64) -> bool {
        let known = self
            .keygroups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keygroup)
            .map(|k| k.version);
        let behind = subscriptions::config_behind(known, version);
        if behind {
            self.config_behind.notify_one();
        }
        behind
    }

    /// Takes `info` as the keygroup's config. A secret it replaces stays acceptable for the
    /// rotation grace: a publisher may seal with it until it learned the rotation itself.
    pub(crate) fn set_keygroup(&self, info: KeygroupInfo) {
        let mut keygroups = self.keygroups.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = keygroups.get(&info.name) {
            if old.secret != info.secret && !old.secret.is_empty() {
                self.previous_secrets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(info.name.clone(), (old.secret.clone(), Instant::now()));
            }
        }
        keygroups.insert(info.name.clone(), info);
    }

    /// Opens with the secrets held: the current one, then the one it replaced while within
    /// the rotation grace.
    pub(crate) fn open_held(&self, keygroup: &str, sealed: &[u8]) -> Result<HostRecord, OpenError> {
        match records::open(&self.secret(keygroup), sealed) {
            Err(OpenError::Seal) => {
                let previous = self
                    .previous_secrets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(keygroup)
                    .filter(|(_, replaced)| replaced.elapsed() <= self.rotation_grace)
                    .map(|(secret, _)| secret.clone());
                match previous {
                    Some(secret) => records::open(&secret, sealed),
                    None => Err(OpenError::Seal),
                }
            }
            other => other,
        }
    }

    /// Opens a frame; on a seal failure re-reads the keygroup's config once (the secret may
    /// have been rotated: seed event [5]) and retries.
    pub(crate) async fn open(
        &self,
        keygroup: &str,
        sealed: &[u8],
    ) -> Result<HostRecord, OpenError> {
        match self.open_held(keygroup, sealed) {
            Err(OpenError::Seal) => {
                if let Ok(Some(info)) = self.cp.keygroup(keygroup.to_string()).await {
                    self.set_keygroup(info);
                }
                self.open_held(keygroup, sealed)
            }
            other => other,
        }
    }

    /// Applies a record received from `target`; answers whether the zone changed.
    pub(crate) fn apply(&self, target: &Target, record: HostRecord) -> bool {
        // A host speaks only for itself, and any stream only for the keygroup asked for.
        let own = match target.via {
            Via::Host => record.member == target.member,
            Via::Holder => true,
        };
        if !own || record.keygroup != target.keygroup {
            self.counters.refused_sealed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let received = match target.via {
            Via::Host => &self.counters.received_from_hosts,
            Via::Holder => &self.counters.received_from_holder,
        };
        received.fetch_add(1, Ordering::Relaxed);
        self.apply_record(record)
    }

    /// Keeps `record` if it is newer than what is held, rebuilds the zone and relays it to the
    /// node's other machines; answers whether it was newer.
    pub(crate) fn apply_record(&self, record: HostRecord) -> bool {
        let applied = self
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(record.clone());
        if applied {
            self.counters.applied.fetch_add(1, Ordering::Relaxed);
            self.rebuild();
            self.changed("updated", std::slice::from_ref(&record));
            // No receiver is fine: no sibling streams from this machine.
            let _ = self.relay.send(record);
        }
        applied
    }

    /// Trigger mode: records `records` as changes of `kind` for the events and the webhook.
    pub(crate) fn changed(&self, kind: &'static str, records: &[HostRecord]) {
        if self.mode != Mode::Trigger || records.is_empty() {
            return;
        }
        let mut log = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        for record in records {
            log.push(trigger::Change::of(kind, record));
        }
        self.change_tx.send_replace(log.last());
    }

    /// Removes the records `drop` selects, as `removed` changes; answers whether any went.
    pub(crate) fn remove_records(&self, select: impl Fn(&HostRecord) -> bool) -> bool {
        let gone = self
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove_where(select);
        self.changed("removed", &gone);
        !gone.is_empty()
    }

    /// Whether this machine is responsible for `keygroup` now.
    pub(crate) fn holds(&self, keygroup: &str) -> bool {
        self.positions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keygroup)
            .is_some_and(|p| p.claim == ClaimState::Mine)
    }
}

impl Shared {
    pub(crate) fn new(mode: Mode, ctx: &RoleContext) -> Arc<Self> {
        let origin = Name::from_ascii(&ctx.settings.domain).unwrap_or_else(|_| Name::root());
        let shared = Arc::new(Shared {
            mode,
            origin: origin.clone(),
            book: Mutex::new(SeqBook::default()),
            keygroups: RwLock::new(BTreeMap::new()),
            membership: RwLock::new(ctx.membership.borrow().clone()),
            zone: Arc::new(RwLock::new(Arc::new(Zone::build(
                &origin,
                &[],
                &BTreeMap::new(),
                &Membership::default(),
                0,
            )))),
            wire: RwLock::new(Arc::default()),
            serial: AtomicU64::new(0),
            counters: Counters::default(),
            copied_once: Mutex::new(BTreeSet::new()),
            queries: Arc::default(),
            cp: ctx.cp.clone(),
            cluster_secret: ctx.settings.cluster_secret.clone(),
            http: reqwest::Client::new(),
            relay: tokio::sync::broadcast::channel(RELAY_CAPACITY).0,
            positions: RwLock::new(BTreeMap::new()),
            config_behind: tokio::sync::Notify::new(),
            changes: Mutex::new(trigger::ChangeLog::default()),
            change_tx: tokio::sync::watch::channel(0).0,
            previous_secrets: Mutex::new(BTreeMap::new()),
            rotation_grace: ctx.settings.reread_every * 2,
        });
        shared.rebuild();
        shared
    }
}
