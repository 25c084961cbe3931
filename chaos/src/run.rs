//! One fault-injection run: start the members, run the workload, inject and heal faults cycle
//! after cycle, then check the history and the end state (IO; the rules it applies live in
//! [`crate::nemesis`], [`crate::checker`] and [`crate::report`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::checker;
use crate::churn::{self, ChurnLog};
use crate::cluster::{self, Cluster, ClusterSpec};
use crate::membership::{self, ChurnKind, ChurnOp, ChurnOutcome};
use crate::nemesis::{self, Abilities, Fault, Schedule};
use crate::net::{self, Net};
use crate::pki::{Access, Pki};
use crate::report::{Report, Window};
use crate::workload::{self, Recorder};

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub members: usize,
    pub cycles: usize,
    pub seed: u64,
    pub clients: usize,
    /// The `hivemind` binary under test.
    pub bin: PathBuf,
    /// Where data directories and logs go.
    pub dir: PathBuf,
    /// How long a fault is held (milliseconds, drawn between the two).
    pub hold_ms: (u64, u64),
    /// Quiet time after the cluster recovered from one fault, before the next.
    pub gap: Duration,
    /// Members in network namespaces (root): partitions. Otherwise loopback.
    pub namespaces: bool,
    /// Data directories on the power-loss filesystem: power-loss faults.
    pub power_loss: bool,
    /// Only these faults (empty: the whole repertoire the abilities allow).
    pub only: Vec<Fault>,
    /// Extra flags for every member.
    pub extra_args: Vec<String>,
    /// Synthetic role members joining, leaving and claiming keygroups beside the KV clients.
    pub churn: bool,
    /// Every member, and every synthetic member, on TLS with a certificate of its own
    /// (DESIGN.md §6e-2).
    pub tls: bool,
    /// Lock clients beside the KV clients (DESIGN.md §6h), checked by fence.
    pub locks: usize,
}

/// Why a run could not be carried out (its findings are in the [`Report`], not here).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("network: {0}")]
    Net(#[from] net::NetError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the cluster never became healthy: {0}")]
    NeverHealthy(String),
}

/// Runs the configured cycles and reports what was found.
pub async fn run(config: &RunConfig) -> Result<Report, RunError> {
    // Runs in one process (tests) and concurrent processes get namespaces of their own.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run_id = ((std::process::id() + 37 * run) % 200 + 1) as u8;
    let net = if config.namespaces {
        Net::namespaces(config.members, run_id)?
    } else {
        Net::loopback(config.members)
    };
    let abilities = Abilities {
        members: config.members,
        partitions: net.in_namespaces(),
        power_loss: config.power_loss,
    };
    let access = match config.tls {
        true => {
            let cp: Vec<(String, String)> = (0..config.members)
                .map(|m| (cluster::member_name(m), net.member_ip(m)))
                .collect();
            let dir = config.dir.join("pki");
            std::fs::create_dir_all(&dir)?;
            Access::tls(Pki::create(&config.bin, &dir, &cp)?)
        }
        false => Access::plain(),
    };
    let spec = ClusterSpec {
        members: config.members,
        bin: &config.bin,
        dir: &config.dir,
        power_loss: config.power_loss,
        extra_args: config.extra_args.clone(),
        pki: access.pki(),
    };
    let mut cluster = Cluster::start(net, &spec)?;
    let addrs: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.http_addr.clone())
        .collect();
    let http = access.client(None, Duration::from_secs(2));
    let web = Web {
        http: &http,
        access: &access,
    };
    wait_healthy(web, &addrs, Duration::from_secs(60))
        .await
        .map_err(RunError::NeverHealthy)?;

    if config.churn {
        churn::prepare(&addrs[0], &access)
            .await
            .map_err(RunError::NeverHealthy)?;
    }
    let started = Instant::now();
    let recorder = Recorder::new(started);
    let stop = CancellationToken::new();
    let churn_log = ChurnLog::default();
    let churner = config.churn.then(|| {
        tokio::spawn(churn::churn(
            addrs.clone(),
            config.seed,
            churn_log.clone(),
            stop.clone(),
            access.clone(),
        ))
    });
    let lock_log = std::sync::Arc::new(std::sync::Mutex::new(crate::locks::LockLog::default()));
    let lockers: Vec<_> = (0..config.locks)
        .map(|c| {
            tokio::spawn(crate::locks::client(
                c,
                access.clone(),
                addrs.clone(),
                recorder.clone(),
                lock_log.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let clients: Vec<_> = (0..config.clients)
        .map(|c| {
            tokio::spawn(workload::client(
                c,
                access.clone(),
                addrs.clone(),
                config.seed,
                recorder.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let mut schedule = Schedule::new(config.seed, abilities);
    let mut windows = Vec::new();
    let mut unrecovered = Vec::new();
    tokio::time::sleep(config.gap).await;
    for cycle in 0..config.cycles {
        let fault = next_fault(&mut schedule, &config.only);
        let leader = find_leader(web, &addrs).await.unwrap_or(0);
        inject(&mut cluster, &mut schedule, fault, leader)?;
        // From when the fault is fully in force (a partition takes one nft call per member).
        let start_ns = recorder.now_ns();
        let hold = schedule.hold_ms(config.hold_ms.0, config.hold_ms.1);
        tokio::time::sleep(Duration::from_millis(hold)).await;
        cluster.net.heal()?;
        // After a power loss of everyone the old leader, which held the newest log, boots last,
        // two seconds after the others: long enough for them to elect one of themselves from
        // what their disks kept. Otherwise killed members come back in a random order, up to
        // half a second apart; a kill of all restarts them at once.
        let mut order = schedule.pick(config.members, config.members);
        if fault == Fault::PowerLossAll {
            order.retain(|m| *m != leader);
            order.push(leader);
        }
        for m in order {
            if !cluster.is_running(m) && fault != Fault::KillAll {
                let pause = match fault == Fault::PowerLossAll && m == leader {
                    true => 2000,
                    false => schedule.hold_ms(0, 500),
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            cluster.start_member(m)?;
        }
        cluster.restore_all()?;
        let healed_ns = recorder.now_ns();
        if let Err(e) = wait_healthy(web, &addrs, Duration::from_secs(30)).await {
            unrecovered.push(format!("cycle {cycle} ({fault:?}): {e}"));
        }
        windows.push(Window {
            fault,
            start_ns,
            healed_ns,
            recovered_ns: recorder.now_ns(),
        });
        tokio::time::sleep(config.gap).await;
    }
    stop.cancel();
    for c in clients.into_iter().chain(lockers) {
        let _ = c.await;
    }
    if let Some(churner) = churner {
        let _ = churner.await;
    }

    // Every key once more, now that everything healed: acknowledged writes must be there.
    let keys: BTreeSet<String> = recorder.events().into_iter().map(|e| e.key).collect();
    let keys: Vec<String> = keys.into_iter().collect();
    let _ = wait_healthy(web, &addrs, Duration::from_secs(30)).await;
    let unread = workload::final_reads(&access, &addrs[0], &keys, &recorder).await;
    let history = recorder.events();
    let violations = checker::check(&history);
    let mut end_state = unrecovered;
    if unread > 0 {
        end_state.push(format!(
            "{unread} of {} final reads not sent: the cluster did not answer them within {:?}",
            keys.len(),
            workload::FINAL_READS_WITHIN
        ));
    }
    end_state.extend(converged(web, &addrs).await.err());
    let lock_log = lock_log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let lock_problems = match config.locks {
        0 => Vec::new(),
        _ => {
            let from_log = crate::locks::read_fenced(&access, &addrs[0])
                .await
                .unwrap_or_default();
            let writes = crate::locks::merged(from_log, &lock_log.acked);
            crate::locks::check(&writes, &lock_log.refused)
        }
    };
    let churn_ops = churn_log.ops();
    let churn_problems = match config.churn {
        true => membership_problems(web, &addrs[0], &churn_ops).await,
        false => Vec::new(),
    };
    let logs = cluster.logs();
    let power_lost_bytes = cluster.power_lost_bytes();
    drop(cluster);
    Ok(Report::new(
        config.members,
        abilities,
        &history,
        windows,
        violations,
        end_state,
        &logs,
        power_lost_bytes,
    )
    .with_churn(&churn_ops, churn_problems)
    .with_locks(&lock_log, lock_problems))
}

/// The membership rules on the final registry of `member` (the members converged): the
/// acknowledged joins and leaves, and one holder per responsibility in its event feed.
async fn membership_problems(web: Web<'_>, member: &str, ops: &[ChurnOp]) -> Vec<String> {
    let url = web.access.url(member, "/v1/cp/snapshot?stale=true");
    let registry: serde_json::Value = match web.http.get(&url).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => return vec![format!("cannot read the final registry: {e}")],
    };
    let (Some(members), Some(events)) = (
        registry["members"].as_array(),
        registry["events"].as_array(),
    ) else {
        return vec![format!(
            "the final registry has no members or events: {registry}"
        )];
    };
    let mut problems = membership::acknowledged_present(ops, members);
    problems.extend(membership::one_holder_at_a_time(events));
    let claimed = events
        .iter()
        .filter(|e| e["kind"] == "responsibility_claimed")
        .count();
    if ops
        .iter()
        .any(|op| op.outcome == ChurnOutcome::Ok && matches!(op.kind, ChurnKind::Claim { .. }))
        && claimed == 0
    {
        problems.push("claims were acknowledged but the feed shows none".into());
    }
    problems
}

fn next_fault(schedule: &mut Schedule, only: &[Fault]) -> Fault {
    loop {
        let fault = schedule.next_fault();
        if only.is_empty() || only.contains(&fault) {
            return fault;
        }
    }
}

fn inject(
    cluster: &mut Cluster,
    schedule: &mut Schedule,
    fault: Fault,
    leader: usize,
) -> Result<(), RunError> {
    let n = cluster.members.len();
    let random = schedule.pick(n, 1)[0];
    match fault {
        Fault::KillLeader => cluster.kill9(leader),
        Fault::KillRandom => cluster.kill9(random),
        Fault::KillMinority => {
            for m in schedule.pick(n, nemesis::minority(n)) {
                cluster.kill9(m);
            }
        }
        Fault::KillAll => (0..n).for_each(|m| cluster.kill9(m)),
        Fault::PauseLeader => cluster.pause(leader, true),
        Fault::PauseRandom => cluster.pause(random, true),
        Fault::IsolateLeader => cluster.net.cut(&nemesis::isolate(n, &[leader]))?,
        Fault::RandomHalves => {
            let minority = schedule.pick(n, nemesis::minority(n));
            cluster.net.cut(&nemesis::isolate(n, &minority))?
        }
        Fault::Bridge => {
            let other = (leader + 1 + schedule.pick(n - 1, 1)[0]) % n;
            cluster.net.cut(&nemesis::bridge(n, leader, other))?
        }
        Fault::Ring => cluster.net.cut(&nemesis::ring(n))?,
        Fault::PowerLossAll => (0..n).for_each(|m| cluster.power_fail(m)),
        Fault::PowerLossRandom => cluster.power_fail(random),
    }
    Ok(())
}

/// The harness's client and how it reaches the members.
#[derive(Clone, Copy)]
struct Web<'a> {
    http: &'a reqwest::Client,
    access: &'a Access,
}

async fn status(web: Web<'_>, addr: &str) -> Option<serde_json::Value> {
    let response = web
        .http
        .get(web.access.url(addr, "/v1/cp/status"))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

async fn find_leader(web: Web<'_>, addrs: &[String]) -> Option<usize> {
    for (m, addr) in addrs.iter().enumerate() {
        if status(web, addr)
            .await
            .is_some_and(|s| s["state"] == "leader")
        {
            return Some(m);
        }
    }
    None
}

/// Waits until every member is healthy and names the same leader.
async fn wait_healthy(web: Web<'_>, addrs: &[String], within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut leaders = BTreeSet::new();
        let mut healthy = true;
        for addr in addrs {
            match status(web, addr).await {
                Some(s) if s["health"] == "healthy" => {
                    leaders.insert(s["leader"]["name"].as_str().unwrap_or("").to_string());
                }
                Some(s) => {
                    healthy = false;
                    last = format!("{addr}: {}", s["health"]);
                }
                None => {
                    healthy = false;
                    last = format!("{addr}: no answer");
                }
            }
        }
        if healthy && leaders.len() == 1 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("not healthy within {within:?} ({last})"))
}

/// Every member's registry equal at the same applied index (the workload stopped): the whole
/// registry (members, nodes, keygroups, responsibilities, KV, events) as each applied it.
async fn converged(web: Web<'_>, addrs: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut seen = BTreeMap::new();
        for addr in addrs {
            let Some(s) = status(web, addr).await else {
                continue;
            };
            let applied = s["applied_index"].as_u64().unwrap_or(0);
            let url = web.access.url(addr, "/v1/cp/snapshot?stale=true");
            let registry = fetch(web.http, &url).await;
            seen.insert(addr.clone(), (applied, registry));
        }
        let distinct: BTreeSet<_> = seen.values().collect();
        if seen.len() == addrs.len() && distinct.len() == 1 {
            return Ok(());
        }
        last = format!(
            "{} distinct states among {} members (applied: {:?})",
            distinct.len(),
            seen.len(),
            seen.values().map(|v| v.0).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("the members' registries did not converge: {last}"))
}

async fn fetch(http: &reqwest::Client, url: &str) -> String {
    match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("error: {e}"),
    }
}
