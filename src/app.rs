//! The binaries' one entry point ([`main`]: `hivemind`, and `hivemind-lite` built without the
//! `control-plane` feature): parses the command line and wires the crates together. Signals are
//! handled here and in [`crate::shutdown_on_signal`]; the crates take a cancellation token.

use std::process::ExitCode;

use anyhow::Result;
use base64::Engine;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use hivemind_common::names::is_valid_name;
use hivemind_member::AgentConfig;

use crate::cli::{AgentArgs, Cli, Command, LogFormat};
use crate::{cli, client, config, logging, shutdown_on_signal};

/// Runs the command line (`std::env::args`) and answers the process's exit code.
pub fn main() -> ExitCode {
    let args = match config::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(message) => Cli::command()
            .error(ErrorKind::InvalidValue, message)
            .exit(),
    };
    let cli = Cli::parse_from(args);
    let threads = match &cli.command {
        Command::Agent(args) => Some(args.worker_threads.map_or_else(
            || {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                hivemind_member::config::default_worker_threads(cores)
            },
            usize::from,
        )),
        _ => None,
    };
    let runtime = build_runtime(threads);
    // Built for client commands only: its TLS files are theirs to name when they are wrong.
    let client = client::Client::new(&cli.client);
    macro_rules! client_command {
        ($call:ident ( $($arg:expr),* )) => {
            match &client {
                Ok(c) => runtime.block_on(client::$call(c $(, $arg)*)),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            }
        };
    }
    let result: Result<()> = match cli.command {
        Command::Agent(args) => {
            let (config, log_level, log_format, reload) = agent_config(*args);
            init_logging(&log_level, log_format);
            runtime.spawn(logging::report_openraft_errors());
            tracing::info!(
                worker_threads = runtime.metrics().num_workers(),
                "task runtime"
            );
            runtime.block_on(run_agent(config, reload))
        }
        #[cfg(feature = "control-plane")]
        Command::Dev(args) => {
            init_logging(&args.log_level, LogFormat::Text);
            runtime.spawn(logging::report_openraft_errors());
            runtime.block_on(crate::dev::run(args))
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            let name = Cli::command().get_name().to_string();
            clap_complete::generate(shell, &mut Cli::command(), name, &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Tls { command } => tls_command(command),
        Command::Keygen => {
            let key: [u8; 32] = rand::random();
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            Ok(())
        }
        Command::Status => client_command!(status()),
        Command::Members => client_command!(members()),
        Command::Leave => client_command!(leave()),
        Command::Cp { command } => client_command!(cp(command)),
        Command::Kv { command } => client_command!(kv(command)),
        Command::Events(args) => client_command!(events(args)),
        Command::Lock(args) => client_command!(lock(args)),
        Command::Elect(args) => client_command!(elect(args)),
        Command::Keygroup { command } => client_command!(keygroup(command)),
        Command::Responsibilities => client_command!(responsibilities()),
        Command::Backup { command } => client_command!(backup(command)),
        Command::Acl { command } => client_command!(acl(command)),
        Command::Snapshot { command } => client_command!(snapshot(command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`hivemind events -f | head`) is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>().map(|io| io.kind())
                == Some(std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        // `hivemind lock -- CMD` exits as its command did.
        Err(e) if e.downcast_ref::<client::ChildExited>().is_some() => {
            ExitCode::from(e.downcast_ref::<client::ChildExited>().map_or(1, |c| c.0))
        }
        // `hivemind status` printed why already.
        Err(e) if e.downcast_ref::<client::Unhealthy>().is_some() => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The task runtime: `threads` workers (`None`: tokio's default, one per core, for `dev`'s many
/// members in one process), and for one thread a current-thread runtime (its tasks run on the
/// thread that blocks on it). An agent runs on one thread per four cores, at least one, unless
/// `--worker-threads` says otherwise (`hivemind_member::config::default_worker_threads` says
/// why: a member's work is one pipeline, and on one thread each hand-off is a queue push
/// instead of a cross-thread wake-up). What must not wait behind it has threads of its own:
/// the Raft log's fsyncs (the store's flusher) and the dns role's UDP receive loops.
fn build_runtime(threads: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().expect("tokio runtime")
}

/// A flag's value is unusable: name the flag, exit 2 (like clap's own errors).
fn flag_error(message: String) -> ! {
    Cli::command()
        .error(ErrorKind::ValueValidation, message)
        .exit()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "hivemind".to_string())
}

/// Validates agent flags and turns them into the member runtime's settings.
/// Where a SIGHUP reads a new `advertise` from, and where it sends it.
type AdvertiseReload = (
    std::path::PathBuf,
    tokio::sync::watch::Sender<Option<std::net::IpAddr>>,
);

fn agent_config(args: AgentArgs) -> (AgentConfig, String, LogFormat, Option<AdvertiseReload>) {
    let control_plane = args.control_plane();
    let name = args.name.unwrap_or_else(host_name);
    if !is_valid_name(&name) {
        flag_error(format!(
            "--name: {name:?} is not a valid name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 63 bytes)"
        ));
    }
    let node = args.node.unwrap_or_else(|| name.clone());
    if !is_valid_name(&node) {
        flag_error(format!("--node: {node:?} is not a valid name"));
    }
    if let Some(role) = args
        .roles
        .iter()
        .find(|r| hivemind_common::role_specs::spec(r).is_none())
    {
        let known: Vec<&str> = hivemind_common::role_specs::ROLES
            .iter()
            .map(|r| r.name)
            .collect();
        flag_error(format!(
            "--roles: unknown role {role:?} (known: {})",
            known.join(", ")
        ));
    }
    if let Some(kg) = args
        .keygroup
        .iter()
        .find(|k| k.split('/').count() != 3 || !k.split('/').all(is_valid_name))
    {
        flag_error(format!("--keygroup: {kg:?} is not app/tenant/group"));
    }
    let (advertise, advertise_forced) = match args.advertise {
        Some(ip) if ip.is_unspecified() => flag_error(format!(
            "--advertise: {ip} is not an address others can reach"
        )),
        Some(ip) => (ip, true),
        // Listening everywhere: advertise the IP routed toward the cluster, and keep checking.
        None if args.bind.is_unspecified() => {
            let detected = args.join.iter().find_map(|peer| {
                use std::net::ToSocketAddrs;
                hivemind_member::address::route_to(peer.to_socket_addrs().ok()?.next()?)
            });
            match detected {
                Some(ip) => (ip, false),
                None => flag_error(
                    "--advertise: required when --bind is 0.0.0.0 or :: and no --join address is routable"
                        .to_string(),
                ),
            }
        }
        None => (args.bind, true),
    };
    if args.address_check.is_zero() {
        flag_error("--address-check: must be more than 0".to_string());
    }
    if args.reread_every.is_zero() {
        flag_error("--reread-every: must be more than 0".to_string());
    }
    // A runtime change of --advertise: SIGHUP re-reads the config file's `advertise`, unless
    // the command line or the environment fixed it.
    let advertise_updates = match &args.config {
        Some(path) if !advertise_fixed_outside_file() => {
            let (tx, rx) = tokio::sync::watch::channel(advertise_forced.then_some(advertise));
            Some((path.clone(), tx, rx))
        }
        _ => None,
    };
    if args.bootstrap_expect.is_some() && !control_plane {
        flag_error(
            "--bootstrap-expect: only control-plane members bootstrap (add --control-plane)"
                .to_string(),
        );
    }
    if !control_plane && args.join.is_empty() {
        flag_error("--join: a member outside the control plane joins through at least one member (HOST:PORT)".to_string());
    }
    for join in &args.join {
        let valid = join
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            flag_error(format!("--join: {join:?} is not HOST:PORT"));
        }
    }
    let gossip_key = args.gossip_key.as_ref().map(|key| {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap_or_default();
        <[u8; 32]>::try_from(decoded.as_slice()).unwrap_or_else(|_| {
            flag_error(
                "--gossip-key: must be 32 bytes in base64 (see `hivemind keygen`)".to_string(),
            )
        })
    });
    for (flag, d) in [
        ("--backup-every", args.backup_every),
        ("--backup-heartbeat", args.backup_heartbeat),
        ("--backup-lease", args.backup_lease),
    ] {
        if d.is_zero() {
            flag_error(format!("{flag}: must be more than 0"));
        }
    }
    if !(1 << 20..=32 << 20).contains(&args.backup_batch) {
        flag_error(
            "--backup-batch: must be 1MiB to 32MiB (a space takes uploads of up to 48MiB)"
                .to_string(),
        );
    }
    if let Some(bad) = args.backup_path.iter().find(|p| !p.is_absolute()) {
        flag_error(format!(
            "--backup-path: {} is not an absolute path",
            bad.display()
        ));
    }
    if let Some(key) = &args.backup_key {
        if let Ok(text) = std::fs::read_to_string(key) {
            if let Err(e) = hivemind_backup_role::crypto::OwnerKey::parse(&text) {
                flag_error(format!("--backup-key: {}: {e}", key.display()));
            }
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (None, None, None) => None,
        (Some(cert), Some(key), Some(ca)) => {
            let files = hivemind_tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            };
            match hivemind_tls::Tls::load(files, advertise) {
                Ok(tls) => {
                    // DESIGN.md §6e-2: the certificate says who this member is.
                    if let Err(e) = hivemind_tls::identity::check_own(
                        tls.identity(),
                        &cert.display().to_string(),
                        &name,
                        control_plane,
                    ) {
                        flag_error(e.to_string());
                    }
                    Some(std::sync::Arc::new(tls))
                }
                Err(e) => flag_error(format!("--tls-cert: {e}")),
            }
        }
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                ("--tls-cert", cert.is_none()),
                ("--tls-key", key.is_none()),
                ("--tls-ca", ca.is_none()),
            ]
            .into_iter()
            .filter_map(|(flag, absent)| absent.then_some(flag))
            .collect();
            flag_error(format!(
                "{}: TLS needs --tls-cert, --tls-key and --tls-ca together",
                missing.join(", ")
            ))
        }
    };
    if let Err(e) = hivemind_member::config::exposure(
        args.bind,
        gossip_key.is_some(),
        tls.is_some(),
        args.insecure,
    ) {
        flag_error(e);
    }
    // A bounded wait (DESIGN.md §3): a client waiting longer than a minute for a quorum is
    // better told `no_quorum` and left to retry.
    if args.request_timeout.is_zero() || args.request_timeout > std::time::Duration::from_secs(60) {
        flag_error("--request-timeout: must be more than 0 and at most 60s".to_string());
    }
    let config = AgentConfig {
        name,
        node,
        data_dir: args.data_dir,
        bind: args.bind,
        advertise,
        advertise_forced,
        advertise_updates: advertise_updates.as_ref().map(|(_, _, rx)| rx.clone()),
        address_check: args.address_check,
        reread_every: args.reread_every,
        fail_unheard_after: (!args.fail_unheard_after.is_zero()).then_some(args.fail_unheard_after),
        trigger_webhook: args.trigger_webhook.clone(),
        nginx: hivemind_common::role::NginxSettings {
            conf: args.nginx_conf.clone(),
            bin: args.nginx_bin.clone(),
            template: args.nginx_template.clone(),
            listen: args.nginx_listen,
            debounce: args.nginx_debounce,
            manage: args.nginx_manage,
            pid_file: args.nginx_pid_file.clone(),
        },
        backup: hivemind_common::role::BackupSettings {
            space: args.backup_space,
            paths: args.backup_path.clone(),
            every: args.backup_every,
            replicas: usize::from(args.backup_replicas),
            key_file: args.backup_key.clone(),
            heartbeat: args.backup_heartbeat,
            lease: args.backup_lease,
            batch: args.backup_batch,
        },
        http_port: args.http_port,
        gossip_port: args.gossip_port,
        control_plane,
        bootstrap_expect: args.bootstrap_expect.map(usize::from),
        join: args.join,
        roles: args.roles,
        keygroups: if args.keygroup.is_empty() {
            vec!["hivemind/default/hosts".to_string()]
        } else {
            args.keygroup
        },
        domain: normalize_domain(&args.domain).unwrap_or_else(|| {
            flag_error(format!(
                "--domain: {:?} is not a DNS name (labels of letters, digits and '-')",
                args.domain
            ))
        }),
        dns_port: args.dns_port,
        admin_token: args.admin_token,
        join_token: args.join_token,
        request_timeout: args.request_timeout,
        raft_snapshot_every: args.raft_snapshot_every.max(1),
        unsafe_ack_before_persist: args.unsafe_ack_before_persist,
        event_retention: args.event_retention.max(1),
        leave_on_shutdown: true,
        gossip_key,
        tls,
        gossip_profile: match args.gossip_profile {
            cli::GossipProfile::Lan => hivemind_member::gossip::Profile::Lan,
            cli::GossipProfile::Local => hivemind_member::gossip::Profile::Local,
        },
    };
    let reload = advertise_updates.map(|(path, tx, _)| (path, tx));
    (config, args.log_level, args.log_format, reload)
}

fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::util::SubscriberInitExt;
    crate::logging::subscriber(level, format)
        .unwrap_or_else(|e| flag_error(e))
        .init();
}

/// `--domain` in lower case with its trailing dot, if every label is letters, digits and `-`.
fn normalize_domain(domain: &str) -> Option<String> {
    let trimmed = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    let valid = !trimmed.is_empty()
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    valid.then(|| format!("{trimmed}."))
}

/// Whether `--advertise` came from the command line or the environment (which a config
/// reload must not override).
fn advertise_fixed_outside_file() -> bool {
    std::env::var_os("HIVEMIND_ADVERTISE").is_some()
        || std::env::args().any(|a| a == "--advertise" || a.starts_with("--advertise="))
}

/// On every SIGHUP, re-reads the config file's `advertise` and hands it to the watchdog.
fn reload_advertise_on_sighup((path, tx): AdvertiseReload) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot install the SIGHUP handler; config reloads are off");
            return;
        };
        while hup.recv().await.is_some() {
            match config::advertise_in(&path) {
                Ok(advertise) => {
                    tracing::info!(?advertise, "SIGHUP: config reloaded");
                    tx.send_replace(advertise);
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: config not reloaded"),
            }
        }
    });
}

/// On every SIGHUP, reads the TLS files again; new connections use them once they pass the
/// startup checks, and a failed reload keeps the old ones (an operator must fix the files).
fn reload_tls_on_sighup(tls: std::sync::Arc<hivemind_tls::Tls>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot install the SIGHUP handler; TLS reloads are off");
            return;
        };
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS certificates not reloaded; the old ones stay")
                }
            }
        }
    });
}

/// Runs the agent until SIGINT or SIGTERM, then stops it gracefully.
async fn run_agent(config: AgentConfig, reload: Option<AdvertiseReload>) -> Result<()> {
    if let Some(reload) = reload {
        reload_advertise_on_sighup(reload);
    }
    if let Some(tls) = &config.tls {
        reload_tls_on_sighup(tls.clone());
    }
    hivemind_member::run(config, shutdown_on_signal()).await?;
    Ok(())
}

/// `hivemind tls ...`: prints the files it wrote.
fn tls_command(command: crate::cli::TlsCommand) -> Result<()> {
    use crate::cli::{TlsCaCommand, TlsCertCommand, TlsCommand};
    use crate::tls;
    let (cert, key) = match command {
        TlsCommand::Ca {
            command: TlsCaCommand::Create { dir, days },
        } => tls::create_ca(&dir, days)?,
        TlsCommand::Cert {
            command:
                TlsCertCommand::Create {
                    server,
                    client: _,
                    control_plane,
                    name,
                    dir,
                    ip,
                    dns,
                    days,
                },
        } => {
            let kind = if server && control_plane {
                tls::Kind::ControlPlane
            } else if server {
                tls::Kind::Server
            } else {
                tls::Kind::Client
            };
            tls::create_cert(&dir, &name, kind, &ip, &dns, days)?
        }
    };
    println!("{}\n{}", cert.display(), key.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_is_a_current_thread_runtime() {
        use tokio::runtime::RuntimeFlavor;
        assert_eq!(
            build_runtime(Some(1)).handle().runtime_flavor(),
            RuntimeFlavor::CurrentThread
        );
        let two = build_runtime(Some(2));
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(two.metrics().num_workers(), 2);
    }
}
