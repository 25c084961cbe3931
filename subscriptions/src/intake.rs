//! The record store of a consuming role ([`Intake`]): the newest record per host, keygroup
//! configs and secrets (with the one a rotation replaced), where this machine stands per
//! keygroup, and the counters. Every change is handed to the role's [`Consumer`] in the order
//! it was applied.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;
use std::time::Instant;

use hivemind_common::records;
use hivemind_common::records::HostRecord;
use hivemind_common::records::OpenError;
use hivemind_common::records::SeqBook;
use hivemind_common::role::ControlPlaneClient;
use hivemind_common::role::KeygroupInfo;
use hivemind_common::role::Membership;
use hivemind_common::role::RoleContext;

use crate::targets;
use crate::targets::Target;
use crate::targets::Via;
use crate::Acquire;
use crate::Change;
use crate::Consumer;
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

/// Where this machine stands for one keygroup, for `GET /v1/roles/<role>/status`.
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

/// The records a consuming role holds and how it came by them.
pub struct Intake {
    /// The consuming role's name: whose siblings seed a starting machine and whose holder
    /// the node's other machines stream from.
    pub(crate) role: &'static str,
    pub(crate) acquire: Acquire,
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) book: Mutex<SeqBook>,
    pub(crate) keygroups: RwLock<BTreeMap<String, KeygroupInfo>>,
    pub(crate) membership: RwLock<Arc<Membership>>,
    pub(crate) counters: Counters,
    /// Keygroups already seeded from a sibling (simple join happens once per keygroup).
    pub(crate) copied_once: Mutex<BTreeSet<String>>,
    pub(crate) cp: Arc<dyn ControlPlaneClient>,
    pub(crate) cluster_secret: Option<String>,
    /// TLS to the other members, or plain HTTP.
    pub(crate) tls: Option<hivemind_common::tls::ClientTls>,
    pub(crate) http: reqwest::Client,
    /// Every record applied here, for the node's other machines (intra-node streams).
    pub(crate) relay: tokio::sync::broadcast::Sender<HostRecord>,
    pub(crate) positions: RwLock<BTreeMap<String, Position>>,
    /// A stream carried a newer keygroup config version than the one held (DESIGN.md §5
    /// event [7]): the reconcile loop re-reads the configs now.
    pub(crate) config_behind: tokio::sync::Notify,
    /// Per keygroup, the secret a rotation replaced and when.
    pub(crate) previous_secrets: Mutex<BTreeMap<String, (Vec<u8>, Instant)>>,
    /// How long a replaced secret still opens records: twice `--reread-every`, by which time
    /// every publisher re-read the config even if it missed the event.
    pub(crate) rotation_grace: Duration,
    /// Grows with every change handed to the consumer (the catalog waits on it).
    pub(crate) version: tokio::sync::watch::Sender<u64>,
}

impl hivemind_common::role::HostRecords for Intake {
    fn records(&self) -> Vec<HostRecord> {
        self.book().records().cloned().collect()
    }

    fn version(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// What a consumer reads.
impl Intake {
    /// The records held, newest per (keygroup, host).
    pub fn book(&self) -> SeqBook {
        self.book.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The configs of the keygroups served, as last read.
    pub fn keygroups(&self) -> BTreeMap<String, KeygroupInfo> {
        self.keygroups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The membership the records were last reconciled with.
    pub fn membership(&self) -> Arc<Membership> {
        self.membership
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this machine is responsible for `keygroup` now (the one machine of its node
    /// that acts on the keygroup's changes, e.g. delivers its webhook).
    pub fn holds(&self, keygroup: &str) -> bool {
        self.positions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keygroup)
            .is_some_and(|p| p.claim == ClaimState::Mine)
    }

    /// Where this machine stands per served keygroup.
    pub fn positions(&self) -> BTreeMap<String, Position> {
        self.positions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Hands `change` to the role.
    pub(crate) fn notify(&self, change: Change<'_>) {
        self.consumer.changed(self, change);
        self.version.send_modify(|v| *v += 1);
    }
}

impl Intake {
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
        let behind = targets::config_behind(known, version);
        if behind {
            self.config_behind.notify_one();
        }
        behind
    }

    /// Takes `info` as the keygroup's config when it is newer than the one held (answers
    /// whether it did). A secret it replaces stays acceptable for the rotation grace: a
    /// publisher may seal with it until it learned the rotation itself.
    #[must_use = "a config that is not newer is ignored"]
    pub(crate) fn set_keygroup(&self, info: KeygroupInfo) -> bool {
        let mut keygroups = self.keygroups.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = keygroups.get(&info.name) {
            // Seed B and DESIGN.md §5: a config whose version is not newer than the one held
            // changes nothing (a late answer must not undo a rotation or a replica change).
            if info.version <= old.version {
                return false;
            }
            if old.secret != info.secret && !old.secret.is_empty() {
                self.previous_secrets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(info.name.clone(), (old.secret.clone(), Instant::now()));
            }
        }
        keygroups.insert(info.name.clone(), info);
        true
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
    /// have been rotated: DESIGN.md §5 event [5]) and retries.
    pub(crate) async fn open(
        &self,
        keygroup: &str,
        sealed: &[u8],
    ) -> Result<HostRecord, OpenError> {
        match self.open_held(keygroup, sealed) {
            Err(OpenError::Seal) => {
                if let Ok(Some(info)) = self.cp.keygroup(keygroup.to_string()).await {
                    let _newer = self.set_keygroup(info);
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

    /// Keeps `record` if it is newer than what is held, hands it to the role and relays it to the
    /// node's other machines; answers whether it was newer.
    pub(crate) fn apply_record(&self, record: HostRecord) -> bool {
        let applied = self
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(record.clone());
        if applied {
            self.counters.applied.fetch_add(1, Ordering::Relaxed);
            self.notify(Change::Updated(&record));
            // No receiver is fine: no sibling streams from this machine.
            let _ = self.relay.send(record);
        }
        applied
    }

    /// Removes the records `select` selects (one [`Change::Removed`]); answers whether any
    /// went.
    pub(crate) fn remove_records(&self, select: impl Fn(&HostRecord) -> bool) -> bool {
        let gone = self
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove_where(select);
        if gone.is_empty() {
            return false;
        }
        self.notify(Change::Removed(&gone));
        true
    }
}

impl Intake {
    pub(crate) fn new(
        role: &'static str,
        acquire: Acquire,
        consumer: Arc<dyn Consumer>,
        ctx: &RoleContext,
    ) -> Arc<Self> {
        Arc::new(Intake {
            role,
            acquire,
            consumer,
            book: Mutex::new(SeqBook::default()),
            keygroups: RwLock::new(BTreeMap::new()),
            membership: RwLock::new(ctx.membership.borrow().clone()),
            counters: Counters::default(),
            copied_once: Mutex::new(BTreeSet::new()),
            cp: ctx.cp.clone(),
            cluster_secret: ctx.settings.cluster_secret.clone(),
            tls: ctx.settings.tls.clone(),
            http: hivemind_tls::http_client(ctx.settings.tls.as_ref())
                .build()
                .expect("an HTTP client builds"),
            relay: tokio::sync::broadcast::channel(RELAY_CAPACITY).0,
            positions: RwLock::new(BTreeMap::new()),
            config_behind: tokio::sync::Notify::new(),
            previous_secrets: Mutex::new(BTreeMap::new()),
            rotation_grace: ctx.settings.reread_every * 2,
            version: tokio::sync::watch::channel(0).0,
        })
    }
}
