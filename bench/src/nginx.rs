//! `hivemind-bench nginx`: registration → first 200 through nginx. Starts 3 control-plane
//! members, a dns member, an nginx member (a managed real nginx) and a host on loopback, and
//! an HTTP backend in this process. Per trial the host registers one more service on the
//! backend's port and the time until nginx first answers `Host: <service>.hivemind` with 200
//! is taken (polling every 5 ms), and the time until a Consul blocking query on the nginx
//! member's catalog, started before the registration, answers. Prints p50/p99/max (nearest
//! rank) and the reloads the nginx member counted; then reloads under keep-alive load.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::edge::Edge;
use crate::harness::wait;

#[derive(Args, Debug)]
pub struct NginxBenchArgs {
    #[arg(long, default_value_t = 50)]
    pub trials: usize,
    /// The nginx binary the nginx member runs.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    pub nginx_bin: String,
    /// First of the loopback ports used (two per member, one for nginx).
    #[arg(long, default_value_t = 19700)]
    pub base_port: u16,
    /// Then: `--reloads` reloads during `--load-seconds` of keep-alive load at about
    /// `--rate` requests/s through nginx (0 seconds: skip).
    #[arg(long, default_value_t = 60)]
    pub load_seconds: u64,
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    #[arg(long, default_value_t = 50)]
    pub reloads: u64,
}

/// A backend answering 200 to everything.
async fn backend() -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    Ok(port)
}

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

pub async fn nginx(args: NginxBenchArgs, json_out: bool) -> Result<()> {
    if args.trials == 0 {
        bail!("--trials: at least 1");
    }
    let dir = tempfile::tempdir()?;
    let mut edge = Edge::start(dir.path(), args.base_port, &args.nginx_bin, &[]).await?;
    let listen = edge.listen.clone();
    let port = |i: u16| args.base_port + 2 * i;
    let http = hivemind_tls::http_client(None)
        .timeout(Duration::from_secs(2))
        .build()?;
    let backend = backend().await?;
    let services_url = format!("http://127.0.0.1:{}/v1/roles/host/services", port(5));
    let config_url = format!("http://127.0.0.1:{}/v1/roles/nginx/config", port(4));
    let mut services: Vec<Value> = Vec::new();
    let mut took = Vec::new();
    let mut catalog_took = Vec::new();
    let catalog_url = format!("http://127.0.0.1:{}/v1/catalog/services", port(4));
    let before = get(&http, &config_url)
        .await
        .context("the nginx member's config")?;
    for trial in 0..args.trials {
        let name = format!("svc{trial}");
        services.push(json!({"name": name, "port": backend, "proto": "tcp"}));
        // A Consul blocking query on the nginx member's catalog, waiting past its index.
        let index: u64 = http
            .get(&catalog_url)
            .send()
            .await?
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .context("X-Consul-Index")?;
        let blocking = {
            let url = format!("{catalog_url}?index={index}&wait=30s");
            let client = hivemind_tls::http_client(None)
                .build()
                .expect("an HTTP client builds");
            tokio::spawn(async move {
                let answered = client.get(url).send().await.map(|_| Instant::now());
                answered.ok()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let answer = http.put(&services_url).json(&services).send().await?;
        if !answer.status().is_success() {
            bail!("registering {name}: {}", answer.status());
        }
        let host = format!("{name}.hivemind");
        let url = format!("http://{listen}/");
        wait(
            "the new service served through nginx",
            Duration::from_secs(30),
            || async {
                let r = http.get(&url).header("Host", &host).send().await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        if let Some(answered) = blocking.await? {
            catalog_took.push(answered.duration_since(started).as_secs_f64() * 1000.0);
        }
    }
    let after = get(&http, &config_url)
        .await
        .context("the nginx member's config")?;
    let reloads = after["reloads"].as_u64().unwrap_or(0) - before["reloads"].as_u64().unwrap_or(0);
    // Reloads under load: a service registered and removed in turn while svc0 takes traffic.
    let load = if args.load_seconds > 0 {
        let with_flip = {
            let mut all = services.clone();
            all.push(json!({"name": "flip", "port": backend, "proto": "tcp"}));
            all
        };
        let flip = |on: bool| {
            let body = if on { &with_flip } else { &services };
            http.put(&services_url).json(body)
        };
        Some(
            reloads_under_load(
                &http,
                &listen,
                "svc0.hivemind",
                flip,
                &config_url,
                (args.rate, args.load_seconds, args.reloads),
            )
            .await?,
        )
    } else {
        None
    };
    catalog_took.sort_by(f64::total_cmp);
    let catalog_pct = |p: f64| hivemind_common::stats::percentile_f64(&catalog_took, p);
    let (c50, c99) = (catalog_pct(0.5), catalog_pct(0.99));
    let mut sorted = took.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| hivemind_common::stats::percentile_f64(&sorted, p);
    let (p50, p99, max) = (
        pct(0.5),
        pct(0.99),
        sorted.last().copied().unwrap_or(f64::NAN),
    );
    if json_out {
        println!(
            "{}",
            json!({"trials": args.trials, "p50_ms": p50, "p99_ms": p99, "max_ms": max, "reloads": reloads,
                "catalog_blocking": {"answered": catalog_took.len(), "p50_ms": c50, "p99_ms": c99},
                "load": load.map(|(requests, failed, retried, reloads)| json!({"seconds": args.load_seconds,
                    "requests": requests, "failed": failed, "retried": retried, "reloads": reloads}))})
        );
    } else {
        println!(
            "nginx: registration -> first 200 through nginx over {} trials: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; {reloads} reloads",
            args.trials
        );
        println!(
            "catalog: a blocking query on the nginx member answered {} of {} registrations, p50 {c50:.0} ms, p99 {c99:.0} ms after the registration was sent",
            catalog_took.len(),
            args.trials
        );
        if let Some((requests, failed, retried, observed)) = load {
            println!(
                "nginx: {observed} reloads during {} s of keep-alive load: {requests} requests ({:.0}/s), {failed} failed, {retried} retried on a connection closed by the reload",
                args.load_seconds,
                requests as f64 / args.load_seconds as f64
            );
        }
    }
    edge.stop_nginx();
    Ok(())
}

/// Reloads under load: `clients` keep-alive clients send about `rate` requests per second in
/// all to `Host: <host>` through nginx for `seconds`, while a service is registered and removed
/// in turn every `seconds / reloads`; answers (requests, failed, retried, reloads observed).
pub(crate) async fn reloads_under_load(
    http: &reqwest::Client,
    listen: &str,
    host: &str,
    flip: impl Fn(bool) -> reqwest::RequestBuilder,
    config_url: &str,
    (rate, seconds, reloads): (u64, u64, u64),
) -> Result<(u64, u64, u64, u64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let clients = 8u64;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (ok, failed, retried) = (ok.clone(), failed.clone(), retried.clone());
        let (url, host) = (format!("http://{listen}/"), host.to_string());
        let client = hivemind_tls::http_client(None)
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(1)
            .build()?;
        let every = Duration::from_micros(1_000_000 * clients / rate.max(1));
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now();
            while Instant::now() < stop {
                let mut answer = client.get(&url).header("Host", &host).send().await;
                // A keep-alive connection the old workers closed during a reload, before any
                // answer: retried once, as Go's HTTP client and browsers retry an idempotent
                // request (RFC 9112 §9.3.1), and counted apart.
                if answer
                    .as_ref()
                    .is_err_and(|e| e.is_request() && !e.is_timeout())
                {
                    retried.fetch_add(1, Ordering::Relaxed);
                    answer = client.get(&url).header("Host", &host).send().await;
                }
                let fine = match answer {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let counter = if fine { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
                next += every;
                tokio::time::sleep_until(next.into()).await;
            }
        }));
    }
    let before = get(http, config_url)
        .await
        .context("the nginx member's config")?;
    let gap = Duration::from_millis(seconds * 1000 / reloads.max(1));
    for i in 0..reloads {
        let answer = flip(i % 2 == 0).send().await?;
        if !answer.status().is_success() {
            bail!("flipping a service: {}", answer.status());
        }
        tokio::time::sleep(gap).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let after = get(http, config_url)
        .await
        .context("the nginx member's config")?;
    let observed = after["reloads"].as_u64().unwrap_or(0) - before["reloads"].as_u64().unwrap_or(0);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    Ok((
        ok + failed,
        failed,
        retried.load(Ordering::Relaxed),
        observed,
    ))
}
