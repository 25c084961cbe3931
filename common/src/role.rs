//! The [`Role`] trait and the [`RoleContext`] the member runtime hands a role when it starts it.
//! Roles (`host-role`, `dns-role`) depend on this module only, never on the member runtime or
//! the control plane: everything they see of the cluster comes through the context.
//!
//! The runtime's promises to a role:
//! - [`RoleContext::events`] delivers the cluster's membership changes in feed index order, each
//!   once, after [`RoleContext::membership`] already reflects it; `Rebootstrapped` replaces
//!   everything a role derived from earlier events.
//! - [`RoleContext::me`] always holds this member's current advertised identity; an address
//!   change is also delivered as an event, at once.
//! - [`RoleContext::store`] is durable: what a role writes survives restarts of the member.
//! - The role's routes are mounted under `/v1/roles/<name>/` behind the admin-token check.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::role_specs::RoleSpec;
use crate::MemberId;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A pluggable role, loaded by `--roles`.
pub trait Role: Send + 'static {
    /// What the role is called, performs and requires.
    fn spec(&self) -> &'static RoleSpec;

    /// Starts the role: its HTTP routes (mounted under `/v1/roles/<name>/`) and its task,
    /// which runs until `ctx.shutdown` is cancelled.
    fn start(self: Box<Self>, ctx: RoleContext) -> Started;
}

pub struct Started {
    /// Mounted under `/v1/roles/<name>/` (admin token).
    pub routes: axum::Router,
    /// Read at every scrape of `/metrics`.
    pub metrics: Option<Arc<dyn RoleMetrics>>,
    /// Mounted under `/internal/v1/roles/<name>/` (cluster secret): what other members call.
    pub internal: axum::Router,
    /// Consul's agent API (`/v1/agent/service/...`, `/v1/agent/check/...`) as this role serves
    /// it, mounted at those paths (only the `host` role: DESIGN.md §6g).
    pub consul_agent: Option<axum::Router>,
    pub task: BoxFuture<()>,
    /// A consuming role's host records, for what the member serves from them (the
    /// Consul-compatible catalog); `None` for a role that holds none.
    pub records: Option<Arc<dyn HostRecords>>,
}

/// The host records a consuming role holds (newest per host and keygroup), and a counter that
/// grows with every change of them, to wait on.
pub trait HostRecords: Send + Sync {
    fn records(&self) -> Vec<crate::records::HostRecord>;
    fn version(&self) -> watch::Receiver<u64>;
}

/// One metric sample a role reports: `hivemind_<role>_<name>` in `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    /// A counter (only grows) or a gauge.
    pub counter: bool,
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

/// A histogram a role reports: `hivemind_<role>_<name>` in `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    pub name: &'static str,
    pub help: &'static str,
    pub snapshot: crate::histogram::HistogramSnapshot,
}

/// A role's metrics, read at scrape time from counters it keeps anyway.
pub trait RoleMetrics: Send + Sync {
    fn samples(&self) -> Vec<Sample>;

    fn histograms(&self) -> Vec<HistogramSample> {
        Vec::new()
    }
}

/// What the member was told for its roles (`--keygroup`, `--domain`, `--dns-port`, `--bind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSettings {
    pub keygroups: Vec<String>,
    pub domain: String,
    pub bind: std::net::IpAddr,
    pub dns_port: u16,
    /// Where the `trigger` role POSTs each change (`--trigger-webhook`).
    pub trigger_webhook: Option<String>,
    /// How often a role re-reads the configs it derived from events (DESIGN.md §5 event [6]): a
    /// member that missed events still converges.
    pub reread_every: std::time::Duration,
    /// Sent as `x-hivemind-cluster-secret` on calls to other members' internal routes.
    pub cluster_secret: Option<String>,
    /// TLS to other members' HTTP ports (`https://`, mutual); plain HTTP when `None`.
    pub tls: Option<crate::tls::ClientTls>,
    /// The member's data directory (`--data-dir`): a role keeps its files under
    /// `<data-dir>/<role>/`.
    pub data_dir: std::path::PathBuf,
    /// What the `nginx` role was told (`--nginx-*`).
    pub nginx: NginxSettings,
    /// What the `backup` role was told (`--backup-*`).
    pub backup: BackupSettings,
}

/// The `backup` role's settings (DESIGN.md §6d).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// Bytes this member offers (`--backup-space`); `None` offers nothing.
    pub space: Option<u64>,
    /// Directories this member backs up (`--backup-path`).
    pub paths: Vec<std::path::PathBuf>,
    /// Automatic snapshots (`--backup-every`).
    pub every: std::time::Duration,
    /// Copies of every chunk (`--backup-replicas`).
    pub replicas: usize,
    /// The owner key file (`--backup-key`; default `<data-dir>/backup.key`).
    pub key_file: Option<std::path::PathBuf>,
    /// How often the owner lists its chunks to each space (`--backup-heartbeat`).
    pub heartbeat: std::time::Duration,
    /// How long a space keeps a chunk after the last heartbeat that listed it (`--backup-lease`).
    pub lease: std::time::Duration,
    /// Sealed bytes an owner places, reserves and sends at once (`--backup-batch`): what a
    /// run holds in memory, and what an interrupted run may send twice.
    pub batch: u64,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            space: None,
            paths: Vec::new(),
            every: std::time::Duration::from_secs(3600),
            replicas: 2,
            key_file: None,
            heartbeat: std::time::Duration::from_secs(600),
            lease: std::time::Duration::from_secs(24 * 3600),
            batch: 32 << 20,
        }
    }
}

/// The `nginx` role's settings (DESIGN.md §6b).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxSettings {
    /// The file it renders (`--nginx-conf`; default `<data-dir>/nginx/hivemind.conf`).
    pub conf: Option<std::path::PathBuf>,
    /// The nginx binary (`--nginx-bin`).
    pub bin: std::path::PathBuf,
    /// The user's template (`--nginx-template`); the built-in one without it.
    pub template: Option<std::path::PathBuf>,
    /// Where the built-in template's server listens (`--nginx-listen`).
    pub listen: SocketAddr,
    /// A burst of changes renders once: after the first of these without a change, at the
    /// latest the second after its first change (`--nginx-debounce`).
    pub debounce: (std::time::Duration, std::time::Duration),
    /// Run nginx as a supervised child (`--nginx-manage`), else signal `pid_file`'s master.
    pub manage: bool,
    pub pid_file: Option<std::path::PathBuf>,
}

impl Default for NginxSettings {
    fn default() -> Self {
        Self {
            conf: None,
            bin: "nginx".into(),
            template: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            debounce: (
                std::time::Duration::from_millis(200),
                std::time::Duration::from_secs(2),
            ),
            manage: true,
            pid_file: None,
        }
    }
}

pub use crate::secret::CLUSTER_SECRET_HEADER;

/// A keygroup as a role sees it: with its secret when this member's node may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygroupInfo {
    pub name: String,
    pub version: u64,
    pub replicas: BTreeSet<String>,
    pub triggers: BTreeSet<String>,
    pub ttl_secs: u32,
    pub open: bool,
    pub secret: Vec<u8>,
    pub tombstoned: bool,
}

/// This member as the cluster knows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub id: MemberId,
    pub name: String,
    pub node: String,
    pub generation: u64,
    pub http_addr: SocketAddr,
    pub gossip_addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Alive,
    Failed,
    Left,
}

/// A member as a role sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: MemberId,
    pub name: String,
    pub node: String,
    pub roles: Vec<String>,
    pub http_addr: String,
    pub gossip_addr: String,
    pub generation: u64,
    pub state: PeerState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node: String,
    pub machines: BTreeSet<MemberId>,
    pub version: u64,
}

/// The registry's membership at feed position `index` of `epoch`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub epoch: u64,
    pub index: u64,
    pub peers: Vec<Peer>,
    pub nodes: Vec<Node>,
}

impl Membership {
    pub fn live(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(|p| p.state == PeerState::Alive)
    }

    /// Live members performing `role`.
    pub fn performing<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Peer> + 'a {
        self.live()
            .filter(move |p| p.roles.iter().any(|r| r == role))
    }
}

/// What a role hears from the runtime, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleEvent {
    /// A member was admitted (or re-admitted under a new generation).
    Joined { index: u64, peer: Peer },
    /// A member left or was declared failed: its records must go now.
    Gone {
        index: u64,
        id: MemberId,
        state: PeerState,
    },
    /// A member's advertised address changed.
    AddressChanged { index: u64, peer: Peer },
    /// A node's machines changed.
    NodeChanged { index: u64, node: Node },
    /// A keygroup's config changed (or it was tombstoned): re-read it from the CP.
    KeygroupChanged {
        index: u64,
        name: String,
        version: u64,
        deleted: bool,
    },
    /// A responsibility was claimed or released (`machine` is `None` once released).
    ResponsibilityChanged {
        index: u64,
        node: String,
        keygroup: String,
        machine: Option<MemberId>,
    },
    /// The membership was rebuilt from a snapshot (new epoch): derive everything anew.
    Rebootstrapped { membership: Arc<Membership> },
    /// This member's own advertised address changed (the runtime already renewed it).
    SelfAddressChanged { me: Me },
    /// A member's role reported something to the feed (e.g. `backup_failed`).
    Reported {
        index: u64,
        member: MemberId,
        name: String,
        report: RoleReport,
    },
}

/// Why a control-plane call failed: the API's error code (`no_quorum`, `cas_failed`, ...)
/// and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CpCallError {
    pub code: String,
    pub message: String,
}

/// The control plane as a role reaches it: in process on a control-plane member, over the
/// internal routes on any other. Writes are committed by a quorum before they answer; reads
/// are linearizable. It acts as the role's member and node only (DESIGN.md §6e-2): no KV,
/// no other node's secrets.
pub trait ControlPlaneClient: Send + Sync {
    /// The keygroup's current config (a linearizable read: it includes every committed change,
    /// e.g. a rotation a publisher already seals with).
    fn keygroup(&self, name: String) -> BoxFuture<Result<Option<KeygroupInfo>, CpCallError>>;
    /// Makes this member's node a replica of `name`: creates it `open` if it does not exist,
    /// adds the node if the keygroup is open. Answers the config as it then stands.
    fn join_keygroup(&self, name: String) -> BoxFuture<Result<KeygroupInfo, CpCallError>>;
    /// Claims responsibility for `keygroup` in this member's node: answers the fence when this
    /// member holds it (already or now), or which live machine of the node does. Claiming what
    /// this member already holds, or what another live machine holds, writes nothing.
    fn claim(&self, keygroup: String) -> BoxFuture<Result<Claim, CpCallError>>;
    /// Puts `report` in the event feed as this member's; answers its index.
    fn report(&self, report: RoleReport) -> BoxFuture<Result<u64, CpCallError>>;
    /// A backup ledger change as this member (DESIGN.md §6d), committed before it answers.
    fn backup(
        &self,
        op: crate::backup::BackupOp,
    ) -> BoxFuture<Result<crate::backup::BackupOutcome, CpCallError>>;
    /// The backup ledger (a linearizable read).
    fn backup_state(&self) -> BoxFuture<Result<crate::backup::BackupState, CpCallError>>;
}

/// Something a role reports to the cluster's event feed, for operators (and the trigger
/// webhook's readers) to see: it becomes a registry event of the same name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RoleReport {
    /// The nginx role did not apply a render (its template failed or `nginx -t` refused it);
    /// the running config keeps serving.
    NginxRenderFailed { error: String },
    /// A backup of this member (the owner) failed: a reservation was refused, a send failed,
    /// or there is not enough space. No snapshot was recorded.
    BackupFailed { owner: String, reason: String },
}

impl RoleReport {
    /// What went wrong, in words.
    pub fn detail(&self) -> &str {
        match self {
            RoleReport::NginxRenderFailed { error } => error,
            RoleReport::BackupFailed { reason, .. } => reason,
        }
    }

    /// The event's `kind` in the feed.
    pub fn name(&self) -> &'static str {
        match self {
            RoleReport::NginxRenderFailed { .. } => "nginx_render_failed",
            RoleReport::BackupFailed { .. } => "backup_failed",
        }
    }
}

/// The outcome of [`ControlPlaneClient::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This member is responsible, fenced by the claim's log index.
    Mine { fence: u64 },
    /// Another live machine of this node is: take the keygroup's records from it.
    HeldBy { machine: MemberId },
}

/// A role's durable key-value space (one per role, inside `<data-dir>/member`).
pub trait RoleStore: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores durably: the value survives a crash once this returns.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn remove(&self, key: &[u8]) -> Result<(), StoreError>;
}

#[derive(Debug, thiserror::Error)]
#[error("role store: {0}")]
pub struct StoreError(pub String);

/// A role store in memory, lost with the process: for tests of roles.
#[derive(Debug, Default)]
pub struct MemoryStore(std::sync::Mutex<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>);

impl RoleStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.lock().expect("store").get(key).cloned())
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.0
            .lock()
            .expect("store")
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.0.lock().expect("store").remove(key);
        Ok(())
    }
}

/// What a role reports about itself: empty when it operates, else what it waits for. A role
/// with several loops gives each its own [`RoleHealth::part`], so that one loop's "ready"
/// never clears what another waits for; the role waits for the union, in part order.
#[derive(Clone)]
pub struct RoleHealth {
    shared: Arc<HealthParts>,
    part: &'static str,
}

struct HealthParts {
    reasons: std::sync::Mutex<std::collections::BTreeMap<&'static str, Vec<String>>>,
    merged: watch::Sender<Vec<String>>,
}

impl RoleHealth {
    pub fn new() -> (Self, watch::Receiver<Vec<String>>) {
        let (merged, rx) = watch::channel(Vec::new());
        let shared = Arc::new(HealthParts {
            reasons: Default::default(),
            merged,
        });
        (Self { shared, part: "" }, rx)
    }

    /// A handle for one part of the role (its render loop, its server): what it waits for is
    /// kept apart from the other parts'.
    pub fn part(&self, part: &'static str) -> Self {
        Self {
            shared: self.shared.clone(),
            part,
        }
    }

    /// What this part waits for now (replacing what it said before).
    pub fn waiting_for(&self, reasons: Vec<String>) {
        let mut parts = self
            .shared
            .reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if reasons.is_empty() {
            parts.remove(self.part);
        } else {
            parts.insert(self.part, reasons);
        }
        let merged: Vec<String> = parts.values().flatten().cloned().collect();
        self.shared.merged.send_if_modified(|current| {
            let changed = *current != merged;
            *current = merged;
            changed
        });
    }

    /// This part waits for nothing.
    pub fn ready(&self) {
        self.waiting_for(Vec::new());
    }

    /// What the role waits for now, every part (empty: it operates).
    pub fn waiting(&self) -> Vec<String> {
        self.shared.merged.borrow().clone()
    }
}

/// Everything a running role gets from the member runtime.
pub struct RoleContext {
    pub me: watch::Receiver<Me>,
    pub membership: watch::Receiver<Arc<Membership>>,
    pub events: mpsc::UnboundedReceiver<RoleEvent>,
    pub cp: Arc<dyn ControlPlaneClient>,
    pub settings: RoleSettings,
    pub store: Arc<dyn RoleStore>,
    pub health: RoleHealth,
    pub shutdown: CancellationToken,
}

#[cfg(test)]
mod tests {
    use super::RoleHealth;

    #[test]
    fn one_part_being_ready_never_clears_what_another_waits_for() {
        let (health, rx) = RoleHealth::new();
        let render = health.part("render");
        render.waiting_for(vec!["reload_not_served".into()]);
        health.waiting_for(vec!["keygroup:a".into()]);
        assert_eq!(health.waiting(), ["keygroup:a", "reload_not_served"]);
        // The intake is ready: the render loop still waits.
        health.ready();
        assert_eq!(*rx.borrow(), ["reload_not_served"]);
        render.ready();
        assert!(health.waiting().is_empty());
        assert!(rx.borrow().is_empty());
    }
}
