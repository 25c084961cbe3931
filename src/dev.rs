//! `hivemind dev`: a whole cluster in one process on loopback, for trying hivemind out: three
//! control-plane members (the first serves HTTP on 127.0.0.1:7700, so client commands work
//! without flags), two host members (`web-1` registers a sample service) and one dns member
//! (DNS on base+53, 7753 by default), all with the `local` gossip profile. Data lives in a
//! temporary directory removed on exit, unless `--data-dir` keeps it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hivemind_dns_role::DnsRecordsView;
use hivemind_member::http::member_api::StatusView;
use hivemind_member::AgentConfig;
use tokio::task::JoinSet;

/// Control-plane members, then the role members: (name, roles).
const MEMBERS: [(&str, &[&str]); 6] = [
    ("cp1", &[]),
    ("cp2", &[]),
    ("cp3", &[]),
    ("web-1", &["host"]),
    ("web-2", &["host"]),
    ("ns-1", &["dns"]),
];
const CONTROL_PLANE: usize = 3;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Keep the cluster's data here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP port of the first member; member i uses base + 10*i (HTTP) and +1 (gossip).
    #[arg(long, default_value_t = 7700)]
    pub base_port: u16,
    /// Log filter (openraft's election chatter is hidden by default).
    #[arg(long, default_value = "warn,openraft=error")]
    pub log_level: String,
}

pub async fn run(args: DevArgs) -> Result<()> {
    let count = MEMBERS.len() as u16;
    if args.base_port.checked_add(10 * count).is_none() {
        bail!(
            "--base-port: {} leaves no room for {count} members",
            args.base_port
        );
    }
    // With --data-dir the data is kept; otherwise a temporary directory, removed on exit.
    let temp = match &args.data_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("hivemind-dev-").tempdir()?),
    };
    let root = match &temp {
        Some(temp) => temp.path().to_path_buf(),
        None => args
            .data_dir
            .clone()
            .expect("no temp dir means --data-dir was given"),
    };
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let http_port = |i: u16| args.base_port + 10 * i;
    let dns_port = args.base_port + 53;
    let join: Vec<String> = (0..CONTROL_PLANE as u16)
        .map(|i| format!("127.0.0.1:{}", http_port(i)))
        .collect();

    let shutdown = crate::shutdown_on_signal();
    let mut agents = JoinSet::new();
    for (i, (name, roles)) in MEMBERS.iter().enumerate() {
        let (i, name) = (i as u16, name.to_string());
        let control_plane = usize::from(i) < CONTROL_PLANE;
        let config = AgentConfig {
            data_dir: root.join(&name),
            node: name.clone(),
            name,
            bind: loopback,
            advertise: loopback,
            http_port: http_port(i),
            gossip_port: http_port(i) + 1,
            control_plane,
            bootstrap_expect: control_plane.then_some(CONTROL_PLANE),
            join: join.clone(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            keygroups: vec!["hivemind/default/hosts".to_string()],
            domain: "hivemind.".to_string(),
            dns_port,
            admin_token: None,
            join_token: None,
            request_timeout: Duration::from_secs(5),
            raft_snapshot_every: 5000,
            unsafe_ack_before_persist: false,
            event_retention: 10_000,
            // A throwaway cluster (temporary data) just stops; a kept one leaves properly.
            leave_on_shutdown: args.data_dir.is_some(),
            gossip_key: None,
            tls: None,
            advertise_forced: true,
            advertise_updates: None,
            address_check: Duration::from_secs(5),
            reread_every: Duration::from_secs(60),
            fail_unheard_after: Some(Duration::from_secs(30)),
            trigger_webhook: None,
            nginx: Default::default(),
            backup: Default::default(),
            gossip_profile: hivemind_member::gossip::Profile::Local,
        };
        agents.spawn(hivemind_member::run(config, shutdown.child_token()));
    }

    let started = Instant::now();
    let http = hivemind_tls::http_client(None)
        .build()
        .expect("an HTTP client builds");
    loop {
        let mut ready = 0;
        for i in 0..count {
            let url = format!("http://127.0.0.1:{}/v1/status", http_port(i));
            if let Ok(response) = http.get(url).send().await {
                let status: Option<StatusView> = response.json().await.ok();
                ready += u16::from(status.is_some_and(|s| s.ready));
            }
        }
        if ready == count {
            break;
        }
        if let Some(result) = agents.try_join_next() {
            shutdown.cancel();
            result
                .context("a member panicked")?
                .context("a member failed to start")?;
        }
        if started.elapsed() > Duration::from_secs(30) {
            shutdown.cancel();
            bail!("the dev cluster did not become ready within 30 s");
        }
        if shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    if !shutdown.is_cancelled() {
        // A sample service, so that SRV answers have something to show.
        let web1 = format!("http://127.0.0.1:{}/v1/roles/host/services", http_port(3));
        http.put(web1)
            .json(&serde_json::json!([{"name": "http", "port": 8080, "proto": "tcp"}]))
            .send()
            .await
            .context("cannot register web-1's sample service")?;
        // Ready means the dns member answers for both hosts, service included.
        let records = format!("http://127.0.0.1:{}/v1/roles/dns/records", http_port(5));
        loop {
            let held: Option<DnsRecordsView> = match http.get(&records).send().await {
                Ok(response) => response.json().await.ok(),
                Err(_) => None,
            };
            let held = held.map(|v| v.held.records).unwrap_or_default();
            let has = |host: &str, service: bool| {
                held.iter()
                    .any(|r| r.host == host && (!service || !r.services.is_empty()))
            };
            if has("web-1", true) && has("web-2", false) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                shutdown.cancel();
                bail!("the dev cluster's dns member did not learn both hosts within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "hivemind dev cluster ready in {:.1} s: {CONTROL_PLANE} control-plane members, 2 hosts, 1 dns member; data in {}{}",
            started.elapsed().as_secs_f64(),
            root.display(),
            if temp.is_some() {
                " (removed on exit)"
            } else {
                ""
            }
        );
        println!();
        println!(
            "  {:<7} {:<16} {:<18} {:<18}",
            "MEMBER", "ROLES", "HTTP", "GOSSIP"
        );
        for (i, (name, roles)) in MEMBERS.iter().enumerate() {
            let i = i as u16;
            let roles = if usize::from(i) < CONTROL_PLANE {
                "control-plane".to_string()
            } else {
                roles.join(",")
            };
            println!(
                "  {name:<7} {roles:<16} 127.0.0.1:{:<8} 127.0.0.1:{:<8}",
                http_port(i),
                http_port(i) + 1
            );
        }
        println!("  DNS: 127.0.0.1:{dns_port} (UDP and TCP, zone hivemind.)");
        println!("  Dashboard: http://127.0.0.1:{}/", args.base_port);
        let flag = if args.base_port == 7700 {
            String::new()
        } else {
            format!(" --http-addr 127.0.0.1:{}", args.base_port)
        };
        println!();
        println!("Try:");
        println!("  dig @127.0.0.1 -p {dns_port} web-1.host.hivemind.");
        println!("  dig @127.0.0.1 -p {dns_port} _http._tcp.hosts.default.hivemind.hivemind. SRV");
        println!("  hivemind members{flag}");
        println!("  hivemind kv put{flag} greeting hello && hivemind kv get{flag} greeting");
        println!();
        println!("Stop with Ctrl-C.");
    }

    shutdown.cancelled().await;
    let mut failures = Vec::new();
    while let Some(result) = agents.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    drop(temp);
    if !failures.is_empty() {
        bail!("members stopped with errors: {}", failures.join("; "));
    }
    Ok(())
}
