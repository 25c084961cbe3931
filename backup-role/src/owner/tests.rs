//! An owner's run against real spaces on loopback and a control plane that refuses some
//! reservations: a share a space does not take is placed on the others in the same run.

use std::collections::BTreeSet;
use std::sync::Mutex as StdMutex;

use hivemind_common::backup::{BackupState, SpaceRecord};
use hivemind_common::role::{BoxFuture, Claim, KeygroupInfo, MemoryStore, Peer, PeerState};

use super::*;
use crate::space::SpaceStore;
use crate::test_support::{make_tree, serve};

/// A ledger that grants reservations except on `refuse`, with room on every space.
struct Cp {
    spaces: Vec<MemberId>,
    refuse: BTreeSet<MemberId>,
    next: StdMutex<u64>,
    reports: StdMutex<Vec<RoleReport>>,
}

impl ControlPlaneClient for Cp {
    fn keygroup(&self, _: String) -> BoxFuture<Result<Option<KeygroupInfo>, CpCallError>> {
        unreachable!()
    }
    fn join_keygroup(&self, _: String) -> BoxFuture<Result<KeygroupInfo, CpCallError>> {
        unreachable!()
    }
    fn claim(&self, _: String) -> BoxFuture<Result<Claim, CpCallError>> {
        unreachable!()
    }
    fn report(&self, report: RoleReport) -> BoxFuture<Result<u64, CpCallError>> {
        self.reports.lock().unwrap().push(report);
        Box::pin(async { Ok(1) })
    }
    fn backup(&self, op: BackupOp) -> BoxFuture<Result<BackupOutcome, CpCallError>> {
        let answer = match op {
            BackupOp::Reserve { spaces, .. }
                if spaces.iter().any(|(s, _)| self.refuse.contains(s)) =>
            {
                Err(CpCallError {
                    code: "no_room".into(),
                    message: "refused".into(),
                })
            }
            BackupOp::Reserve { spaces, .. } => {
                let mut next = self.next.lock().unwrap();
                Ok(BackupOutcome::Reserved(
                    spaces
                        .iter()
                        .map(|(s, _)| {
                            *next += 1;
                            (*s, *next)
                        })
                        .collect(),
                ))
            }
            BackupOp::Record { .. } => Ok(BackupOutcome::Recorded),
            other => panic!("{other:?}"),
        };
        Box::pin(async move { answer })
    }
    fn backup_state(&self) -> BoxFuture<Result<BackupState, CpCallError>> {
        let spaces = self
            .spaces
            .iter()
            .map(|id| {
                (
                    *id,
                    SpaceRecord {
                        capacity: 1 << 30,
                        stored: 0,
                        reserved: 0,
                    },
                )
            })
            .collect();
        Box::pin(async move {
            Ok(BackupState {
                spaces,
                ..Default::default()
            })
        })
    }
}

/// Three spaces on loopback (ids 1, 2, 3; the one with id `largest` offers the most room, so
/// placement tries it first), an owner (id 9) whose control plane refuses `refuse`.
async fn setup(dir: &Path, refuse: &[u64]) -> (Owner, Vec<Arc<SpaceStore>>, Arc<Cp>) {
    let id = |n| MemberId::new(n).unwrap();
    let mut peers = Vec::new();
    let mut stores = Vec::new();
    for n in 1..=3u64 {
        let store =
            Arc::new(SpaceStore::open(dir.join(format!("space-{n}")), 1 << 30, 60_000).unwrap());
        let addr = serve(store.clone()).await;
        stores.push(store);
        peers.push(Peer {
            id: id(n),
            name: format!("space-{n}"),
            node: format!("node-{n}"),
            roles: vec!["backup".into()],
            http_addr: addr,
            gossip_addr: "127.0.0.1:1".into(),
            generation: 1,
            state: PeerState::Alive,
        });
    }
    let (_, membership) = watch::channel(Arc::new(Membership {
        peers,
        ..Default::default()
    }));
    let cp = Arc::new(Cp {
        spaces: (1..=3).map(id).collect(),
        refuse: refuse.iter().map(|n| id(*n)).collect(),
        next: StdMutex::new(0),
        reports: StdMutex::default(),
    });
    let owner = Owner {
        key: OwnerKey::from_bytes(&[4; 32]),
        name: "owner".into(),
        id: id(9),
        paths: Vec::new(),
        replicas: 2,
        batch_bytes: 1 << 20,
        cp: cp.clone(),
        membership,
        store: Arc::new(MemoryStore::default()),
        spaces: Spaces::internal(None, None),
        index: Mutex::new(Index::default()),
        counters: OwnerCounters::default(),
        last_run: Default::default(),
        cache_dir: dir.join("trees"),
        pool: Arc::new(scan_pool()),
        run_progress: Default::default(),
        restore_progress: Default::default(),
    };
    (owner, stores, cp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reservation_is_placed_on_the_other_spaces_in_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let (owner, stores, _) = setup(dir.path(), &[1]).await;
    let view = owner.run(Some(vec![src.clone()])).await.unwrap();
    assert!(view.chunks_new > 5, "{view:?}");
    assert!(owner.counters.replaced.load(Ordering::Relaxed) >= 1);
    // Everything on the two spaces that took it, twice; nothing on the refusing one.
    assert_eq!(stores[0].stored(), 0);
    let index = owner.index.lock().await;
    for (id, stored) in &index.chunks {
        assert_eq!(stored.spaces.len(), 2, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_fails_only_when_no_placement_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let (owner, _, cp) = setup(dir.path(), &[1, 2]).await;
    let err = owner.run(Some(vec![src])).await.unwrap_err();
    assert!(err.to_string().contains("not enough space"), "{err}");
    assert!(matches!(
        &cp.reports.lock().unwrap()[..],
        [RoleReport::BackupFailed { .. }]
    ));
}
