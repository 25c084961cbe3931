//! `hivemind-bench kv`: one load generator for hivemind and etcd, so that both are measured the
//! same way: N clients, each with its own connection to one endpoint (client i uses endpoint
//! i mod n), writing 256-byte values for D seconds, then doing linearizable reads for D
//! seconds. Prints throughput, latency percentiles and errors.
//!
//! Each is driven through its native protocol: hivemind over HTTP/1.1 keep-alive, etcd over
//! gRPC (`--target etcd`, the `etcd-client` crate; one HTTP/2 connection per client, as
//! `etcd benchmark --conns N --clients N`). gRPC needs `protoc` to build, so it is behind the
//! bench crate's `etcd` feature (`tests/bench/kv-vs-etcd.sh` builds it). `--target etcd-gateway` drives
//! etcd's v3 JSON gateway, the way earlier figures were taken (BENCHMARKS.md keeps them as
//! history).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use base64::Engine;
use clap::{Args, ValueEnum};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Hivemind,
    /// etcd over gRPC, its native API (needs the `etcd` feature).
    Etcd,
    /// etcd's v3 JSON gateway (gateway-bound; for comparison with earlier figures).
    EtcdGateway,
}

#[derive(Args, Debug)]
pub struct KvBenchArgs {
    /// HOST:PORT of each cluster member (hivemind HTTP port, or etcd client port).
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Length of each phase (writes, then reads), e.g. 15s.
    #[arg(long, default_value = "15s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    #[arg(long, value_enum, default_value = "hivemind")]
    pub target: Target,
    /// Skip the read phase.
    #[arg(long)]
    pub writes_only: bool,
    /// The cluster CA (PEM) of a hivemind cluster on TLS: talk https to it.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Instead of a load: retry one write until it succeeds and print how long that took
    /// (leader-failover measurement right after the leader was killed).
    #[arg(long)]
    pub first_success: bool,
}

#[derive(Clone, Copy)]
enum Op {
    Write,
    Read,
}

struct Driver {
    http: reqwest::Client,
    /// `http` or `https`.
    scheme: &'static str,
    target: Target,
    value: Vec<u8>,
}

/// One client's connection: HTTP through the shared pool, or its own gRPC channel to etcd.
enum Conn {
    Http,
    #[cfg(feature = "etcd")]
    Grpc(Box<etcd_client::KvClient>),
}

impl Conn {
    async fn open(target: Target, endpoint: &str) -> Result<Self> {
        match target {
            Target::Hivemind | Target::EtcdGateway => Ok(Conn::Http),
            #[cfg(feature = "etcd")]
            Target::Etcd => {
                let client = etcd_client::Client::connect([format!("http://{endpoint}")], None)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("--endpoints: cannot reach etcd at {endpoint}: {e}")
                    })?;
                Ok(Conn::Grpc(Box::new(client.kv_client())))
            }
            #[cfg(not(feature = "etcd"))]
            Target::Etcd => {
                let _ = endpoint;
                bail!("--target etcd: this hivemind-bench was built without gRPC; build it with `cargo build --release -p hivemind-bench --features etcd` (needs protoc: Debian protobuf-compiler and libprotobuf-dev)")
            }
        }
    }
}

impl Driver {
    async fn once(&self, conn: &mut Conn, endpoint: &str, op: Op, key: &str) -> Result<()> {
        #[cfg(feature = "etcd")]
        if let Conn::Grpc(kv) = conn {
            match op {
                // A linearizable read: etcd's Range is linearizable unless asked serializable.
                Op::Read => kv.get(key, None).await.map(drop)?,
                Op::Write => kv.put(key, self.value.clone(), None).await.map(drop)?,
            }
            return Ok(());
        }
        let _ = conn;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let request = match (self.target, op) {
            (Target::Hivemind, Op::Write) => self
                .http
                .put(format!("{}://{endpoint}/v1/kv/{key}", self.scheme))
                .body(self.value.clone()),
            (Target::Hivemind, Op::Read) => self
                .http
                .get(format!("{}://{endpoint}/v1/kv/{key}", self.scheme)),
            (Target::EtcdGateway, Op::Write) => self
                .http
                .post(format!("http://{endpoint}/v3/kv/put"))
                .json(&json!({ "key": b64(key.as_bytes()), "value": b64(&self.value) })),
            (Target::EtcdGateway, Op::Read) => self
                .http
                .post(format!("http://{endpoint}/v3/kv/range"))
                .json(&json!({ "key": b64(key.as_bytes()) })),
            (Target::Etcd, _) => bail!("etcd over gRPC needs its own connection"),
        };
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }
}

/// Keys each client cycles over while writing.
const KEYS_PER_CLIENT: u64 = 1000;

struct PhaseResult {
    /// How many distinct keys each client wrote (reads stay within them).
    keys_per_client: Vec<u64>,
    ops: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl PhaseResult {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    fn mean_ms(&self) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let total: Duration = self.latencies.iter().sum();
        total.as_secs_f64() * 1000.0 / self.latencies.len() as f64
    }

    fn percentile(&self, p: f64) -> f64 {
        hivemind_common::stats::percentile(&self.latencies, p)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
}

/// Runs one phase; reads cycle over the `keys_per_client` keys the write phase wrote. Each
/// client's connection is opened before the clock starts.
async fn phase(
    driver: Arc<Driver>,
    args: &KvBenchArgs,
    op: Op,
    keys_per_client: &[u64],
) -> Result<PhaseResult> {
    let mut conns = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let endpoint = &args.endpoints[client % args.endpoints.len()];
        conns.push(Conn::open(args.target, endpoint).await?);
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::new();
    for (client, mut conn) in conns.into_iter().enumerate() {
        let driver = driver.clone();
        let endpoint = args.endpoints[client % args.endpoints.len()].clone();
        let key_space = keys_per_client
            .get(client)
            .copied()
            .unwrap_or(KEYS_PER_CLIENT)
            .max(1);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let key = format!("bench/{client}/{}", i % key_space);
                let t = Instant::now();
                match driver.once(&mut conn, &endpoint, op, &key).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (latencies, errors, i.min(key_space))
        }));
    }
    let mut result = PhaseResult {
        ops: 0,
        errors: 0,
        seconds: 0.0,
        latencies: Vec::new(),
        keys_per_client: Vec::new(),
    };
    for task in tasks {
        if let Ok((latencies, errors, keys)) = task.await {
            result.errors += errors;
            result.latencies.extend(latencies);
            result.keys_per_client.push(keys);
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    result.ops = result.latencies.len();
    result.latencies.sort();
    Ok(result)
}

pub async fn kv(args: KvBenchArgs, json_output: bool) -> Result<()> {
    if args.clients == 0 {
        bail!("--clients: must be at least 1");
    }
    let tls = match &args.ca_file {
        Some(ca) => Some(
            hivemind_tls::cli_client(ca, None).map_err(|e| anyhow::anyhow!("--ca-file: {e}"))?,
        ),
        None => None,
    };
    let http = hivemind_tls::http_client(tls.as_ref())
        .pool_max_idle_per_host(args.clients)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let driver = Arc::new(Driver {
        http,
        scheme: hivemind_common::tls::scheme(tls.as_ref()),
        target: args.target,
        value: vec![b'x'; args.value_size],
    });
    if args.first_success {
        let started = Instant::now();
        let mut attempt = 0usize;
        loop {
            let endpoint = &args.endpoints[attempt % args.endpoints.len()];
            let written = match Conn::open(args.target, endpoint).await {
                Ok(mut conn) => driver
                    .once(&mut conn, endpoint, Op::Write, "bench/failover")
                    .await
                    .is_ok(),
                Err(_) => false,
            };
            if written {
                break;
            }
            attempt += 1;
            if started.elapsed() > Duration::from_secs(60) {
                bail!("no write succeeded within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if json_output {
            println!(
                "{}",
                json!({ "first_success_ms": ms, "attempts": attempt + 1 })
            );
        } else {
            println!(
                "first successful write after {ms:.1} ms ({} attempts)",
                attempt + 1
            );
        }
        return Ok(());
    }
    let writes = phase(driver.clone(), &args, Op::Write, &[]).await?;
    let reads = if args.writes_only {
        None
    } else {
        Some(phase(driver, &args, Op::Read, &writes.keys_per_client).await?)
    };
    let target = args
        .target
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string());
    if json_output {
        let summary = |r: &PhaseResult| {
            json!({
                "ops_per_sec": r.rate(), "mean_ms": r.mean_ms(), "p50_ms": r.percentile(0.5),
                "p90_ms": r.percentile(0.9), "p99_ms": r.percentile(0.99),
                "p999_ms": r.percentile(0.999), "max_ms": r.percentile(1.0), "errors": r.errors,
            })
        };
        println!(
            "{}",
            json!({
                "target": target, "clients": args.clients, "value_size": args.value_size,
                "duration_s": args.duration.as_secs_f64(),
                "writes": summary(&writes),
                "reads": reads.as_ref().map(summary),
            })
        );
    } else {
        println!(
            "target {target}, {} clients, {} s per phase, {} B values",
            args.clients,
            args.duration.as_secs_f64(),
            args.value_size
        );
        for (name, r) in [("writes", Some(&writes)), ("reads", reads.as_ref())] {
            if let Some(r) = r {
                println!(
                    "{name:<7} {:>9.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
                    r.rate(),
                    r.percentile(0.5),
                    r.percentile(0.99),
                    r.errors
                );
            }
        }
    }
    Ok(())
}
