//! `hivemind-bench failover`: responsibility failover of a node of several dns machines.
//!
//! Starts 3 control-plane members, one host (`web-1`) and `--machines` dns machines sharing
//! node `ns`, all on 127.0.0.1 with the chosen gossip profile. Per trial: once exactly one
//! machine holds the keygroup and the others follow it, the holder is killed with SIGKILL and
//! two moments are taken, polling every 5 ms:
//! - detection: the control plane lists the killed machine as failed (SWIM's verdict,
//!   committed);
//! - failover: a surviving machine received its first record from the host on its own
//!   subscription (it claimed the keygroup, subscribed, and the host's stream delivered).
//!
//! The killed machine is then restarted from its data dir and the next trial waits until it
//! follows the new holder.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hivemind_common::stats::percentile_f64 as percentile;
use serde_json::{json, Value};

use crate::gossip::BenchProfile;
use crate::harness::{agent_args, hivemind_binary, join_flags, wait, Output, Proc};

const KEYGROUP: &str = "hivemind/default/hosts";

#[derive(Args, Debug)]
pub struct FailoverArgs {
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// dns machines in the node (at least 2).
    #[arg(long, default_value_t = 3)]
    pub machines: usize,
    #[arg(long, value_enum, default_value = "local")]
    pub profile: BenchProfile,
    /// First of the loopback ports used (two per member: HTTP and gossip; one more per dns
    /// machine for DNS).
    #[arg(long, default_value_t = 19400)]
    pub base_port: u16,
}

struct Member {
    name: String,
    http_port: u16,
    proc: Proc,
}

struct Cluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Cluster {
    /// Starts (or restarts) member `index`, its log appended to `<name>.log`.
    fn spawn(&mut self, index: usize) -> Result<()> {
        let m = &mut self.members[index];
        let log = self.dir.path().join(format!("{}.log", m.name));
        m.proc.start(Output::File(log))
    }

    fn kill(&mut self, index: usize) {
        self.members[index].proc.kill();
    }

    async fn get(&self, index: usize, path: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.members[index].http_port);
        let response = self
            .http
            .get(url)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// The holder's member index once one machine holds the keygroup and every other running
    /// machine follows it.
    async fn settled(&self, machines: &[usize]) -> Option<usize> {
        let list = self.get(0, "/v1/responsibilities").await?;
        let holder = list
            .as_array()?
            .iter()
            .find(|r| r["node"] == "ns" && r["keygroup"] == KEYGROUP)?["machine_name"]
            .as_str()?
            .to_string();
        let holder = self.index_of(&holder)?;
        for &i in machines {
            let status = self.get(i, "/v1/roles/dns/status").await?;
            let position = &status["keygroups"][KEYGROUP];
            let ok = if i == holder {
                position["claim"] == "mine" && position["subscriptions"].as_u64()? >= 1
            } else {
                position["claim"] == "held_by" && position["subscriptions"] == 1
            };
            if !ok {
                return None;
            }
        }
        Some(holder)
    }

    async fn received_from_hosts(&self, index: usize) -> Option<u64> {
        self.get(index, "/v1/roles/dns/status").await?["received_from_hosts"].as_u64()
    }

    async fn failed(&self, name: &str) -> bool {
        let Some(members) = self.get(0, "/v1/members?stale=true").await else {
            return false;
        };
        members.as_array().is_some_and(|list| {
            list.iter()
                .any(|m| m["name"] == name && m["state"] == "failed")
        })
    }
}

fn member(
    program: &Path,
    dir: &Path,
    name: &str,
    http_port: u16,
    profile: &str,
    extra: &[String],
) -> Member {
    Member {
        name: name.to_string(),
        http_port,
        proc: Proc::new(program, agent_args(dir, name, http_port, profile, extra)),
    }
}

pub async fn failover(args: FailoverArgs, json_out: bool) -> Result<()> {
    if args.machines < 2 {
        bail!("--machines: at least 2 dns machines are needed for a failover");
    }
    let profile = args.profile.name();
    let program = hivemind_binary()?;
    let dir = tempfile::tempdir()?;
    let port = |i: usize| args.base_port + 3 * i as u16;
    let joins = join_flags((0..3).map(port));
    let mut members = Vec::new();
    for i in 0..3 {
        let mut extra = vec![
            "--control-plane".to_string(),
            "--bootstrap-expect".into(),
            "3".into(),
        ];
        extra.extend(joins.iter().cloned());
        members.push(member(
            &program,
            dir.path(),
            &format!("cp{}", i + 1),
            port(i),
            profile,
            &extra,
        ));
    }
    let mut extra = joins.clone();
    extra.extend(["--roles".into(), "host".into()]);
    members.push(member(
        &program,
        dir.path(),
        "web-1",
        port(3),
        profile,
        &extra,
    ));
    let mut machines = Vec::new();
    for m in 0..args.machines {
        let i = 4 + m;
        let mut extra = joins.clone();
        extra.extend([
            "--roles".into(),
            "dns".into(),
            "--node".into(),
            "ns".into(),
            "--dns-port".into(),
            (port(i) + 2).to_string(),
        ]);
        members.push(member(
            &program,
            dir.path(),
            &format!("ns-{}", m + 1),
            port(i),
            profile,
            &extra,
        ));
        machines.push(i);
    }
    let mut cluster = Cluster {
        members,
        dir,
        http: hivemind_tls::http_client(None)
            .build()
            .expect("an HTTP client builds"),
    };
    for i in 0..cluster.members.len() {
        cluster.spawn(i)?;
    }
    let mut detection = Vec::new();
    let mut failover = Vec::new();
    for trial in 0..args.trials {
        let holder = wait(
            "one holder, the other machines following it",
            Duration::from_secs(60),
            || cluster.settled(&machines),
        )
        .await?;
        let name = cluster.members[holder].name.clone();
        let others: Vec<usize> = machines.iter().copied().filter(|&i| i != holder).collect();
        let mut baseline = Vec::new();
        for &i in &others {
            baseline.push(cluster.received_from_hosts(i).await.context("dns status")?);
        }
        let killed_at = Instant::now();
        cluster.kill(holder);
        let mut detected = None;
        let mut took = None;
        while took.is_none() || detected.is_none() {
            if killed_at.elapsed() > Duration::from_secs(60) {
                bail!("no failover within 60 s of killing {name}");
            }
            if detected.is_none() && cluster.failed(&name).await {
                detected = Some(killed_at.elapsed());
            }
            if took.is_none() {
                for (&i, &before) in others.iter().zip(baseline.iter()) {
                    if cluster
                        .received_from_hosts(i)
                        .await
                        .is_some_and(|n| n > before)
                    {
                        took = Some(killed_at.elapsed());
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (detected, took) = (detected.unwrap_or_default(), took.unwrap_or_default());
        let (d, f) = (detected.as_secs_f64() * 1000.0, took.as_secs_f64() * 1000.0);
        eprintln!("trial {}: {name} killed; failed in the CP after {d:.0} ms, new holder receiving after {f:.0} ms", trial + 1);
        detection.push(d);
        failover.push(f);
        cluster.spawn(holder)?;
    }
    detection.sort_by(f64::total_cmp);
    failover.sort_by(f64::total_cmp);
    let (d50, d99, f50, f99) = (
        percentile(&detection, 0.5),
        percentile(&detection, 0.99),
        percentile(&failover, 0.5),
        percentile(&failover, 0.99),
    );
    if json_out {
        println!(
            "{}",
            json!({"trials": args.trials, "machines": args.machines, "profile": profile,
                   "detection_p50_ms": d50, "detection_p99_ms": d99,
                   "failover_p50_ms": f50, "failover_p99_ms": f99})
        );
    } else {
        println!(
            "failover ({} trials, {} dns machines, profile {profile}): detection p50 {d50:.0} ms p99 {d99:.0} ms; failover p50 {f50:.0} ms p99 {f99:.0} ms ({:.2}x detection at p50)",
            args.trials,
            args.machines,
            f50 / d50
        );
    }
    Ok(())
}
