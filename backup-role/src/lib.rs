//! The `backup` role (seed 004, DESIGN.md §6d): peer-to-peer backup on the disk members offer.
//! A member with `--roles backup` is an **owner** (it backs up `--backup-path` with its owner
//! key) and, with `--backup-space`, a **space** (it keeps other owners' sealed chunks).
//!
//! Layout: [`crypto`] (the owner key: keyed chunk ids, compression and sealing), [`tree`]
//! (per-directory tree blobs and the snapshot root, v1's manifest, what a restore writes),
//! [`pack`] (pack files and a space's index of them), [`placement`] (where chunks go, the
//! owner's index and its repair plan), [`leases`] (a space's chunks and their leases),
//! [`progress`] (a run's or restore's progress) — all sans IO; [`scan`] (the parallel walk
//! that turns directories into sealed chunks and tree blobs), [`space`] (a space's disk),
//! [`owner`] (runs, heartbeats, repair, restore, forget), [`restore`] (shared with the CLI's
//! fresh-machine restore), [`wire`] (routes, bodies and the client between owners, spaces and
//! the CLI), `api` (the HTTP routes). The ledger's rules
//! (quota, reservations, snapshot records) are the control plane's
//! (`control-plane/src/registry/backup.rs`).

mod api;
pub mod crypto;
pub mod leases;
pub mod owner;
pub mod pack;
pub mod placement;
pub mod progress;
pub mod restore;
pub mod scan;
pub mod space;
pub mod tree;
pub mod wire;

#[cfg(test)]
mod test_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use hivemind_common::role::{ControlPlaneClient, Role, RoleContext, RoleMetrics, Sample, Started};
use hivemind_common::role_specs::{self, RoleSpec};

pub use api::{openapi, BackupApi, BackupStatusView, SnapshotView, SpaceView};
pub use owner::{CheckView, MaintainView, RunView};
pub use restore::RestoreView;

use crate::crypto::OwnerKey;
use crate::owner::Owner;
use crate::space::SpaceStore;

pub struct BackupRole;

/// What the routes, the metrics and the loops share.
#[derive(Clone)]
pub(crate) struct RoleState {
    owner: Option<Arc<Owner>>,
    space: api::SpaceRef,
    cp: Arc<dyn ControlPlaneClient>,
}

/// Reads the owner key, creating it (mode 0600) on first start.
pub fn load_or_create_key(path: &Path) -> Result<OwnerKey, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => OwnerKey::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let text = OwnerKey::generate();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            file.write_all(format!("{text}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::warn!(
                key = %path.display(),
                "created a new backup owner key: keep a copy of it elsewhere, it is the only way to restore on another machine"
            );
            OwnerKey::parse(&text).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

impl Role for BackupRole {
    fn spec(&self) -> &'static RoleSpec {
        role_specs::spec("backup").expect("backup is a known role")
    }

    fn start(self: Box<Self>, ctx: RoleContext) -> Started {
        let settings = ctx.settings.backup.clone();
        let data_dir = ctx.settings.data_dir.clone();
        let key_file = settings
            .key_file
            .clone()
            .unwrap_or_else(|| default_key_file(&data_dir));
        let mut waiting = Vec::new();
        let me = ctx.me.borrow().clone();
        let owner = match load_or_create_key(&key_file) {
            Ok(key) => Some(Arc::new(Owner {
                key,
                name: me.name.clone(),
                id: me.id,
                paths: settings.paths.clone(),
                replicas: settings.replicas,
                batch_bytes: settings.batch,
                cp: ctx.cp.clone(),
                membership: ctx.membership.clone(),
                index: tokio::sync::Mutex::new(Owner::load_index(&*ctx.store)),
                store: ctx.store.clone(),
                spaces: wire::Spaces::internal(
                    ctx.settings.cluster_secret.clone(),
                    ctx.settings.tls.clone(),
                ),
                counters: Default::default(),
                last_run: Default::default(),
                cache_dir: data_dir.join("backup").join("trees"),
                pool: Arc::new(owner::scan_pool()),
                run_progress: Default::default(),
                restore_progress: Default::default(),
            })),
            Err(e) => {
                tracing::error!(error = %e, "the backup owner key cannot be read: this member backs nothing up");
                waiting.push(format!("backup_key: {e}"));
                None
            }
        };
        let space = match settings.space {
            Some(capacity) => match SpaceStore::open(
                data_dir.join("backup"),
                capacity,
                settings.lease.as_millis() as u64,
            ) {
                Ok(store) => Some(Arc::new(store)),
                Err(e) => {
                    tracing::error!(error = %e, "the backup space cannot be opened: this member offers none");
                    waiting.push(format!("backup_space: {e}"));
                    None
                }
            },
            None => None,
        };
        ctx.health.waiting_for(waiting);
        let shared = RoleState {
            owner,
            space,
            cp: ctx.cp.clone(),
        };
        let chunk_routes = Router::new()
            .route("/chunks/{owner}", get(api::list_route))
            .route("/chunks/{owner}/read", post(api::read_many_route))
            .route("/chunks/{owner}/{id}", get(api::chunk_route));
        let routes = Router::new()
            .route("/run", post(api::run_route))
            .route("/snapshots", get(api::snapshots_route))
            .route("/snapshots/{id}", delete(api::forget_route))
            .route("/restore", post(api::restore_route))
            .route("/check", post(api::check_route))
            .route("/status", get(api::status_route))
            .merge(chunk_routes.clone())
            .with_state(shared.clone());
        let internal = Router::new()
            .route(
                "/upload",
                post(api::upload_route).layer(DefaultBodyLimit::max(wire::MAX_UPLOAD_BYTES)),
            )
            .route("/heartbeat", post(api::heartbeat_route))
            .merge(chunk_routes)
            .with_state(shared.clone());
        let metrics = Arc::new(BackupMetrics(shared.clone()));
        let shutdown = ctx.shutdown.child_token();
        let task = Box::pin(async move {
            if let Some(space) = shared.space.clone() {
                tokio::spawn(space_loop(
                    space,
                    shared.cp.clone(),
                    me.id,
                    shutdown.clone(),
                ));
            }
            if let Some(owner) = shared.owner.clone() {
                owner_loop(owner, settings.every, settings.heartbeat, shutdown).await;
            } else {
                shutdown.cancelled().await;
            }
        });
        Started {
            consul_agent: None,
            routes,
            metrics: Some(metrics),
            internal,
            task,
            records: None,
        }
    }
}

/// How often a space drops expired chunks and corrects its numbers in the ledger.
const SPACE_TICK: Duration = Duration::from_secs(2);
/// A space re-offers at least this often even when its numbers did not change.
const SPACE_REOFFER: Duration = Duration::from_secs(60);

/// Whether a reservation on space `me` outlived its expiry: the ledger releases it at the next
/// command it applies, which the space's offer then is (the seed's server-side CRON).
async fn reservation_expired(cp: &dyn ControlPlaneClient, me: hivemind_common::MemberId) -> bool {
    let now = space::now_ms();
    cp.backup_state().await.is_ok_and(|state| {
        state
            .reservations
            .iter()
            .any(|(_, r)| r.space == me && r.expires_ms <= now)
    })
}

/// A space's loop: offer at once, then every tick drop expired chunks and re-offer when the
/// numbers changed or a reservation on it expired. Failures are logged, counted and retried
/// at the next tick.
async fn space_loop(
    space: Arc<SpaceStore>,
    cp: Arc<dyn ControlPlaneClient>,
    me: hivemind_common::MemberId,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut offered: Option<(u64, u64)> = None;
    let mut last_offer = tokio::time::Instant::now();
    loop {
        match space.expire().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                chunks = n,
                "backup chunks expired (no heartbeat within the lease)"
            ),
            Err(e) => tracing::warn!(error = %e, "expiring backup chunks failed"),
        }
        let numbers = (space.capacity, space.stored());
        if offered != Some(numbers)
            || last_offer.elapsed() >= SPACE_REOFFER
            || reservation_expired(&*cp, me).await
        {
            match space.offer(&*cp).await {
                Ok(n) => {
                    offered = Some(n);
                    last_offer = tokio::time::Instant::now();
                }
                Err(e) => {
                    space.offer_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "offering backup space failed; retrying");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SPACE_TICK) => {}
        }
    }
}

/// How long after a membership change the owner looks for a departed space: SWIM's changes
/// come in bursts.
const REPAIR_SETTLE: Duration = Duration::from_secs(1);

/// An owner's loop: a heartbeat round (with repair) every `heartbeat`, a snapshot every
/// `every` when it has paths, and a repair within seconds of a space holding its chunks
/// failing or leaving (not at the next heartbeat).
async fn owner_loop(
    owner: Arc<Owner>,
    every: Duration,
    heartbeat: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let start = tokio::time::Instant::now();
    let mut beat = tokio::time::interval_at(start + heartbeat, heartbeat);
    let mut run = tokio::time::interval_at(start + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    run.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut membership = owner.membership.clone();
    loop {
        let mut repair = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = beat.tick() => repair = true,
            changed = membership.changed() => {
                if changed.is_err() {
                    // The runtime is going away; the shutdown follows.
                    shutdown.cancelled().await;
                    return;
                }
                tokio::time::sleep(REPAIR_SETTLE).await;
                membership.borrow_and_update();
                if owner.lost_a_space().await {
                    owner.counters.prompt_repairs.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("a space holding backup chunks failed or left: repairing now");
                    repair = true;
                }
            }
            _ = run.tick() => {
                if !owner.paths.is_empty() {
                    // A failure is counted, logged and reported to the feed by `run`.
                    let _ = owner.run(None).await;
                }
            }
        }
        if repair {
            if let Err(e) = owner.maintain().await {
                owner
                    .counters
                    .heartbeats_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "backup heartbeat round failed; retrying at the next");
            }
        }
    }
}

struct BackupMetrics(RoleState);

fn sample(name: &'static str, help: &'static str, counter: bool, value: u64) -> Sample {
    Sample {
        name,
        help,
        counter,
        labels: Vec::new(),
        value,
    }
}

impl RoleMetrics for BackupMetrics {
    fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        if let Some(o) = &self.0.owner {
            let c = &o.counters;
            out.extend([
                sample(
                    "runs_ok",
                    "Snapshots recorded.",
                    true,
                    c.runs_ok.load(Ordering::Relaxed),
                ),
                sample(
                    "failures",
                    "Backups that failed (each reported as backup_failed).",
                    true,
                    c.runs_failed.load(Ordering::Relaxed),
                ),
                sample(
                    "chunks_sent",
                    "New chunks stored on the spaces.",
                    true,
                    c.chunks_sent.load(Ordering::Relaxed),
                ),
                sample(
                    "bytes_sent",
                    "Sealed bytes sent to spaces, every copy counted.",
                    true,
                    c.bytes_sent.load(Ordering::Relaxed),
                ),
                sample(
                    "heartbeats_failed",
                    "Heartbeats or heartbeat rounds that failed.",
                    true,
                    c.heartbeats_failed.load(Ordering::Relaxed),
                ),
                sample(
                    "copies_made",
                    "Chunks copied to new spaces to keep R copies.",
                    true,
                    c.copies_made.load(Ordering::Relaxed),
                ),
                sample(
                    "replaced_shares",
                    "Shares of a batch a space refused or failed, placed on other spaces.",
                    true,
                    c.replaced.load(Ordering::Relaxed),
                ),
                sample(
                    "prompt_repairs",
                    "Repairs started because a space holding chunks failed or left.",
                    true,
                    c.prompt_repairs.load(Ordering::Relaxed),
                ),
                sample(
                    "lost_chunks",
                    "Referenced chunks no space holds (operator: restore elsewhere).",
                    false,
                    c.lost_chunks.load(Ordering::Relaxed),
                ),
            ]);
        }
        if let Some(s) = &self.0.space {
            out.extend([
                sample(
                    "space_capacity_bytes",
                    "Bytes this member offers.",
                    false,
                    s.capacity,
                ),
                sample(
                    "space_stored_bytes",
                    "Bytes of chunks this member holds.",
                    false,
                    s.stored(),
                ),
                sample(
                    "space_packs",
                    "Pack files this member holds.",
                    false,
                    s.pack_count() as u64,
                ),
                sample(
                    "space_damaged_chunks",
                    "Chunks that failed their pack's check (dropped, never served).",
                    true,
                    s.damaged.load(Ordering::Relaxed),
                ),
                sample(
                    "space_offer_failures",
                    "Offers to the ledger that failed.",
                    true,
                    s.offer_failures.load(Ordering::Relaxed),
                ),
            ]);
        }
        out
    }
}

/// The default key file of a member with `data_dir`.
pub fn default_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("backup.key")
}
