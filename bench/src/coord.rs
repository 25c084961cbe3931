//! `hivemind-bench coord`: coordination primitives (DESIGN.md §6h) against hivemind or etcd,
//! each through its native protocol (hivemind over HTTP/1.1 keep-alive, etcd over gRPC with the
//! etcd-client crate), on a running 3-member cluster given by `--endpoints`:
//!
//! 1. watch delivery: `--watchers` watches on one prefix (hivemind: the streaming watch,
//!    etcd: watch streams), spread over the endpoints; one
//!    writer puts `--writes` values one after the other (each once every watcher saw the one
//!    before, or after 2 s); per delivery, the time from sending the write to the watcher
//!    holding the event;
//! 2. lock hand-off: two clients; the holder releases (hivemind: revokes its lease; etcd:
//!    Unlock) while the other waits in line; the time from sending the release until the
//!    waiter holds the lock, `--handoffs` times;
//! 3. leases: `--leases` leases with a 9 s TTL kept alive for `--lease-seconds` (hivemind: the
//!    batched keep-alive route, every TTL/3; etcd: one keep-alive stream per lease, as its
//!    client keeps them, every TTL/3), with each member's CPU over that time (`--pids`, in the
//!    endpoints' order).
//!
//! Percentiles are nearest rank (`hivemind_common::stats`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use hivemind_common::stats::percentile_f64 as percentile;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct CoordArgs {
    /// `hivemind` or `etcd`.
    #[arg(long)]
    pub target: String,
    /// HOST:PORT of each member (HTTP for hivemind, gRPC for etcd).
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// The members' PIDs, in the endpoints' order (for CPU).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    #[arg(long, default_value_t = 50)]
    pub writes: usize,
    #[arg(long, default_value_t = 50)]
    pub handoffs: usize,
    #[arg(long, default_value_t = 10_000)]
    pub leases: usize,
    #[arg(long, default_value_t = 30)]
    pub lease_seconds: u64,
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({"n": ms.len(), "p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "max_ms": ms.last()})
}

fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

pub async fn coord(args: CoordArgs, _json: bool) -> Result<()> {
    let out = match args.target.as_str() {
        "hivemind" => hivemind::run(&args).await?,
        "etcd" => etcd_run(&args).await?,
        other => bail!("--target: hivemind or etcd, not {other:?}"),
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

#[cfg(feature = "etcd")]
async fn etcd_run(args: &CoordArgs) -> Result<Value> {
    etcd::run(args).await
}

#[cfg(not(feature = "etcd"))]
async fn etcd_run(_: &CoordArgs) -> Result<Value> {
    bail!("--target etcd: build hivemind-bench with --features etcd (needs protoc)")
}

/// When each write was sent, by its number, and the deliveries' latencies.
#[derive(Default)]
struct Deliveries {
    sent: Mutex<Vec<Option<Instant>>>,
    ms: Mutex<Vec<f64>>,
    seen: Vec<AtomicUsize>,
}

impl Deliveries {
    fn new(writes: usize) -> Self {
        Self {
            sent: Mutex::new(vec![None; writes]),
            ms: Mutex::default(),
            seen: (0..writes).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    fn delivered(&self, n: usize) {
        let sent = self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(n)
            .copied()
            .flatten();
        if let Some(sent) = sent {
            self.ms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(sent.elapsed().as_secs_f64() * 1000.0);
            self.seen[n].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until `watchers` saw write `n`, at most 2 s.
    async fn wait_all(&self, n: usize, watchers: usize) {
        let until = Instant::now() + Duration::from_secs(2);
        while self.seen[n].load(Ordering::Relaxed) < watchers && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

mod hivemind {
    use super::*;

    fn http(timeout: Duration) -> Result<reqwest::Client> {
        Ok(hivemind_tls::http_client(None)
            .timeout(timeout)
            .pool_max_idle_per_host(2000)
            .build()?)
    }

    async fn call(
        http: &reqwest::Client,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("HTTP {status}: {body}");
        }
        Ok(body)
    }

    pub async fn run(args: &CoordArgs) -> Result<Value> {
        let http = http(Duration::from_secs(70))?;
        let eps = &args.endpoints;
        let url = |i: usize, path: &str| format!("http://{}{path}", eps[i % eps.len()]);

        // 1. watch delivery
        let start: u64 = call(
            &http,
            reqwest::Method::PUT,
            url(0, "/v1/kv/bench-w/start"),
            None,
        )
        .await
        .map(|v| v["index"].as_u64().unwrap_or(0))
        .unwrap_or(0);
        let deliveries = Arc::new(Deliveries::new(args.writes));
        let mut watchers = Vec::new();
        for w in 0..args.watchers {
            let (http, deliveries, base) = (http.clone(), deliveries.clone(), url(w, ""));
            watchers.push(tokio::spawn(async move {
                // The streaming watch: one answer, a line per batch of changes.
                let url =
                    format!("{base}/v1/kv?prefix=bench-w/v&watch=true&stream=true&after={start}");
                let Ok(mut response) = http.get(url).send().await else {
                    return;
                };
                let mut buf = Vec::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    buf.extend_from_slice(&chunk);
                    while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=end).collect();
                        let Ok(page) = serde_json::from_slice::<Value>(&line) else {
                            continue;
                        };
                        for e in page["events"].as_array().into_iter().flatten() {
                            let value = base64::engine::general_purpose::STANDARD
                                .decode(e["value_base64"].as_str().unwrap_or(""))
                                .unwrap_or_default();
                            if let Ok(n) = String::from_utf8_lossy(&value).parse::<usize>() {
                                deliveries.delivered(n);
                            }
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for n in 0..args.writes {
            deliveries.sent.lock().unwrap_or_else(|p| p.into_inner())[n] = Some(Instant::now());
            let response = http
                .put(url(0, "/v1/kv/bench-w/v"))
                .body(n.to_string())
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("write {n}: {}", response.status());
            }
            deliveries.wait_all(n, args.watchers).await;
        }
        watchers.iter().for_each(|w| w.abort());
        let watch = summary(
            deliveries
                .ms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        );

        // 2. lock hand-off
        let mut handoffs = Vec::new();
        let mut holder = acquire(&http, &url(0, ""), "bench").await?;
        for h in 0..args.handoffs {
            let waiter_base = url(h + 1, "");
            let (lease, key, create) = enqueue(&http, &waiter_base, "bench").await?;
            let waiting = {
                let http = http.clone();
                tokio::spawn(async move {
                    wait_turn(&http, &waiter_base, "bench", &key, create)
                        .await
                        .map(|()| Instant::now())
                })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            let released = Instant::now();
            call(
                &http,
                reqwest::Method::DELETE,
                url(h, &format!("/v1/leases/{}", holder)),
                None,
            )
            .await?;
            let acquired = waiting.await??;
            handoffs.push(acquired.duration_since(released).as_secs_f64() * 1000.0);
            holder = lease;
        }
        let _ = call(
            &http,
            reqwest::Method::DELETE,
            url(0, &format!("/v1/leases/{holder}")),
            None,
        )
        .await;

        // 3. leases kept alive
        let ids = Arc::new(Mutex::new(Vec::with_capacity(args.leases)));
        futures::future::try_join_all((0..32).map(|c| {
            let (http, ids, base, n) = (http.clone(), ids.clone(), url(c, ""), args.leases);
            async move {
                for _ in (c..n).step_by(32) {
                    let lease = call(
                        &http,
                        reqwest::Method::POST,
                        format!("{base}/v1/leases"),
                        Some(json!({"ttl": "9s"})),
                    )
                    .await?;
                    ids.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(lease["id"].as_u64().context("lease id")?);
                }
                anyhow::Ok(())
            }
        }))
        .await?;
        let ids = ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let before: Vec<u64> = args.pids.iter().map(|p| cpu_ticks(*p)).collect();
        let until = Instant::now() + Duration::from_secs(args.lease_seconds);
        let mut lost = 0usize;
        let mut rounds = 0;
        while Instant::now() < until {
            let round = Instant::now();
            for (b, chunk) in ids.chunks(1000).enumerate() {
                let answer = call(
                    &http,
                    reqwest::Method::PUT,
                    url(b, "/v1/leases/keepalive"),
                    Some(json!({"ids": chunk})),
                )
                .await?;
                lost += answer["leases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|l| l.get("error").is_some())
                    .count();
            }
            rounds += 1;
            tokio::time::sleep(Duration::from_secs(3).saturating_sub(round.elapsed())).await;
        }
        let cpu: Vec<f64> = args
            .pids
            .iter()
            .zip(before)
            .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / (args.lease_seconds as f64))
            .collect();
        for chunk in ids.chunks(1000) {
            for id in chunk {
                let _ = http
                    .delete(url(*id as usize, &format!("/v1/leases/{id}")))
                    .send()
                    .await;
            }
        }
        Ok(
            json!({"target": "hivemind", "watchers": args.watchers, "watch": watch,
            "handoff": summary(handoffs), "leases": ids.len(), "keepalive_rounds": rounds, "leases_lost": lost,
            "cpu_percent_per_member": cpu}),
        )
    }

    /// A lease, a key in line under `_locks/NAME/` on it: (lease, key, create index).
    async fn enqueue(http: &reqwest::Client, base: &str, name: &str) -> Result<(u64, String, u64)> {
        let lease = call(
            http,
            reqwest::Method::POST,
            format!("{base}/v1/leases"),
            Some(json!({"ttl": "30s"})),
        )
        .await?;
        let id = lease["id"].as_u64().context("lease id")?;
        let key = format!("_locks/{name}/{id:016x}");
        let txn = json!({"compare": [{"key": key, "exists": false}],
            "success": [{"put": {"key": key, "value_base64": "", "lease": id}}]});
        let answer = call(
            http,
            reqwest::Method::POST,
            format!("{base}/v1/txn"),
            Some(txn),
        )
        .await?;
        let create = answer["results"][0]["put"]["modify_index"]
            .as_u64()
            .context("create index")?;
        Ok((id, key, create))
    }

    /// Waits, watching only the predecessor, until `key` is the lowest under the lock.
    async fn wait_turn(
        http: &reqwest::Client,
        base: &str,
        name: &str,
        key: &str,
        create: u64,
    ) -> Result<()> {
        let prefix = format!("_locks/{name}/");
        loop {
            let response = http
                .get(format!("{base}/v1/kv?prefix={prefix}"))
                .send()
                .await?;
            let at: u64 = response
                .headers()
                .get("x-hivemind-index")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            let keys: Value = response.json().await?;
            let keys = keys.as_array().context("keys")?;
            if !keys.iter().any(|k| k["key"] == key) {
                bail!("lost {key}");
            }
            let Some(pred) = keys
                .iter()
                .filter(|k| k["create_index"].as_u64().unwrap_or(0) < create)
                .max_by_key(|k| k["create_index"].as_u64())
            else {
                return Ok(());
            };
            let pred = pred["key"].as_str().unwrap_or("").to_string();
            let mut after = at;
            loop {
                let page = call(
                    http,
                    reqwest::Method::GET,
                    format!("{base}/v1/kv?prefix={pred}&watch=true&after={after}&wait=30s"),
                    None,
                )
                .await?;
                if page["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["kind"] == "delete")
                {
                    break;
                }
                after = page["next_after"].as_u64().unwrap_or(after);
            }
        }
    }

    async fn acquire(http: &reqwest::Client, base: &str, name: &str) -> Result<u64> {
        let (lease, key, create) = enqueue(http, base, name).await?;
        wait_turn(http, base, name, &key, create).await?;
        Ok(lease)
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use etcd_client::{Client, EventType, LockOptions, WatchOptions};

    async fn connect(endpoint: &str) -> Result<Client> {
        Client::connect([format!("http://{endpoint}")], None)
            .await
            .map_err(|e| anyhow::anyhow!("--endpoints: cannot reach etcd at {endpoint}: {e}"))
    }

    pub async fn run(args: &CoordArgs) -> Result<Value> {
        let eps = &args.endpoints;
        // 1. watch delivery: a client (one gRPC connection) per watcher, as on the hivemind side.
        let deliveries = Arc::new(Deliveries::new(args.writes));
        let mut watchers = Vec::new();
        for w in 0..args.watchers {
            let (deliveries, endpoint) = (deliveries.clone(), eps[w % eps.len()].clone());
            watchers.push(tokio::spawn(async move {
                let Ok(mut client) = connect(&endpoint).await else {
                    return;
                };
                let Ok(mut stream) = client
                    .watch("bench-w/v", Some(WatchOptions::new().with_prefix()))
                    .await
                else {
                    return;
                };
                while let Ok(Some(response)) = stream.message().await {
                    for e in response.events() {
                        if e.event_type() == EventType::Put {
                            if let Some(n) = e
                                .kv()
                                .and_then(|kv| kv.value_str().ok()?.parse::<usize>().ok())
                            {
                                deliveries.delivered(n);
                            }
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut writer = connect(&eps[0]).await?;
        for n in 0..args.writes {
            deliveries.sent.lock().unwrap_or_else(|p| p.into_inner())[n] = Some(Instant::now());
            writer.put("bench-w/v", n.to_string(), None).await?;
            deliveries.wait_all(n, args.watchers).await;
        }
        watchers.iter().for_each(|w| w.abort());
        let watch = summary(
            deliveries
                .ms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        );

        // 2. lock hand-off, through etcd's lock service on leases, as `etcdctl lock` does.
        let mut handoffs = Vec::new();
        let mut a = connect(&eps[0]).await?;
        let lease = a.lease_grant(30, None).await?.id();
        let mut held = a
            .lock("bench", Some(LockOptions::new().with_lease(lease)))
            .await?
            .key()
            .to_vec();
        let mut held_lease = lease;
        for h in 0..args.handoffs {
            let mut waiter = connect(&eps[(h + 1) % eps.len()]).await?;
            let lease = waiter.lease_grant(30, None).await?.id();
            let waiting = tokio::spawn(async move {
                let key = waiter
                    .lock("bench", Some(LockOptions::new().with_lease(lease)))
                    .await
                    .map(|r| r.key().to_vec());
                (Instant::now(), key)
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let released = Instant::now();
            a.unlock(held.clone()).await?;
            let _ = a.lease_revoke(held_lease).await;
            let (acquired, key) = waiting.await?;
            held = key?;
            held_lease = lease;
            handoffs.push(acquired.duration_since(released).as_secs_f64() * 1000.0);
        }
        let _ = a.lease_revoke(held_lease).await;

        // 3. leases kept alive: a keep-alive stream per lease (as etcd-client keeps them),
        // every TTL/3, from 32 connections at once (as the hivemind side grants from 32).
        let until = Arc::new(Mutex::new(None::<Instant>));
        let lost = Arc::new(AtomicUsize::new(0));
        let rounds = Arc::new(AtomicUsize::new(0));
        let granted = Arc::new(AtomicUsize::new(0));
        let (ready_tx, _) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for c in 0..32usize {
            let (endpoint, n) = (eps[c % eps.len()].clone(), args.leases);
            let (until, lost, rounds, granted, mut ready) = (
                until.clone(),
                lost.clone(),
                rounds.clone(),
                granted.clone(),
                ready_tx.subscribe(),
            );
            tasks.push(tokio::spawn(async move {
                let mut client = connect(&endpoint).await?;
                let mut keepers = Vec::new();
                for _ in (c..n).step_by(32) {
                    let id = client.lease_grant(9, None).await?.id();
                    keepers.push(client.lease_keep_alive(id).await?);
                    granted.fetch_add(1, Ordering::Relaxed);
                }
                let _ = ready.wait_for(|r| *r).await;
                let until = until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or_else(Instant::now);
                while Instant::now() < until {
                    let round = Instant::now();
                    for (keeper, stream) in &mut keepers {
                        keeper.keep_alive().await?;
                        if let Some(r) = stream.message().await? {
                            if r.ttl() <= 0 {
                                lost.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    if c == 0 {
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_secs(3).saturating_sub(round.elapsed()))
                        .await;
                }
                anyhow::Ok(())
            }));
        }
        while granted.load(Ordering::Relaxed) < args.leases
            && !tasks.iter().any(|t| t.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before: Vec<u64> = args.pids.iter().map(|p| cpu_ticks(*p)).collect();
        *until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + Duration::from_secs(args.lease_seconds));
        let _ = ready_tx.send(true);
        for t in tasks {
            t.await??;
        }
        let cpu: Vec<f64> = args
            .pids
            .iter()
            .zip(before)
            .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / (args.lease_seconds as f64))
            .collect();
        let (lost, rounds) = (lost.load(Ordering::Relaxed), rounds.load(Ordering::Relaxed));
        let keepers = granted.load(Ordering::Relaxed);
        Ok(
            json!({"target": "etcd", "watchers": args.watchers, "watch": watch,
            "handoff": summary(handoffs), "leases": keepers, "keepalive_rounds": rounds, "leases_lost": lost,
            "cpu_percent_per_member": cpu}),
        )
    }
}
