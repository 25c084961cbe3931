//! FBase subscription management (DESIGN.md §5), the one home every consuming role shares.
//!
//! A *consuming* role (`dns`, `trigger`, `nginx`) needs the newest record of every host that
//! publishes into the keygroups it serves. This crate gets them and keeps them:
//! - it acquires each served keygroup's config (a replica role makes its node a replica; the
//!   trigger role waits until its node is a trigger node) and claims responsibility for it in
//!   its node (DESIGN.md §5 task D, the CP's fenced `Claim`);
//! - the responsible machine seeds itself from a sibling (simple join) and subscribes to every
//!   host of the keygroup's other replica nodes; the node's other machines stream from it
//!   (intra-node stream), make-before-break;
//! - it keeps the newest record per host by seq, opens records with the keygroup's secret
//!   (re-reading the config on a seal failure, DESIGN.md §5 event [5]; a replaced secret
//!   within the rotation grace), re-reads configs on a newer version seen on a stream ([7]) and every
//!   `--reread-every` ([6]), and drops a host the moment the feed says it failed or left.
//!
//! A role sees the outcome as an ordered record view: it implements [`Consumer`] and is called
//! after every change, in the order changes were applied, with the [`Intake`] to read from.
//!
//! Layout:
//! - [`targets`]: which streams to hold (DESIGN.md §5 task D, sans IO);
//! - [`intake`]: the record store ([`Intake`]): records by host, keygroup secrets, positions,
//!   counters;
//! - `reconcile`: the reconcile loop, claims, subscriber tasks, the sibling snapshot copy;
//! - [`routes`]: the internal `snapshot` and `stream` routes and the records/status views;
//! - [`metrics`]: the intake's samples for `/metrics`.

pub mod intake;
pub mod metrics;
mod reconcile;
pub mod routes;
pub mod targets;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use hivemind_common::records::HostRecord;
use hivemind_common::role::{BoxFuture, RoleContext};

pub use intake::{ClaimState, Intake, Position};
pub use routes::{HeldRecordView, IntakeRecordsView, IntakeStatusView};

/// How soon a reconcile that could not finish (no quorum, a claim pending) is retried. A
/// settled role reconciles on every event and every `--reread-every`.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Records queued for the intra-node streams; a stream that falls further behind ends and
/// its follower reconnects (and gets the whole keygroup again).
const RELAY_CAPACITY: usize = 4096;

/// How a consuming role comes to hold a keygroup's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// Makes its node a replica of the keygroup (creating it `open` if it does not exist), and
    /// a machine that becomes responsible first copies the keygroup's records from a sibling.
    Replica,
    /// Only reads the config and waits until its node is one of the keygroup's trigger nodes;
    /// it reports changes from then on, so it copies nothing first.
    Trigger,
}

impl Acquire {
    /// Whether a machine that becomes responsible seeds itself from a sibling first.
    pub fn seeds_from_sibling(self) -> bool {
        self == Acquire::Replica
    }
}

/// What changed in the records held, in the order it was applied.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A newer record of a host was applied.
    Updated(&'a HostRecord),
    /// Records went: their host failed or left, or their keygroup was deleted.
    Removed(&'a [HostRecord]),
    /// What the records are read with moved: the membership (names, roles, states) or a
    /// keygroup's config (its TTL, its replicas).
    Inputs,
}

/// A role that consumes records: called after every change (from several tasks, so it
/// serializes what it must itself). It reads what it needs from the [`Intake`].
pub trait Consumer: Send + Sync + 'static {
    fn changed(&self, intake: &Intake, change: Change<'_>);

    /// A member's role reported something to the feed at `index` (e.g. `backup_failed`);
    /// ignored unless the role passes reports on (the trigger webhook does).
    fn reported(
        &self,
        _intake: &Intake,
        _index: u64,
        _member: &str,
        _report: &hivemind_common::role::RoleReport,
    ) {
    }
}

/// Starts the intake for the consuming role `role` on `ctx`: the record store, its reconcile
/// task (runs until `ctx.shutdown`), and the internal routes the node's other machines and
/// starting siblings call (`/snapshot`, `/stream`; mount under `/internal/v1/roles/<role>/`).
pub fn start(
    role: &'static str,
    acquire: Acquire,
    consumer: Arc<dyn Consumer>,
    ctx: RoleContext,
) -> (Arc<Intake>, BoxFuture<()>, axum::Router) {
    let intake = Intake::new(role, acquire, consumer, &ctx);
    intake.notify(Change::Inputs);
    let internal = axum::Router::new()
        .route("/snapshot", get(routes::snapshot_route))
        .route("/stream", get(routes::stream_route))
        .route("/status", get(routes::status_route))
        .with_state(intake.clone());
    let task = Box::pin(reconcile::run(intake.clone(), ctx));
    (intake, task, internal)
}

#[cfg(test)]
mod tests;
