//! `hivemind-bench gossip`: failure detection and join dissemination of hivemind's SWIM next
//! to serf's, measured the same way for both: N processes on loopback, every process's log read
//! as it is written and stamped on arrival, so "member X saw Y fail" is the moment X logged it.
//!
//! Per run: N-1 members start and converge (each has seen every other up); one more member
//! starts (join: until the first and the last of the others saw it up); then, per trial, a
//! member is killed with SIGKILL (detection: until the first and the last survivor declared it
//! down) and restarted. Finally the peak RSS (VmHWM) of every process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::harness::{hivemind_binary, which, Output, Proc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    Hivemind,
    Serf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchProfile {
    Lan,
    Local,
}

impl BenchProfile {
    pub fn name(self) -> &'static str {
        match self {
            BenchProfile::Lan => "lan",
            BenchProfile::Local => "local",
        }
    }
}

#[derive(Args, Debug)]
pub struct GossipBenchArgs {
    /// Members in the cluster, including the one that joins during the run (at least 5).
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    #[arg(long, value_enum, default_value = "local")]
    pub profile: BenchProfile,
    /// Which systems to measure (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "hivemind")]
    pub systems: Vec<System>,
    /// Kill/restart trials per system.
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
    /// First port used (hivemind uses 2 per member, serf 2 per member from base+1000).
    #[arg(long, default_value_t = 20000)]
    pub base_port: u16,
}

/// One membership observation: process `observer` logged `peer` up or down at `at`.
#[derive(Debug, Clone)]
struct Seen {
    observer: usize,
    peer: String,
    up: bool,
    at: Instant,
}

/// Everything observed so far, shared with the log readers.
#[derive(Default)]
struct Observations {
    seen: Vec<Seen>,
}

impl Observations {
    /// The latest state each observer holds of each peer.
    fn views(&self) -> BTreeMap<usize, BTreeMap<String, bool>> {
        let mut views: BTreeMap<usize, BTreeMap<String, bool>> = BTreeMap::new();
        for s in &self.seen {
            views
                .entry(s.observer)
                .or_default()
                .insert(s.peer.clone(), s.up);
        }
        views
    }

    /// When each of `observers` first saw `peer` in state `up` after `since`.
    fn first_times(
        &self,
        observers: &BTreeSet<usize>,
        peer: &str,
        up: bool,
        since: Instant,
    ) -> BTreeMap<usize, Instant> {
        let mut times = BTreeMap::new();
        for s in &self.seen {
            if s.up == up && s.peer == peer && s.at >= since && observers.contains(&s.observer) {
                times.entry(s.observer).or_insert(s.at);
            }
        }
        times
    }
}

/// A member process and its key (how the others name it in their logs).
struct Member {
    key: String,
    proc: Proc,
}

struct Cluster {
    system: System,
    members: Vec<Member>,
    observations: Arc<Mutex<Observations>>,
    dir: tempfile::TempDir,
}

/// Extracts (peer, up) from one log line of `system`, if it is a membership observation.
fn parse_line(system: System, line: &str) -> Option<(String, bool)> {
    match system {
        System::Hivemind => {
            let up = if line.contains("swim: member up") {
                true
            } else if line.contains("swim: member down") {
                false
            } else {
                return None;
            };
            let plain = strip_ansi(line);
            let start = plain.find("peer=")? + "peer=".len();
            let id: String = plain[start..].chars().take(16).collect();
            (id.len() == 16).then_some((id, up))
        }
        System::Serf => {
            for (marker, up) in [("EventMemberJoin: ", true), ("EventMemberFailed: ", false)] {
                if let Some(at) = line.find(marker) {
                    let rest = &line[at + marker.len()..];
                    return Some((rest.split_whitespace().next()?.to_string(), up));
                }
            }
            None
        }
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Cluster {
    fn new(system: System) -> Result<Self> {
        Ok(Self {
            system,
            members: Vec::new(),
            observations: Arc::default(),
            dir: tempfile::tempdir()?,
        })
    }

    /// Starts (or restarts) process `index`, its log read line by line as it is written.
    fn spawn(&mut self, index: usize) -> Result<()> {
        // A restarted process knows nothing yet: forget what its previous run saw.
        self.observations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .retain(|s| s.observer != index);
        let (system, observations) = (self.system, self.observations.clone());
        let each_line = move |line: &str| {
            if let Some((peer, up)) = parse_line(system, line) {
                let at = Instant::now();
                observations
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .seen
                    .push(Seen {
                        observer: index,
                        peer,
                        up,
                        at,
                    });
            }
        };
        self.members[index]
            .proc
            .start(Output::Lines(Arc::new(each_line)))
    }

    fn kill(&mut self, index: usize) {
        self.members[index].proc.kill();
    }

    fn running(&self) -> BTreeSet<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].proc.is_running())
            .collect()
    }

    /// Waits until every running process holds every other running process up.
    async fn wait_converged(&mut self, deadline: Duration) -> Result<()> {
        let until = Instant::now() + deadline;
        loop {
            let running = self.running();
            let views = self.observations.lock().unwrap().views();
            let converged = running.iter().all(|&i| {
                running.iter().filter(|&&j| j != i).all(|&j| {
                    views
                        .get(&i)
                        .and_then(|v| v.get(&self.members[j].key))
                        .copied()
                        == Some(true)
                })
            });
            if converged {
                return Ok(());
            }
            for i in &running {
                if let Some(status) = self.members[*i].proc.exited() {
                    bail!(
                        "{:?}: {} exited ({status})",
                        self.system,
                        self.members[*i].key
                    );
                }
            }
            if Instant::now() > until {
                bail!(
                    "{:?}: members did not converge within {deadline:?}",
                    self.system
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until each of `observers` saw `peer` in state `up` after `since`; answers
    /// (first, last) delays.
    async fn wait_seen(
        &self,
        observers: &BTreeSet<usize>,
        peer: &str,
        up: bool,
        since: Instant,
        deadline: Duration,
    ) -> Result<(Duration, Duration)> {
        let until = Instant::now() + deadline;
        loop {
            let times = self
                .observations
                .lock()
                .unwrap()
                .first_times(observers, peer, up, since);
            if times.len() == observers.len() {
                let first = times.values().min().expect("nonempty");
                let (slowest, last) = times.iter().max_by_key(|(_, t)| **t).expect("nonempty");
                if *last - *first > Duration::from_secs(1) {
                    eprintln!(
                        "  slowest observer: process {slowest} ({}) after {:.0} ms",
                        self.members[*slowest].key,
                        ms(*last - since)
                    );
                }
                return Ok((*first - since, *last - since));
            }
            if Instant::now() > until {
                bail!(
                    "{:?}: only {}/{} members saw {peer} {} within {deadline:?}",
                    self.system,
                    times.len(),
                    observers.len(),
                    if up { "up" } else { "down" }
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn peak_rss_kib(&self, indexes: impl Iterator<Item = usize>) -> u64 {
        indexes
            .filter_map(|i| self.members[i].proc.peak_rss_kib())
            .max()
            .unwrap_or(0)
    }
}

/// hivemind: 3 control-plane members, the rest plain members joining through the first.
fn hivemind_cluster(args: &GossipBenchArgs) -> Result<Cluster> {
    let program = hivemind_binary()?;
    let mut cluster = Cluster::new(System::Hivemind)?;
    let port = |i: usize| args.base_port + 2 * i as u16;
    let cp_joins: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", port(i))).collect();
    for i in 0..args.members {
        let dir = cluster.dir.path().join(format!("m{i}"));
        let mut a: Vec<String> = [
            "agent",
            "--name",
            &format!("m{i}"),
            "--data-dir",
            &dir.display().to_string(),
            "--http-port",
            &port(i).to_string(),
            "--gossip-port",
            &(port(i) + 1).to_string(),
            "--gossip-profile",
            args.profile.name(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if i < 3 {
            a.extend([
                "--control-plane".into(),
                "--bootstrap-expect".into(),
                "3".into(),
            ]);
        }
        for j in &cp_joins {
            a.extend(["--join".into(), j.clone()]);
        }
        cluster.members.push(Member {
            key: String::new(), // learned from /v1/status once started
            proc: Proc::new(&program, a),
        });
    }
    Ok(cluster)
}

fn serf_cluster(args: &GossipBenchArgs) -> Result<Cluster> {
    let program = which("serf").context("serf is not installed (apt-get install serf)")?;
    let mut cluster = Cluster::new(System::Serf)?;
    let port = |i: usize| args.base_port + 1000 + 2 * i as u16;
    for i in 0..args.members {
        let mut a: Vec<String> = [
            "agent",
            &format!("-node=s{i}"),
            &format!("-bind=127.0.0.1:{}", port(i)),
            &format!("-rpc-addr=127.0.0.1:{}", port(i) + 1),
            &format!("-profile={}", args.profile.name()),
            "-log-level=info",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if i > 0 {
            a.push(format!("-join=127.0.0.1:{}", port(0)));
        }
        cluster.members.push(Member {
            key: format!("s{i}"),
            proc: Proc::new(&program, a),
        });
    }
    Ok(cluster)
}

/// A hivemind member's id, from its `/v1/status` (waits until it answers).
async fn hivemind_id(http_port: u16, deadline: Duration) -> Result<String> {
    let client = hivemind_tls::http_client(None)
        .build()
        .expect("an HTTP client builds");
    let until = Instant::now() + deadline;
    loop {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{http_port}/v1/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if let Ok(status) = response.json::<serde_json::Value>().await {
                if let Some(id) = status["id"].as_str() {
                    return Ok(id.to_string());
                }
            }
        }
        if Instant::now() > until {
            bail!("member on port {http_port} did not answer within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The measurements of one system.
#[derive(Debug, serde::Serialize)]
pub struct GossipResult {
    system: String,
    profile: String,
    members: usize,
    join_first_ms: f64,
    join_last_ms: f64,
    detect_first_ms: Vec<f64>,
    detect_last_ms: Vec<f64>,
    peak_rss_member_kib: u64,
    peak_rss_control_plane_kib: u64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

async fn measure(system: System, args: &GossipBenchArgs) -> Result<GossipResult> {
    let mut cluster = match system {
        System::Hivemind => hivemind_cluster(args)?,
        System::Serf => serf_cluster(args)?,
    };
    let n = args.members;
    let startup = Duration::from_secs(60 + n as u64);
    // N-1 members up and converged.
    for i in 0..n - 1 {
        cluster.spawn(i)?;
        if system == System::Hivemind {
            let port = args.base_port + 2 * i as u16;
            cluster.members[i].key = hivemind_id(port, startup).await?;
        }
        if i == 2 && system == System::Hivemind {
            // Let the control plane form before members join through it.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if i == 0 && system == System::Serf {
            // A serf agent whose -join is refused exits: the first must listen first.
            let port = args.base_port + 1000;
            let until = Instant::now() + startup;
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > until {
                    bail!("serf s0 does not listen on {port}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    cluster.wait_converged(startup).await?;
    eprintln!("{system:?}: {} members converged", n - 1);

    // The join: from start to the first and the last of the others seeing it up.
    let joiner = n - 1;
    let others = cluster.running();
    let t0 = Instant::now();
    cluster.spawn(joiner)?;
    if system == System::Hivemind {
        let port = args.base_port + 2 * joiner as u16;
        cluster.members[joiner].key = hivemind_id(port, startup).await?;
    }
    let key = cluster.members[joiner].key.clone();
    let (join_first, join_last) = cluster.wait_seen(&others, &key, true, t0, startup).await?;
    cluster.wait_converged(startup).await?;
    eprintln!(
        "{system:?}: join seen by all {} others after {:.0} ms",
        others.len(),
        ms(join_last)
    );

    // Failure detection: kill -9 a non-CP member, then bring it back.
    let mut first = Vec::new();
    let mut last = Vec::new();
    for trial in 0..args.trials {
        let victim = 3 + trial % (n - 4);
        let key = cluster.members[victim].key.clone();
        let t0 = Instant::now();
        cluster.kill(victim);
        let survivors = cluster.running();
        let (f, l) = cluster
            .wait_seen(&survivors, &key, false, t0, Duration::from_secs(90))
            .await?;
        eprintln!(
            "{system:?}: trial {trial}: killed member seen down by the first survivor after {:.0} ms, by all {} after {:.0} ms",
            ms(f),
            survivors.len(),
            ms(l)
        );
        first.push(ms(f));
        last.push(ms(l));
        let t1 = Instant::now();
        cluster.spawn(victim)?;
        cluster
            .wait_seen(&survivors, &key, true, t1, startup)
            .await?;
        cluster.wait_converged(startup).await?;
    }
    let members = (if system == System::Hivemind { 3 } else { 0 })..n;
    let result = GossipResult {
        system: format!("{system:?}").to_lowercase(),
        profile: args.profile.name().to_string(),
        members: n,
        join_first_ms: ms(join_first),
        join_last_ms: ms(join_last),
        detect_first_ms: first,
        detect_last_ms: last,
        peak_rss_member_kib: cluster.peak_rss_kib(members),
        peak_rss_control_plane_kib: if system == System::Hivemind {
            cluster.peak_rss_kib(0..3)
        } else {
            0
        },
    };
    drop(cluster);
    Ok(result)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    hivemind_common::stats::percentile(&v, 0.5).unwrap_or(f64::NAN)
}

pub async fn gossip(args: GossipBenchArgs, json: bool) -> Result<()> {
    if args.members < 5 {
        bail!("--members: at least 5 (3 control-plane members, a victim, a joiner)");
    }
    if args.trials == 0 {
        bail!("--trials: at least 1");
    }
    for system in args.systems.clone() {
        let result = measure(system, &args).await?;
        if json {
            println!("{}", serde_json::to_string(&result)?);
        } else {
            println!(
                "{:<9} {:<6} N={:<3} join: first {:>7.1} ms, last {:>7.1} ms | failure seen: first {:>7.1} ms, last {:>7.1} ms (median of {}) | peak RSS: member {:.1} MB{}",
                result.system,
                result.profile,
                result.members,
                result.join_first_ms,
                result.join_last_ms,
                median(&result.detect_first_ms),
                median(&result.detect_last_ms),
                result.detect_last_ms.len(),
                result.peak_rss_member_kib as f64 / 1024.0,
                if result.peak_rss_control_plane_kib > 0 {
                    format!(
                        ", control plane {:.1} MB",
                        result.peak_rss_control_plane_kib as f64 / 1024.0
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hivemind_and_serf_log_lines_are_understood() {
        let line = "\u{1b}[2m2026-11-22T07:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m swim: member down \u{1b}[3mpeer\u{1b}[0m\u{1b}[2m=\u{1b}[0m5b7cafaf17c29920 \u{1b}[3mgeneration\u{1b}[0m\u{1b}[2m=\u{1b}[0m1";
        assert_eq!(
            parse_line(System::Hivemind, line),
            Some(("5b7cafaf17c29920".into(), false))
        );
        assert_eq!(
            parse_line(
                System::Serf,
                "    2026/11/22 07:00:00 [INFO] serf: EventMemberFailed: s12 127.0.0.1"
            ),
            Some(("s12".into(), false))
        );
        assert_eq!(
            parse_line(
                System::Serf,
                "    2026/11/22 07:00:00 [INFO] serf: EventMemberJoin: s1 127.0.0.1"
            ),
            Some(("s1".into(), true))
        );
        assert_eq!(parse_line(System::Serf, "[INFO] agent: joining"), None);
    }
}
