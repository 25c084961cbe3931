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
    /// On the control-plane leader: how long a live registry member may go unheard by its
    /// SWIM before it is reported failed (`None`: never; see `cp::unheard`).
    pub fail_unheard_after: Option<Duration>,
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
    /// TLS on the HTTP port and to every other member (`--tls-*`); plain HTTP when `None`.
    pub tls: Option<std::sync::Arc<hivemind_tls::Tls>>,
    pub gossip_profile: Profile,
}

impl AgentConfig {
    /// The client side of this member's TLS, for every call to another member.
    pub fn client_tls(&self) -> Option<hivemind_common::tls::ClientTls> {
        self.tls.as_ref().map(|tls| tls.client())
    }

    /// The secret internal routes require: derived from the gossip key, none without one.
    pub fn cluster_secret(&self) -> Option<String> {
        self.gossip_key.as_ref().map(gossip::seal::cluster_secret)
    }

    /// This member's [`trust_mode`].
    pub fn trust_mode(&self) -> &'static str {
        trust_mode(self.tls.is_some(), self.gossip_key.is_some())
    }
}

/// Who a member trusts inside the cluster (DESIGN.md §6e-2), as `hivemind status` shows it:
/// `tls+identity` (certificates name each member; the control plane acts on them),
/// `shared-secret` (a gossip key only: every member holds the cluster secret, one trust
/// domain), `open` (neither).
pub fn trust_mode(tls: bool, gossip_key: bool) -> &'static str {
    match (tls, gossip_key) {
        (true, _) => "tls+identity",
        (false, true) => "shared-secret",
        (false, false) => "open",
    }
}

/// Secure by default (DESIGN.md §6e): a member listening beyond loopback needs a gossip key
/// (sealed gossip and a cluster secret on internal routes) and TLS (encrypted, mutually
/// authenticated HTTP), unless the operator says `--insecure`. Answers what is missing and why.
pub fn exposure(bind: IpAddr, gossip_key: bool, tls: bool, insecure: bool) -> Result<(), String> {
    if bind.is_loopback() || insecure {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !gossip_key {
        missing.push(
            "--gossip-key (without it gossip is unsealed and internal routes take anyone's calls)",
        );
    }
    if !tls {
        missing.push(
            "--tls-cert/--tls-key/--tls-ca (without them HTTP, Raft and joins travel in the clear)",
        );
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "--bind {bind} is reachable beyond this machine, so the member needs {}; or give --insecure to run without",
        missing.join(" and ")
    ))
}

/// The task threads an agent runs on when `--worker-threads` does not say (DESIGN.md §6f):
/// one per four cores the process may use, at least one. A member's work is one pipeline of
/// small steps; on one thread each hand-off is a queue push instead of a cross-thread
/// wake-up, and the Raft log's fsyncs and the dns role's UDP loops have threads of their own.
/// So on a small machine, and above all where members share it (three CP members on two
/// cores), one thread is fastest (BENCHMARKS.md). On a dedicated many-core machine one thread
/// is the limit: on 16 cores 4 threads gave 1.4x the writes/s of one at 64 clients and 1.9x
/// at 256; a quarter of the cores leaves the rest to the threads outside the runtime and to
/// the clients.
pub fn default_worker_threads(cores: usize) -> usize {
    (cores / 4).max(1)
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
    #[error("this build has no control plane (hivemind-lite): run `hivemind agent --control-plane` for a CP member")]
    NoControlPlane,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trust_mode_names_who_holds_what() {
        assert_eq!(trust_mode(true, true), "tls+identity");
        assert_eq!(trust_mode(true, false), "tls+identity");
        assert_eq!(trust_mode(false, true), "shared-secret");
        assert_eq!(trust_mode(false, false), "open");
    }

    #[test]
    fn task_threads_follow_the_cores() {
        assert_eq!(default_worker_threads(0), 1);
        assert_eq!(default_worker_threads(1), 1);
        assert_eq!(
            default_worker_threads(2),
            1,
            "three members on two cores: one each"
        );
        assert_eq!(default_worker_threads(7), 1);
        assert_eq!(default_worker_threads(8), 2);
        assert_eq!(default_worker_threads(16), 4, "measured best on 16 cores");
        assert_eq!(default_worker_threads(64), 16);
    }

    #[test]
    fn beyond_loopback_a_member_needs_a_gossip_key_and_tls_or_insecure() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let lan: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(exposure(lo, false, false, false).is_ok());
        assert!(exposure("::1".parse().unwrap(), false, false, false).is_ok());
        for bind in [any, lan] {
            let both = exposure(bind, false, false, false).unwrap_err();
            assert!(
                both.contains("--gossip-key") && both.contains("--tls-cert"),
                "{both}"
            );
            let tls = exposure(bind, true, false, false).unwrap_err();
            assert!(
                !tls.contains("--gossip-key") && tls.contains("--tls-cert"),
                "{tls}"
            );
            let key = exposure(bind, false, true, false).unwrap_err();
            assert!(
                key.contains("--gossip-key") && !key.contains("--tls-cert"),
                "{key}"
            );
            assert!(exposure(bind, true, true, false).is_ok());
            assert!(exposure(bind, false, false, true).is_ok());
        }
    }
}
