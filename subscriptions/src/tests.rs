//! The intake's reactions to keygroup config changes, against a control plane that answers
//! from memory: it is the one way to show a member converging on configs it was never told
//! about (no event is ever delivered here), which real processes cannot stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hivemind_common::records::{self, HostRecord};
use hivemind_common::role::{
    BoxFuture, Claim, ControlPlaneClient, CpCallError, KeygroupInfo, Me, Membership, MemoryStore,
    RoleContext, RoleHealth, RoleSettings,
};
use hivemind_common::MemberId;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::intake::{ClaimState, Intake};
use crate::reconcile::run;
use crate::{Acquire, Change, Consumer};

const KG: &str = "a/b/c";

/// A control plane whose keygroup config the test changes at will; counts config reads.
struct MemoryCp {
    config: Mutex<KeygroupInfo>,
    reads: AtomicU64,
}

impl MemoryCp {
    fn new(version: u64, secret: u8) -> Arc<Self> {
        Arc::new(Self {
            config: Mutex::new(config(version, secret)),
            reads: AtomicU64::new(0),
        })
    }

    fn set(&self, version: u64, secret: u8) {
        *self.config.lock().unwrap() = config(version, secret);
    }

    /// The keygroup without node `node` among its replicas (a closed keygroup's config after
    /// an operator removed it).
    fn drop_replica(&self, node: &str) {
        let mut config = self.config.lock().unwrap();
        config.replicas.remove(node);
        config.open = false;
        config.version += 1;
    }

    fn current(&self) -> KeygroupInfo {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.config.lock().unwrap().clone()
    }
}

fn config(version: u64, secret: u8) -> KeygroupInfo {
    KeygroupInfo {
        name: KG.into(),
        version,
        replicas: ["ns".to_string(), "web".to_string()].into(),
        triggers: Default::default(),
        ttl_secs: 5,
        open: true,
        secret: vec![secret; 32],
        tombstoned: false,
    }
}

impl ControlPlaneClient for MemoryCp {
    fn keygroup(&self, _name: String) -> BoxFuture<Result<Option<KeygroupInfo>, CpCallError>> {
        let config = self.current();
        Box::pin(async move { Ok(Some(config)) })
    }

    /// As the registry answers node "ns" (the context's): its config while it is a replica,
    /// `not_a_replica` once it was removed from a closed keygroup.
    fn join_keygroup(&self, _name: String) -> BoxFuture<Result<KeygroupInfo, CpCallError>> {
        let config = self.current();
        Box::pin(async move {
            if config.replicas.contains("ns") || config.open {
                Ok(config)
            } else {
                Err(CpCallError {
                    code: "not_a_replica".into(),
                    message: format!("node \"ns\" is not a replica of {KG}"),
                })
            }
        })
    }

    fn claim(&self, _keygroup: String) -> BoxFuture<Result<Claim, CpCallError>> {
        Box::pin(async { Ok(Claim::Mine { fence: 1 }) })
    }

    fn report(&self, _: hivemind_common::role::RoleReport) -> BoxFuture<Result<u64, CpCallError>> {
        Box::pin(async { Ok(1) })
    }

    fn backup(
        &self,
        _: hivemind_common::backup::BackupOp,
    ) -> BoxFuture<Result<hivemind_common::backup::BackupOutcome, CpCallError>> {
        unimplemented!("the subscription tests make no backups")
    }

    fn backup_state(&self) -> BoxFuture<Result<hivemind_common::backup::BackupState, CpCallError>> {
        unimplemented!("the subscription tests make no backups")
    }
}

/// A context with no peers and an event channel that never delivers (its sender is kept).
fn context(
    cp: Arc<MemoryCp>,
    reread_every: Duration,
) -> (
    RoleContext,
    mpsc::UnboundedSender<hivemind_common::role::RoleEvent>,
) {
    let id = MemberId::new(1).unwrap();
    let me = Me {
        id,
        name: "ns-1".into(),
        node: "ns".into(),
        generation: 1,
        http_addr: "127.0.0.1:1".parse().unwrap(),
        gossip_addr: "127.0.0.1:2".parse().unwrap(),
    };
    let membership = Membership {
        epoch: 1,
        index: 1,
        peers: vec![],
        nodes: vec![],
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    let ctx = RoleContext {
        me: watch::channel(me).1,
        membership: watch::channel(Arc::new(membership)).1,
        events,
        cp,
        settings: RoleSettings {
            keygroups: vec![KG.into()],
            domain: "hivemind.".into(),
            bind: "127.0.0.1".parse().unwrap(),
            dns_port: 0,
            reread_every,
            trigger_webhook: None,
            cluster_secret: None,
            tls: None,
            data_dir: std::env::temp_dir(),
            nginx: Default::default(),
            backup: Default::default(),
        },
        store: Arc::new(MemoryStore::default()),
        health: RoleHealth::new().0,
        shutdown: CancellationToken::new(),
    };
    (ctx, events_tx)
}

fn version_held(shared: &Intake) -> Option<u64> {
    shared.keygroups.read().unwrap().get(KG).map(|k| k.version)
}

/// A consumer that only counts what it is handed.
#[derive(Default)]
struct Counting(AtomicU64);

impl Consumer for Counting {
    fn changed(&self, _: &Intake, _: Change<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn replica(ctx: &RoleContext) -> Arc<Intake> {
    Intake::new("dns", Acquire::Replica, Arc::new(Counting::default()), ctx)
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn record(seq: u64, keygroup_version: u64) -> HostRecord {
    HostRecord {
        member: MemberId::new(9).unwrap(),
        host: "web-1".into(),
        keygroup: KG.into(),
        addrs: vec!["10.0.0.1".parse().unwrap()],
        services: vec![],
        seq,
        generation: 1,
        keygroup_version,
    }
}

/// [6]: with no event at all, a changed config is picked up by the periodic re-read.
#[tokio::test]
async fn seed_event_6_task_b_periodic_reread_converges_without_events() {
    let cp = MemoryCp::new(1, 1);
    let (ctx, _events) = context(cp.clone(), Duration::from_millis(200));
    let shutdown = ctx.shutdown.clone();
    let shared = replica(&ctx);
    tokio::spawn(run(shared.clone(), ctx));
    eventually("version 1 held", || version_held(&shared) == Some(1)).await;
    cp.set(2, 2);
    eventually("version 2 held after a re-read", || {
        version_held(&shared) == Some(2)
    })
    .await;
    let position = shared.positions.read().unwrap().get(KG).cloned().unwrap();
    assert_eq!((position.claim, position.version), (ClaimState::Mine, 2));
    shutdown.cancel();
}

/// [5]: a record sealed with a rotated secret does not open with the held config; the role
/// re-reads the config once, opens it, and keeps the new secret. One sealed with a secret the
/// control plane does not know either stays refused.
#[tokio::test]
async fn seed_event_5_rotated_secret_is_reread_once_then_opens() {
    let cp = MemoryCp::new(1, 1);
    let (ctx, _events) = context(cp.clone(), Duration::from_secs(3600));
    let shared = replica(&ctx);
    shared
        .keygroups
        .write()
        .unwrap()
        .insert(KG.into(), config(1, 1));
    cp.set(2, 2);
    let reads = cp.reads.load(Ordering::Relaxed);
    let sealed = records::seal(&[2; 32], [0; 12], &record(1, 2)).unwrap();
    assert_eq!(shared.open(KG, &sealed).await.unwrap(), record(1, 2));
    assert_eq!(cp.reads.load(Ordering::Relaxed), reads + 1);
    assert_eq!(version_held(&shared), Some(2));
    // Opening again needs no read.
    shared.open(KG, &sealed).await.unwrap();
    assert_eq!(cp.reads.load(Ordering::Relaxed), reads + 1);
    let forged = records::seal(&[3; 32], [0; 12], &record(2, 2)).unwrap();
    assert!(shared.open(KG, &forged).await.is_err());
}

/// [7] and B: a record stamped with a newer config version wakes the reconcile loop, which
/// re-reads the config long before `--reread-every`.
#[tokio::test]
async fn seed_event_7_a_newer_version_on_the_stream_triggers_b() {
    let cp = MemoryCp::new(1, 1);
    let (ctx, _events) = context(cp.clone(), Duration::from_secs(3600));
    let shutdown = ctx.shutdown.clone();
    let shared = replica(&ctx);
    tokio::spawn(run(shared.clone(), ctx));
    eventually("version 1 held", || version_held(&shared) == Some(1)).await;
    cp.set(2, 1);
    assert!(!shared.heard_version(KG, 1));
    assert!(shared.heard_version(KG, 2));
    eventually("version 2 held after B", || {
        version_held(&shared) == Some(2)
    })
    .await;
    shutdown.cancel();
}

/// [5], the other order: this subscriber learned the rotation before a publisher did. A record
/// still sealed with the replaced secret opens within the rotation grace; after it, or with a
/// secret the keygroup never had, it is refused.
#[tokio::test]
async fn seed_event_5_a_publisher_behind_the_rotation_is_accepted_within_the_grace() {
    let cp = MemoryCp::new(2, 2);
    let (ctx, _events) = context(cp.clone(), Duration::from_secs(3600));
    let shared = replica(&ctx);
    assert!(shared.set_keygroup(config(1, 1)));
    assert!(shared.set_keygroup(config(2, 2)));
    let old = records::seal(&[1; 32], [0; 12], &record(3, 1)).unwrap();
    assert_eq!(shared.open(KG, &old).await.unwrap(), record(3, 1));
    let never = records::seal(&[9; 32], [0; 12], &record(4, 1)).unwrap();
    assert!(shared.open(KG, &never).await.is_err());

    let (ctx, _events) = context(cp.clone(), Duration::ZERO);
    let strict = replica(&ctx);
    assert!(strict.set_keygroup(config(1, 1)));
    assert!(strict.set_keygroup(config(2, 2)));
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(strict.open(KG, &old).await.is_err(), "past the grace");
}

/// The consumer hears every record applied and every removal, in the order applied, with the
/// intake already showing it; a record that is not newer is neither applied nor heard.
#[tokio::test]
async fn the_consumer_hears_each_change_in_order_after_it_is_applied() {
    struct Log(Mutex<Vec<String>>);
    impl Consumer for Log {
        fn changed(&self, intake: &Intake, change: Change<'_>) {
            let held = intake.book().records().count();
            let line = match change {
                Change::Updated(r) => format!("updated {} {} ({held} held)", r.host, r.seq),
                Change::Removed(gone) => format!("removed {} ({held} held)", gone.len()),
                Change::Inputs => "inputs".into(),
            };
            self.0.lock().unwrap().push(line);
        }
    }
    let (ctx, _events) = context(MemoryCp::new(1, 1), Duration::from_secs(3600));
    let log = Arc::new(Log(Mutex::default()));
    let intake = Intake::new("dns", Acquire::Replica, log.clone(), &ctx);
    assert!(intake.apply_record(record(2, 1)));
    assert!(!intake.apply_record(record(1, 1)), "an older seq");
    assert!(intake.apply_record(record(3, 1)));
    assert!(intake.remove_records(|r| r.keygroup == KG));
    assert!(!intake.remove_records(|r| r.keygroup == KG), "nothing left");
    assert_eq!(
        *log.0.lock().unwrap(),
        [
            "updated web-1 2 (1 held)",
            "updated web-1 3 (1 held)",
            "removed 1 (0 held)"
        ]
    );
}

/// B and DESIGN.md §5: a config whose version is not newer than the one held changes nothing,
/// not even its secret (a late answer must not undo a rotation).
#[tokio::test]
async fn seed_b_a_config_that_is_not_newer_is_ignored() {
    let (ctx, _events) = context(MemoryCp::new(1, 1), Duration::from_secs(3600));
    let shared = replica(&ctx);
    assert!(shared.set_keygroup(config(2, 2)));
    assert!(!shared.set_keygroup(config(1, 1)), "an older version");
    assert!(!shared.set_keygroup(config(2, 9)), "the same version");
    let held = shared.keygroups.read().unwrap().get(KG).cloned().unwrap();
    assert_eq!((held.version, held.secret), (2, vec![2; 32]));
    let sealed = records::seal(&[2; 32], [0; 12], &record(1, 2)).unwrap();
    assert_eq!(shared.open_held(KG, &sealed).unwrap(), record(1, 2));
}

/// DESIGN.md §6: a consuming member whose node is removed from a keygroup's replicas drops
/// that keygroup's records (the consumer hears the removal) and waits to be added again.
#[tokio::test]
async fn a_member_no_longer_a_replica_drops_the_keygroups_records() {
    let cp = MemoryCp::new(1, 1);
    let (ctx, _events) = context(cp.clone(), Duration::from_millis(100));
    let shutdown = ctx.shutdown.clone();
    let health = ctx.health.clone();
    let shared = replica(&ctx);
    tokio::spawn(run(shared.clone(), ctx));
    eventually("version 1 held", || version_held(&shared) == Some(1)).await;
    assert!(shared.apply_record(record(1, 1)));
    cp.drop_replica("ns");
    eventually("the keygroup's records and config gone", || {
        shared.book().records().count() == 0 && version_held(&shared).is_none()
    })
    .await;
    eventually("waiting to be a replica again", || {
        health.waiting().contains(&format!("keygroup:{KG}"))
    })
    .await;
    shutdown.cancel();
}
