//! `hivemind-bench members`: what a member costs the control plane. Starts 3 CP members and
//! one real member (no roles) on loopback, then admits N synthetic members through the real
//! join path (16 at a time). Each follows the feed as a member does: from its join's index,
//! long-polling on one connection to the CP member it chose ([`cp_choice`]: at its join from
//! the join answer's members, and once all are admitted from all of them, as a member's view
//! does), re-bootstrapping from a registry snapshot as a member does should retention trim
//! the feed past it. Then it writes `--events` keygroups one at a time and measures, for each, the time
//! from sending the write until every member's feed passed it (the write's own commit
//! included). It reports, per CP member,
//! the followers waiting on it (its `hivemind_feed_followers`), its open connections and its
//! peak and current RSS; the real member's peak RSS; the feed latency p50/p99 (one percentile
//! definition, `hivemind_common::stats`); every error; and the re-bootstraps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::http::{header, Request};
use clap::Args;
use futures::StreamExt;
use hivemind_common::backoff::Backoff;
use hivemind_common::stats::percentile_f64 as percentile;
use hivemind_common::MemberId;
use hivemind_control_plane::network::InternalClient;
use hivemind_control_plane::ops::{self, FeedRequest, Op};
use hivemind_control_plane::registry::{FeedError, MemberInfo};
use hivemind_control_plane::CpError;
use hivemind_member::cp::cp_choice;
use hivemind_member::cp::join::{cp_endpoints, next_step, JoinAccepted, JoinRequest, NextStep};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::harness::{agent_args, hivemind_binary, join_flags, wait, Output, Proc};

#[derive(Args, Debug)]
pub struct MembersArgs {
    /// Synthetic members to admit.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Feed events to time (one keygroup written per event, one at a time).
    #[arg(long, default_value_t = 50)]
    pub events: usize,
    /// First port: the CP members and the real member use three ports each from here.
    #[arg(long, default_value_t = 7900)]
    pub base_port: u16,
}

/// How far the synthetic members' feeds are, and who is waiting for whom.
#[derive(Default)]
struct Progress {
    /// The index an event is timed at (0: none).
    target: AtomicU64,
    /// Members whose feed has not passed `target` yet.
    behind: AtomicUsize,
    /// When the last of them passed it.
    all_seen: Mutex<Option<Instant>>,
    done: tokio::sync::Notify,
    /// Feed requests that failed (the member reconnects, to the next CP member if need be).
    errors: AtomicU64,
    /// Members that found their position trimmed away and re-bootstrapped from a snapshot.
    rebootstraps: AtomicU64,
}

impl Progress {
    /// A feed request failed (the member connects again); the first few are shown.
    fn failed(&self, reason: &str) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 5 {
            tracing::warn!(%reason, "a synthetic member's feed request failed (the first 5 are shown)");
        }
    }

    /// `follower`'s feed is at `now`: counts it once per target it passed.
    fn advanced(&self, follower: &Follower, now: u64) {
        let target = self.target.load(Ordering::Acquire);
        if target != 0
            && now >= target
            && follower.counted_for.swap(target, Ordering::AcqRel) != target
            && self.behind.fetch_sub(1, Ordering::AcqRel) == 1
        {
            *self.all_seen.lock().unwrap() = Some(Instant::now());
            self.done.notify_one();
        }
    }
}

/// One synthetic member's feed position (its latest `next_after`).
struct Follower {
    id: MemberId,
    after: AtomicU64,
    /// The last target it was counted for in [`Progress::behind`].
    counted_for: AtomicU64,
}

/// The first choice of every member, once all are admitted (empty until then).
type Assignment = Arc<HashMap<MemberId, String>>;

/// Follows the feed from `follower.after` as a member does, until `cancel`.
async fn follow(
    follower: Arc<Follower>,
    epoch: u64,
    at_join: String,
    mut assignment: watch::Receiver<Assignment>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) {
    let mut connection: Option<(String, hyper::client::conn::http1::SendRequest<Body>)> = None;
    loop {
        let want = assignment
            .borrow_and_update()
            .get(&follower.id)
            .cloned()
            .unwrap_or_else(|| at_join.clone());
        if connection.as_ref().is_none_or(|(addr, _)| *addr != want) {
            connection = match connect(&want).await {
                Ok(sender) => Some((want.clone(), sender)),
                Err(reason) => {
                    progress.failed(&reason);
                    None
                }
            };
        }
        let Some((addr, sender)) = connection.as_mut() else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            }
        };
        let after = follower.after.load(Ordering::Relaxed);
        let request = FeedRequest {
            after,
            epoch: Some(epoch),
            wait_ms: 30_000,
        };
        let answer = tokio::select! {
            _ = cancel.cancelled() => return,
            answer = call::<ops::Feed>(sender, addr, &request) => answer,
        };
        let reason = match answer {
            Ok(Ok(page)) => {
                follower.after.store(page.next_after, Ordering::Release);
                progress.advanced(&follower, page.next_after);
                continue;
            }
            // Retention trimmed the feed past this member: as a member does, it re-bootstraps
            // from its view of the registry and follows on from there.
            Ok(Err(FeedError::Gone {
                epoch: now,
                first_index,
            })) if now == epoch => {
                let view = ops::ViewRequest {
                    node: "bench".into(),
                    at: ops::ViewAt::Applied(first_index),
                };
                let digest = tokio::select! {
                    _ = cancel.cancelled() => return,
                    answer = call::<ops::View>(sender, addr, &view) => answer,
                };
                match digest {
                    Ok(Ok(digest)) => {
                        progress.rebootstraps.fetch_add(1, Ordering::Relaxed);
                        follower.after.store(digest.index, Ordering::Release);
                        progress.advanced(&follower, digest.index);
                        continue;
                    }
                    Ok(Err(e)) => format!("registry snapshot: {e}"),
                    Err(e) => e,
                }
            }
            Ok(Err(e)) => format!("feed: {e:?}"),
            Err(e) => e,
        };
        progress.failed(&reason);
        connection = None;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect(addr: &str) -> Result<hyper::client::conn::http1::SendRequest<Body>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One call of the internal operation `O` on `sender`'s connection to `addr`: the answer, or
/// why there is none.
async fn call<O: Op>(
    sender: &mut hyper::client::conn::http1::SendRequest<Body>,
    addr: &str,
    request: &O::Request,
) -> Result<O::Answer, String> {
    let request = Request::post(O::PATH)
        .header(header::HOST, addr)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(hivemind_common::encode(request)))
        .expect("a static request builds");
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let bytes = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .map_err(|e| format!("body: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    hivemind_common::decode(&bytes).map_err(|e| format!("decode: {e}"))
}

/// A member's numbers from its `/metrics` and `/proc`.
struct Sample {
    feed_followers: Option<f64>,
    connections: Option<f64>,
    peak_rss_kib: Option<u64>,
    rss_kib: Option<u64>,
    /// Of the RSS: the process's own memory (heap, stacks), and pages of files (mostly the
    /// binary's code, shared by every member on the machine).
    anon_kib: Option<u64>,
    file_kib: Option<u64>,
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn sample(http: &reqwest::Client, port: u16, proc: &Proc) -> Sample {
    let text = match http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    Sample {
        feed_followers: metric(&text, "hivemind_feed_followers"),
        connections: metric(&text, "hivemind_http_connections"),
        peak_rss_kib: proc.peak_rss_kib(),
        rss_kib: proc.rss_kib(),
        anon_kib: proc.status_kib("RssAnon:"),
        file_kib: proc.status_kib("RssFile:"),
    }
}

pub async fn members(args: MembersArgs, json_out: bool) -> Result<()> {
    if args.members == 0 {
        bail!("--members: at least 1");
    }
    let program = hivemind_binary()?;
    let dir = tempfile::tempdir()?;
    let port = |i: usize| args.base_port + 3 * i as u16;
    let joins = join_flags((0..3).map(port));
    let mut procs = Vec::new();
    for i in 0..4 {
        let mut extra = joins.clone();
        if i < 3 {
            extra.extend([
                "--control-plane".into(),
                "--bootstrap-expect".into(),
                "3".into(),
                // The synthetic members never gossip: the leader must not report them.
                "--fail-unheard-after".into(),
                "0".into(),
            ]);
        }
        let name = if i < 3 {
            format!("cp{}", i + 1)
        } else {
            "member".into()
        };
        let mut proc = Proc::new(
            &program,
            agent_args(dir.path(), &name, port(i), "local", &extra),
        );
        proc.start(Output::File(dir.path().join(format!("{name}.log"))))?;
        procs.push(proc);
    }
    let http = hivemind_tls::http_client(None)
        .build()
        .expect("an HTTP client builds");
    let cp1 = format!("http://127.0.0.1:{}", port(0));
    wait("4 members alive", Duration::from_secs(60), || async {
        let list: Value = http
            .get(format!("{cp1}/v1/members"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let alive = list
            .as_array()?
            .iter()
            .filter(|m| m["state"] == "alive")
            .count();
        (alive == 4).then_some(())
    })
    .await?;

    // Admit the synthetic members, 16 at a time, each through a CP member in turn.
    let client = InternalClient::new(None, None);
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let cancel = CancellationToken::new();
    let (assign_tx, assign_rx) = watch::channel(Assignment::default());
    let mut followers = Vec::with_capacity(args.members);
    let mut joined = futures::stream::iter((0..args.members).map(|i| {
        let client = client.clone();
        let via = format!("127.0.0.1:{}", port(i % 3));
        async move {
            let member = MemberInfo {
                id: MemberId::random(&mut rand::thread_rng()),
                name: format!("synthetic-{i}"),
                node: format!("synthetic-{i}"),
                roles: vec![],
                // Nobody calls them: they serve nothing and gossip nowhere.
                http_addr: "127.0.0.1:9".into(),
                gossip_addr: "127.0.0.1:9".into(),
                generation: 1,
                control_plane: false,
            };
            let id = member.id;
            let request = JoinRequest {
                member,
                token: None,
                cluster_proof: None,
                epoch: None,
            };
            // As a member's join does: a control plane that cannot answer now (no quorum,
            // unreachable) is asked again with backoff, up to 10 times.
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            let mut retries = 0;
            loop {
                let answer = client
                    .call::<_, Result<JoinAccepted, CpError>>(
                        &via,
                        ops::Join::PATH,
                        &request,
                        Duration::from_secs(30),
                    )
                    .await;
                let transient = match &answer {
                    Ok(answer) => next_step(answer) == NextStep::Retry,
                    Err(_) => true,
                };
                if !transient || retries == 10 {
                    return (id, answer, retries);
                }
                retries += 1;
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }))
    .buffer_unordered(16);
    let mut outside_cp = Vec::with_capacity(args.members);
    let mut cps = Vec::new();
    let mut join_retries = 0;
    while let Some((id, answer, retries)) = joined.next().await {
        join_retries += retries;
        let accepted = match answer {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(e)) => bail!("a synthetic member was refused: {e}"),
            Err(e) => bail!("a join failed: {e}"),
        };
        cps = cp_endpoints(&accepted.members);
        // As a member starts (`CpClient::new`): by rendezvous weight alone, until its view
        // lists everyone.
        let mut ranked = cps.clone();
        cp_choice::preference(id, &mut ranked);
        let at_join = ranked
            .into_iter()
            .next()
            .context("the join answer lists no CP member")?;
        let follower = Arc::new(Follower {
            id,
            after: AtomicU64::new(accepted.index),
            counted_for: AtomicU64::new(0),
        });
        tokio::spawn(follow(
            follower.clone(),
            accepted.epoch,
            at_join,
            assign_rx.clone(),
            progress.clone(),
            cancel.clone(),
        ));
        followers.push(follower);
        outside_cp.push(id);
    }
    let admitted_in = started.elapsed();
    // Every member's view now lists all of them: each moves to its bounded-load choice.
    let assigned = cp_choice::assign(&outside_cp, &cps);
    let _ = assign_tx.send(Arc::new(
        assigned
            .iter()
            .map(|(id, &i)| (*id, cps[i].clone()))
            .collect(),
    ));

    // Time events: write a keygroup, wait until every member's feed passed it.
    let mut samples = Vec::with_capacity(args.events);
    for i in 0..args.events {
        // From the write's start: the latency includes its own commit, and never counts the
        // bench's own time to read the answer as the members'.
        let sent = Instant::now();
        let response = http
            .put(format!(
                "{cp1}/v1/keygroups/bench/members/k{i}-{}",
                rand::random::<u32>()
            ))
            .json(&json!({}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("writing event {i} answered {}", response.status());
        }
        let config: Value = response.json().await?;
        let index = config["updated_index"]
            .as_u64()
            .context("the keygroup has no updated_index")?;
        *progress.all_seen.lock().unwrap() = None;
        progress.behind.store(followers.len(), Ordering::Release);
        progress.target.store(index, Ordering::Release);
        // Those already past it (the page arrived before the answer) count at once.
        for follower in &followers {
            progress.advanced(follower, follower.after.load(Ordering::Acquire));
        }
        if tokio::time::timeout(Duration::from_secs(60), async {
            while progress.all_seen.lock().unwrap().is_none() {
                progress.done.notified().await;
            }
        })
        .await
        .is_err()
        {
            bail!(
                "event {i}: {} members had not seen it after 60 s",
                progress.behind.load(Ordering::Relaxed)
            );
        }
        progress.target.store(0, Ordering::Release);
        let seen = progress.all_seen.lock().unwrap().expect("set");
        samples.push(seen.saturating_duration_since(sent).as_secs_f64() * 1000.0);
    }
    // Sample once every member (and the real one) is back on a long-poll after the last event.
    wait(
        "every member waiting on its CP member",
        Duration::from_secs(30),
        || async {
            let mut waiting = 0.0;
            for (i, proc) in procs.iter().enumerate().take(3) {
                waiting += sample(&http, port(i), proc).await.feed_followers?;
            }
            (waiting >= (args.members + 1) as f64).then_some(())
        },
    )
    .await?;
    let mut per_cp = Vec::new();
    for (i, proc) in procs.iter().enumerate().take(3) {
        let addr = format!("127.0.0.1:{}", port(i));
        let chose = cps
            .iter()
            .position(|c| *c == addr)
            .map_or(0, |at| assigned.values().filter(|&&i| i == at).count());
        per_cp.push((addr, chose, sample(&http, port(i), proc).await));
    }
    let member = sample(&http, port(3), &procs[3]).await;
    // Counted before the members stop: their connections fail as the processes end.
    let errors = progress.errors.load(Ordering::Relaxed);
    let rebootstraps = progress.rebootstraps.load(Ordering::Relaxed);
    cancel.cancel();
    for mut proc in procs {
        proc.kill();
    }
    samples.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));

    let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
    if json_out {
        let cps: Vec<Value> = per_cp
            .iter()
            .map(|(addr, chose, s)| {
                json!({"addr": addr, "assigned": chose, "feed_followers": s.feed_followers,
                       "connections": s.connections, "peak_rss_mib": mib(s.peak_rss_kib),
                       "rss_mib": mib(s.rss_kib), "anon_mib": mib(s.anon_kib),
                       "file_mib": mib(s.file_kib)})
            })
            .collect();
        println!(
            "{}",
            json!({"members": args.members, "admitted_s": admitted_in.as_secs_f64(),
                   "events": args.events, "feed_p50_ms": p50, "feed_p99_ms": p99,
                   "errors": errors, "rebootstraps": rebootstraps,
                   "join_retries": join_retries, "control_plane": cps,
                   "member_peak_rss_mib": mib(member.peak_rss_kib),
                   "member_rss_mib": mib(member.rss_kib),
                   "member_anon_mib": mib(member.anon_kib),
                   "member_file_mib": mib(member.file_kib)})
        );
    } else {
        println!(
            "{} synthetic members admitted in {:.1} s ({join_retries} join retries); feed latency over {} events (write sent -> every member saw it): p50 {p50:.1} ms, p99 {p99:.1} ms; {errors} feed errors; {rebootstraps} re-bootstraps",
            args.members,
            admitted_in.as_secs_f64(),
            args.events
        );
        for (addr, chose, s) in &per_cp {
            println!(
                "  CP {addr}: {chose} assigned, {} waiting, {} connections, peak RSS {:.1} MiB, RSS {:.1} MiB ({:.1} anon + {:.1} file)",
                s.feed_followers.unwrap_or(f64::NAN),
                s.connections.unwrap_or(f64::NAN),
                mib(s.peak_rss_kib).unwrap_or(f64::NAN),
                mib(s.rss_kib).unwrap_or(f64::NAN),
                mib(s.anon_kib).unwrap_or(f64::NAN),
                mib(s.file_kib).unwrap_or(f64::NAN),
            );
        }
        println!(
            "  member (no roles): peak RSS {:.1} MiB, RSS {:.1} MiB ({:.1} anon + {:.1} file)",
            mib(member.peak_rss_kib).unwrap_or(f64::NAN),
            mib(member.rss_kib).unwrap_or(f64::NAN),
            mib(member.anon_kib).unwrap_or(f64::NAN),
            mib(member.file_kib).unwrap_or(f64::NAN),
        );
    }
    Ok(())
}
