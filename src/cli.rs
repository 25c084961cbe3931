//! The command line: every subcommand and flag of `hivemind` (DESIGN.md §7). Agent flags may
//! also come from `HIVEMIND_*` env vars and a TOML `--config` file (see [`crate::config`]).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod coordination;
pub use coordination::{ElectArgs, LockArgs, WatchArgs};

#[derive(Parser, Debug)]
#[cfg_attr(
    feature = "control-plane",
    command(
        name = "hivemind",
        version,
        about = "Cluster coordination: a Raft control plane, SWIM members, pluggable roles"
    )
)]
#[cfg_attr(
    not(feature = "control-plane"),
    command(
        name = "hivemind-lite",
        version,
        about = "A hivemind member without the control plane: every role and the client CLI"
    )
)]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How client commands reach a member.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// HOST:PORT of any member's HTTP API (`https://HOST:PORT` with --ca-file for TLS).
    #[arg(
        long,
        global = true,
        env = "HIVEMIND_HTTP_ADDR",
        default_value = "127.0.0.1:7700"
    )]
    pub http_addr: String,
    /// Admin token, when the cluster requires one.
    #[arg(long, global = true, env = "HIVEMIND_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster CA (PEM): talk TLS to --http-addr and verify it against this CA.
    #[arg(long, global = true, env = "HIVEMIND_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM) to present over TLS.
    #[arg(long, global = true, env = "HIVEMIND_CLIENT_CERT")]
    pub client_cert: Option<std::path::PathBuf>,
    /// The key of --client-cert (PEM).
    #[arg(long, global = true, env = "HIVEMIND_CLIENT_KEY")]
    pub client_key: Option<std::path::PathBuf>,
    /// Print JSON instead of human-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a member (with --control-plane: a control-plane member).
    #[cfg_attr(
        not(feature = "control-plane"),
        command(about = "Run a member: it joins a cluster through --join")
    )]
    Agent(Box<AgentArgs>),
    /// A whole cluster in one process on loopback, data in a temporary directory.
    #[cfg(feature = "control-plane")]
    Dev(crate::dev::DevArgs),
    /// This member's status and the control plane's health.
    Status,
    /// Members with their state, as SWIM and the registry see them.
    Members,
    /// Ask the member at --http-addr to leave the cluster gracefully and stop.
    Leave,
    /// Control-plane membership, health and epoch.
    Cp {
        #[command(subcommand)]
        command: CpCommand,
    },
    /// The replicated key-value namespace.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// The committed event feed.
    Events(EventsArgs),
    /// Run a command while holding a lock (a lease-backed key; waiters queue in order).
    Lock(LockArgs),
    /// Campaign in an election (or only observe it); prints the leader on every change.
    Elect(ElectArgs),
    /// Keygroups: named, versioned record sets replicated to nodes.
    Keygroup {
        #[command(subcommand)]
        command: KeygroupCommand,
    },
    /// Who is responsible for each (node, keygroup).
    Responsibilities,
    /// ACL policies and tokens (`acl bootstrap` turns ACLs on).
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
    /// Peer-to-peer backup on the members' offered disk (`--roles backup`).
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Save the whole registry.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Print a new random 32-byte gossip key (base64).
    Keygen,
    /// The cluster CA and certificates signed by it (PEM files), like `consul tls`.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Print a shell completion script: `hivemind completions bash > /etc/bash_completion.d/hivemind`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeygroupCommand {
    /// Create APP/TENANT/GROUP with the node of the member at --http-addr as its replica.
    Create {
        name: String,
        /// Record TTL in seconds (DNS answers).
        #[arg(long)]
        ttl: Option<u32>,
        /// Let any node add itself as a replica.
        #[arg(long)]
        open: bool,
    },
    /// One keygroup's config (with its secret if the asking node may see it).
    Get { name: String },
    /// Every keygroup.
    List,
    /// Change a keygroup; the given changes apply together or not at all.
    Update {
        name: String,
        #[arg(long = "add-replica", value_name = "NODE")]
        add_replicas: Vec<String>,
        #[arg(long = "remove-replica", value_name = "NODE")]
        remove_replicas: Vec<String>,
        #[arg(long = "add-trigger", value_name = "NODE")]
        add_triggers: Vec<String>,
        #[arg(long = "remove-trigger", value_name = "NODE")]
        remove_triggers: Vec<String>,
        #[arg(long)]
        ttl: Option<u32>,
        #[arg(long, value_name = "true|false")]
        open: Option<bool>,
        /// Replace the secret records are sealed with.
        #[arg(long)]
        rotate_secret: bool,
    },
    /// Tombstone a keygroup (irreversible).
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// The owner key.
    Key {
        #[command(subcommand)]
        command: BackupKeyCommand,
    },
    /// Take a snapshot now on the member at --http-addr (its --backup-path, or --path).
    Run {
        /// A directory to back up instead of the member's --backup-path (repeatable).
        #[arg(long)]
        path: Vec<PathBuf>,
    },
    /// The owner's snapshots, newest last.
    Snapshots {
        #[command(flatten)]
        owner: OwnerArgs,
    },
    /// Restore a snapshot under DIR (the original absolute paths below it).
    Restore {
        snapshot: String,
        /// The directory to restore into.
        #[arg(long)]
        to: PathBuf,
        /// Only what lies at or below this original path.
        #[arg(long)]
        path: Option<PathBuf>,
        #[command(flatten)]
        owner: OwnerArgs,
    },
    /// Every space: capacity, stored and reserved bytes.
    Spaces,
    /// Heartbeat every space, repair to R copies, read back a share of the chunks.
    Check {
        /// Percent of the chunks to read back and verify (0-100).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        read_data: u8,
    },
    /// Forget a snapshot; chunks nothing else references are dropped at the next heartbeat.
    Forget { snapshot: String },
}

/// Acting as an owner from any machine: its key and member name (a fresh machine restoring).
#[derive(clap::Args, Debug, Default)]
pub struct OwnerArgs {
    /// The owner key file; with --owner, work through any member without the owner member.
    #[arg(long, requires = "owner")]
    pub key: Option<PathBuf>,
    /// The owner's member name.
    #[arg(long, requires = "key")]
    pub owner: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Turn ACLs on: prints the management token, once. From then on a request without a
    /// token gets what the `anonymous` policy allows (nothing unless you create it).
    Bootstrap,
    /// Policies: TOML rules (`cp`, `events`, `backup`, `acl` = "read"|"write"|"deny"; tables
    /// `[kv]`, `[keygroup]`, `[roles]` of prefix = access).
    Policy {
        #[command(subcommand)]
        command: AclPolicyCommand,
    },
    /// Tokens: an accessor (shown) and a secret (printed once, at creation).
    Token {
        #[command(subcommand)]
        command: AclTokenCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AclPolicyCommand {
    /// Create or replace policy NAME.
    Create {
        name: String,
        /// The rules: a TOML file, or - for stdin.
        #[arg(long)]
        rules: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AclTokenCommand {
    /// Make a token holding the policies; prints its accessor and secret.
    Create {
        /// A policy the token holds; repeatable.
        #[arg(long = "policy", required = true)]
        policy: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// The token stops working this long after it is made (e.g. 24h; Consul's
        /// ExpirationTTL). Default: until deleted.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    List,
    Delete {
        accessor: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// The cluster CA.
    Ca {
        #[command(subcommand)]
        command: TlsCaCommand,
    },
    /// A certificate signed by the CA in --dir.
    Cert {
        #[command(subcommand)]
        command: TlsCertCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TlsCaCommand {
    /// Write a new CA: `ca.pem` and `ca-key.pem` (mode 0600) in --dir.
    Create {
        /// Where the files go (never over existing ones).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 1825, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum TlsCertCommand {
    /// Write `NAME.pem` and `NAME-key.pem` (mode 0600), signed by the CA in --dir.
    Create {
        /// A member's certificate: valid for NAME, localhost, 127.0.0.1 and every --ip/--dns,
        /// for serving and for calling other members.
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        server: bool,
        /// A client's certificate (CLI, tools): client authentication only.
        #[arg(long)]
        client: bool,
        /// With --server: a control-plane member's certificate (DESIGN.md §6e-2). Only it
        /// may start a `--control-plane` member, vote, replicate and read the whole registry.
        #[arg(long, conflicts_with = "client")]
        control_plane: bool,
        /// The member's `--name` (a member's certificate names it; the control plane acts
        /// on it, not on what a request says).
        #[arg(long)]
        name: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// An address the server certificate is also valid for (repeatable).
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// A DNS name the server certificate is also valid for (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackupKeyCommand {
    /// Print a new owner key (base64) on stdout.
    Create,
}

#[derive(Subcommand, Debug)]
pub enum CpCommand {
    /// Leader, term, voters, commit index, health.
    Status,
    /// Add or remove control-plane voters.
    Voters {
        #[command(subcommand)]
        command: VotersCommand,
    },
    /// Start a new epoch.
    Epoch {
        #[command(subcommand)]
        command: EpochCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum VotersCommand {
    /// Add a started, uninitialized CP member (as learner, then voter).
    Add {
        /// The new member's HOST:HTTP_PORT.
        addr: String,
        /// Keep it a learner (non-voting).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a voter or learner by member id (16 hex digits).
    Remove { id: String },
}

#[derive(Subcommand, Debug)]
pub enum EpochCommand {
    /// Start a new epoch now; members re-bootstrap.
    Bump {
        #[arg(long, default_value = "operator")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Print a key's value (or, with --prefix, list keys).
    Get {
        /// The key (omit with --prefix).
        key: Option<String>,
        /// List every key starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Answer from the contacted member's local state (not linearizable).
        #[arg(long)]
        stale: bool,
    },
    /// Write a key. VALUE `-` reads standard input.
    Put {
        key: String,
        value: String,
        /// Compare-and-set: 0 = only if absent, N = only if its modify index is N.
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Print the changes of every key under a prefix as they come (--json: one per line).
    Watch(WatchArgs),
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only events with an index above this.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Keep following the feed.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Write the registry (linearizable) as JSON to FILE.
    Save { file: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GossipProfile {
    Lan,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// TOML file with agent settings (keys are flag names; flags and env vars take precedence).
    #[arg(long, env = "HIVEMIND_CONFIG")]
    pub config: Option<PathBuf>,
    /// Member name, unique among live members (default: the host name).
    #[arg(long, env = "HIVEMIND_NAME")]
    pub name: Option<String>,
    /// Node this member belongs to (default: its name).
    #[arg(long, env = "HIVEMIND_NODE")]
    pub node: Option<String>,
    /// Where identity, Raft log and state live.
    #[arg(long, env = "HIVEMIND_DATA_DIR", default_value = "hivemind-data")]
    pub data_dir: PathBuf,
    /// IP to listen on.
    #[arg(long, env = "HIVEMIND_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// IP other members reach this one at (default: --bind; with --bind 0.0.0.0, the local IP
    /// routed toward the --join members, re-checked every --address-check).
    #[arg(long, env = "HIVEMIND_ADVERTISE")]
    pub advertise: Option<IpAddr>,
    /// How often the advertised address is compared with the current one (e.g. 5s).
    #[arg(long, env = "HIVEMIND_ADDRESS_CHECK", default_value = "5s", value_parser = parse_duration)]
    pub address_check: std::time::Duration,
    /// How often roles re-read the configs of the keygroups they serve and of their nodes, to
    /// converge even after missing events (DESIGN.md §5 event [6]; e.g. 60s).
    #[arg(long, env = "HIVEMIND_REREAD_EVERY", default_value = "60s", value_parser = parse_duration)]
    pub reread_every: std::time::Duration,
    /// On control-plane members: the leader reports a member the registry lists live as failed
    /// once its SWIM has not heard of it for this long (a member killed before anyone gossiped
    /// with it, one that left without a quorum); `0` never does (clusters of synthetic members
    /// that do not gossip, as some benchmarks run).
    #[arg(long, env = "HIVEMIND_FAIL_UNHEARD_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub fail_unheard_after: std::time::Duration,
    /// With `--roles trigger`: POST every record change of the keygroups this machine is
    /// responsible for to this URL (JSON, in order, retried with backoff).
    #[arg(long, env = "HIVEMIND_TRIGGER_WEBHOOK")]
    pub trigger_webhook: Option<String>,
    /// With `--roles nginx`: the file it renders (an `http`-level include; default
    /// `<data-dir>/nginx/hivemind.conf`).
    #[arg(long, env = "HIVEMIND_NGINX_CONF")]
    pub nginx_conf: Option<PathBuf>,
    /// With `--roles nginx`: the nginx binary.
    #[arg(long, env = "HIVEMIND_NGINX_BIN", default_value = "nginx")]
    pub nginx_bin: PathBuf,
    /// With `--roles nginx`: a minijinja template over `{services: [{name, keygroup, upstream,
    /// tags, endpoints: [{host, addr, port, socket}]}], listen, domain}` instead of the built-in
    /// one (re-read on every render).
    #[arg(long, env = "HIVEMIND_NGINX_TEMPLATE")]
    pub nginx_template: Option<PathBuf>,
    /// With `--roles nginx`: where the built-in template's server listens.
    #[arg(long, env = "HIVEMIND_NGINX_LISTEN", default_value = "127.0.0.1:8080")]
    pub nginx_listen: std::net::SocketAddr,
    /// With `--roles nginx`: `QUIET,MAX`: a burst of changes renders once, after QUIET without
    /// a change and at the latest MAX after its first (e.g. `200ms,2s`).
    #[arg(long, env = "HIVEMIND_NGINX_DEBOUNCE", default_value = "200ms,2s", value_parser = parse_debounce)]
    pub nginx_debounce: (std::time::Duration, std::time::Duration),
    /// With `--roles nginx`: run nginx as a supervised child (`false`: signal the master in
    /// `--nginx-pid-file` instead).
    #[arg(long, env = "HIVEMIND_NGINX_MANAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub nginx_manage: bool,
    /// With `--roles nginx --nginx-manage false`: the pid file of the nginx to reload.
    #[arg(long, env = "HIVEMIND_NGINX_PID_FILE")]
    pub nginx_pid_file: Option<PathBuf>,
    /// With `--roles backup`: disk this member offers to other owners' chunks, e.g. `20GiB`
    /// (kept under `<data-dir>/backup/`); none without it.
    #[arg(long, env = "HIVEMIND_BACKUP_SPACE", value_parser = hivemind_common::backup::parse_size)]
    pub backup_space: Option<u64>,
    /// With `--roles backup`: a directory this member backs up (absolute; repeatable).
    #[arg(long, env = "HIVEMIND_BACKUP_PATH", value_delimiter = ',')]
    pub backup_path: Vec<PathBuf>,
    /// With `--roles backup`: how often a snapshot is taken (e.g. 1h).
    #[arg(long, env = "HIVEMIND_BACKUP_EVERY", default_value = "1h", value_parser = parse_duration)]
    pub backup_every: std::time::Duration,
    /// With `--roles backup`: copies of every chunk, on distinct members (distinct nodes when
    /// possible).
    #[arg(long, env = "HIVEMIND_BACKUP_REPLICAS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub backup_replicas: u16,
    /// With `--roles backup`: the owner key file (created on first start; default
    /// `<data-dir>/backup.key`). Keep a copy elsewhere: it alone restores on a fresh machine.
    #[arg(long, env = "HIVEMIND_BACKUP_KEY")]
    pub backup_key: Option<PathBuf>,
    /// With `--roles backup`: how often the owner lists its chunks to each space (e.g. 10m).
    #[arg(long, env = "HIVEMIND_BACKUP_HEARTBEAT", default_value = "10m", value_parser = parse_duration)]
    pub backup_heartbeat: std::time::Duration,
    /// With `--roles backup`: how long a space keeps a chunk after the last heartbeat that
    /// listed it (e.g. 24h).
    #[arg(long, env = "HIVEMIND_BACKUP_LEASE", default_value = "24h", value_parser = parse_duration)]
    pub backup_lease: std::time::Duration,
    /// With `--roles backup`: sealed bytes a run places, reserves and sends at once (what it
    /// holds in memory, twice: one batch fills while the one before is sent; what an
    /// interrupted run may send again), e.g. 16MiB.
    #[arg(long, env = "HIVEMIND_BACKUP_BATCH", default_value = "16MiB", value_parser = hivemind_common::backup::parse_size)]
    pub backup_batch: u64,
    #[arg(long, env = "HIVEMIND_HTTP_PORT", default_value_t = 7700)]
    pub http_port: u16,
    #[arg(long, env = "HIVEMIND_GOSSIP_PORT", default_value_t = 7701)]
    pub gossip_port: u16,
    #[arg(long, env = "HIVEMIND_DNS_PORT", default_value_t = 7753)]
    pub dns_port: u16,
    /// Be a control-plane member (a Raft voter or learner).
    #[cfg(feature = "control-plane")]
    #[arg(long, env = "HIVEMIND_CONTROL_PLANE")]
    pub control_plane: bool,
    /// Form a new control plane once this many CP members know each other (3 or 5).
    #[arg(long, env = "HIVEMIND_BOOTSTRAP_EXPECT", value_parser = clap::value_parser!(u16).range(1..=9))]
    pub bootstrap_expect: Option<u16>,
    /// HOST:HTTP_PORT of another member; repeatable.
    #[arg(long, env = "HIVEMIND_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Roles to load, e.g. host,dns.
    #[arg(long, env = "HIVEMIND_ROLES", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Keygroups (app/tenant/group) the roles serve; repeatable.
    #[arg(long, env = "HIVEMIND_KEYGROUP", value_delimiter = ',')]
    pub keygroup: Vec<String>,
    /// DNS domain the dns role is authoritative for.
    #[arg(long, env = "HIVEMIND_DOMAIN", default_value = "hivemind.")]
    pub domain: String,
    /// 32-byte base64 key sealing gossip (see `hivemind keygen`).
    #[arg(long, env = "HIVEMIND_GOSSIP_KEY", hide_env_values = true)]
    pub gossip_key: Option<String>,
    /// This member's TLS certificate (PEM, from `hivemind tls cert create --server`): with
    /// --tls-key and --tls-ca, every connection to and from this member is TLS, and internal
    /// routes demand a certificate from the cluster CA (mutual TLS). Reloaded on SIGHUP.
    #[arg(long, env = "HIVEMIND_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "HIVEMIND_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The cluster CA (PEM): peers' certificates must chain to it.
    #[arg(long, env = "HIVEMIND_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Start on a non-loopback address without --gossip-key or TLS (traffic in the clear, and
    /// anyone who reaches the ports can call internal routes).
    #[arg(long, env = "HIVEMIND_INSECURE")]
    pub insecure: bool,
    /// Token joiners must present.
    #[arg(long, env = "HIVEMIND_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Token required on every /v1 route.
    #[arg(long, env = "HIVEMIND_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[arg(
        long,
        env = "HIVEMIND_GOSSIP_PROFILE",
        value_enum,
        default_value = "lan"
    )]
    pub gossip_profile: GossipProfile,
    /// Bounded wait of writes and linearizable reads before 503 no_quorum (e.g. 5s, 500ms; at
    /// most 60s).
    #[arg(long, env = "HIVEMIND_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Events kept in the feed before the control-plane leader starts a new epoch.
    #[arg(long, env = "HIVEMIND_EVENT_RETENTION", default_value_t = 10_000)]
    pub event_retention: usize,
    /// Raft snapshot (and log purge) every this many entries.
    #[arg(long, env = "HIVEMIND_RAFT_SNAPSHOT_EVERY", default_value_t = 5000)]
    pub raft_snapshot_every: u64,
    /// TEST ONLY, unsafe: a follower reports its Raft appends before they are on disk. Exists
    /// so the fault harness can show that its power-loss nemesis catches a missing fsync
    /// (RELIABILITY.md); never set it on a cluster whose data matters.
    #[arg(long, hide = true)]
    pub unsafe_ack_before_persist: bool,
    /// Threads that run the agent's tasks. Default: one per four cores the process may use,
    /// at least one (`hivemind_member::config::default_worker_threads`). One thread is a
    /// single-threaded event loop: a member's work is a pipeline of small steps, and on one
    /// thread each hand-off is a queue push rather than a cross-thread wake-up. Disk syncs and
    /// DNS over UDP have threads of their own either way.
    #[arg(long, env = "HIVEMIND_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "HIVEMIND_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[arg(long, env = "HIVEMIND_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl AgentArgs {
    /// Whether this member runs the control plane (never in `hivemind-lite`).
    pub fn control_plane(&self) -> bool {
        #[cfg(feature = "control-plane")]
        return self.control_plane;
        #[cfg(not(feature = "control-plane"))]
        return false;
    }
}

pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    hivemind_common::duration::parse(text)
}

/// `QUIET,MAX` (e.g. `200ms,2s`), QUIET not above MAX.
pub fn parse_debounce(text: &str) -> Result<(std::time::Duration, std::time::Duration), String> {
    let (quiet, max) = text
        .split_once(',')
        .ok_or_else(|| format!("{text:?} is not QUIET,MAX (e.g. 200ms,2s)"))?;
    let (quiet, max) = (parse_duration(quiet.trim())?, parse_duration(max.trim())?);
    if quiet.is_zero() || quiet > max {
        return Err(format!("{text:?}: QUIET must be above 0 and not above MAX"));
    }
    Ok((quiet, max))
}
