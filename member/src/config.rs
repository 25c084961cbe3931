//! What one agent was told ([`AgentConfig`]: the command line, a config file, the env) and how
//! starting it can fail ([`AgentError`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hivemind_control_plane::CpError;
use tokio::sync::watch;

use crate::gossip::{self, Profile};
use crate::identity::IdentityError;

/// Everything `hivemind agent` was told on the command line, in a config file or the env.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub node: String,
    pub data_dir: PathBuf,
    pub bind: IpAddr,
    /// The address advertised at start.
    pub advertise: IpAddr,
    /// Whether `advertise` was given (`--advertise`, or `--bind` of a specific IP); if not, the
    /// address watchdog detects it.
    pub advertise_forced: bool,
    /// Runtime changes of the forced address (a config reload); `None` inside: detect.
    pub advertise_updates: Option<watch::Receiver<Option<IpAddr>>>,
    /// How often the address watchdog compares the advertised address with the current one.
    pub address_check: Duration,
    /// How often roles re-read their keygroup and node configs (DESIGN.md §5 event [6]).
    pub reread_every: Duration,
    /// Where the `trigger` role POSTs each change.
    pub trigger_webhook: Option<String>,
    /// What the `nginx` role was told (`--nginx-*`).
    pub nginx: hivemind_common::role::NginxSettings,
    /// What the `backup` role was told (`--backup-*`).
    pub backup: hivemind_common::role::BackupSettings,
    pub http_port: u16,
    pub gossip_port: u16,
    pub control_plane: bool,
    pub bootstrap_expect: Option<usize>,
    pub join: Vec<String>,
    pub roles: Vec<String>,
    /// Keygroups the roles serve (`--keygroup`; default `hivemind/default/hosts`).
    pub keygroups: Vec<String>,
    /// The domain the dns role answers for (`--domain`, e.g. `hivemind.`).
    pub domain: String,
    pub dns_port: u16,
    pub admin_token: Option<String>,
    /// Joiners must present this token (checked by the CP member that receives the join).
    pub join_token: Option<String>,
    /// Bounded wait of CP writes and linearizable reads (`no_quorum` after it).
    pub request_timeout: Duration,
    pub raft_snapshot_every: u64,
    /// Test only: see `CpConfig::unsafe_ack_before_persist`.
    pub unsafe_ack_before_persist: bool,
    /// Events kept in the feed before the CP leader starts a new epoch.
    pub event_retention: usize,
    /// Commit `Leave` when stopping (off only for throwaway clusters such as `hivemind dev`).
    pub leave_on_shutdown: bool,
    /// Seals gossip packets when set.
    pub gossip_key: Option<[u8; 32]>,
    pub gossip_profile: Profile,
}

impl AgentConfig {
    /// The secret internal routes require: derived from the gossip key, none without one.
    pub fn cluster_secret(&self) -> Option<String> {
        self.gossip_key.as_ref().map(gossip::seal::cluster_secret)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("control plane: {0}")]
    ControlPlane(#[from] CpError),
    #[error("cannot create data dir {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
    #[error("join rejected: {code}: {message}")]
    JoinRejected { code: String, message: String },
}
