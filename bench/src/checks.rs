//! `hivemind-bench checks`: service health checks (DESIGN.md §6g) on the [`Edge`] cluster.
//!
//! 1. Backend death: the host registers `api` through Consul's agent API with an HTTP check
//!    (`--interval`, default 1s) on a real backend process (Python's `http.server`). Per trial
//!    the backend is killed with -9 and the time until the dns member stops answering its SRV
//!    record, and until the nginx member's running render drops its upstream, is taken (polled
//!    every 5 ms); the kill lands at a random point of the interval. Then the backend is restarted and the next trial waits until both have it
//!    back. Prints p50/p99/max (nearest rank).
//! 2. Cost: `--services` (default 100) services with 1 s HTTP checks on the same host, on a
//!    threaded backend; the host's CPU (utime + stime from /proc) over `--cpu-seconds`, next to
//!    the same host with none, as a share of one core.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hickory_proto::rr::Name;
use hivemind_common::stats::percentile_f64 as percentile;
use serde_json::{json, Value};

use crate::dns::srv_ports;
use crate::edge::{Edge, EDGE, WEB};
use crate::harness::wait;

#[derive(Args, Debug)]
pub struct ChecksArgs {
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// The HTTP check's interval.
    #[arg(long, default_value = "1s")]
    pub interval: String,
    #[arg(long, default_value_t = 100)]
    pub services: usize,
    #[arg(long, default_value_t = 30)]
    pub cpu_seconds: u64,
    #[arg(long, default_value = "/usr/sbin/nginx")]
    pub nginx_bin: String,
    /// First of the loopback ports used.
    #[arg(long, default_value_t = 19900)]
    pub base_port: u16,
}

/// A backend process: Python's threaded `http.server` on `port`, serving a `health` file.
struct Backend {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Backend {
    fn start(port: u16) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("health"), "ok\n")?;
        let mut backend = Self {
            child: None,
            port,
            dir,
        };
        backend.restart()?;
        Ok(backend)
    }

    fn restart(&mut self) -> Result<()> {
        let child = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "http.server",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start /usr/bin/python3 -m http.server")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// CPU ticks (utime + stime) of process `pid`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The share of one core process `pid` used over `seconds` (clock ticks are 100 per second).
async fn cpu_share(pid: u32, seconds: u64) -> Result<f64> {
    let before = cpu_ticks(pid).context("the host's /proc stat")?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = cpu_ticks(pid).context("the host's /proc stat")?;
    Ok((after - before) as f64 / (100.0 * seconds as f64))
}

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({"p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "max_ms": ms.last()})
}

pub async fn checks(args: ChecksArgs, json_out: bool) -> Result<()> {
    if args.trials == 0 {
        bail!("--trials: at least 1");
    }
    let interval = hivemind_common::duration::parse_go(&args.interval)
        .map_err(|e| anyhow::anyhow!("--interval: {e}"))?;
    let dir = tempfile::tempdir()?;
    let mut edge = Edge::start(dir.path(), args.base_port, &args.nginx_bin, &[]).await?;
    let http = hivemind_tls::http_client(None)
        .timeout(Duration::from_secs(2))
        .build()?;
    let host_pid = edge.procs[WEB as usize].pid().context("the host's pid")?;

    // The host's CPU with no services, before anything is registered.
    let idle = cpu_share(host_pid, args.cpu_seconds).await?;

    let mut backend = Backend::start(args.base_port + 60)?;
    let health = format!("http://127.0.0.1:{}/health", backend.port);
    let register = json!({"Name": "api", "Port": backend.port,
        "Check": {"HTTP": health, "Interval": args.interval, "Timeout": "1s"}});
    let answer = http
        .put(edge.url(WEB, "/v1/agent/service/register"))
        .json(&register)
        .send()
        .await?;
    if !answer.status().is_success() {
        bail!(
            "registering api: {} {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        );
    }
    let srv = Name::from_ascii("_api._tcp.hosts.default.hivemind.hivemind.")?;
    let config = edge.url(EDGE, "/v1/roles/nginx/config");
    let upstream = "hivemind_default_hosts__api";
    let backend_port = backend.port;
    let in_dns = || srv_ports(edge.dns_port, &srv, "web-1").is_some_and(|p| p == [backend_port]);
    let in_nginx = || async {
        get(&http, &config)
            .await
            .and_then(|c| Some(c["render"].as_str()?.contains(upstream)))
    };
    let (mut dns_ms, mut nginx_ms) = (Vec::new(), Vec::new());
    for _ in 0..args.trials {
        wait("api in DNS and nginx", Duration::from_secs(60), || async {
            (in_dns() && in_nginx().await == Some(true)).then_some(())
        })
        .await?;
        // The kill lands anywhere in the check's interval, not in step with it.
        tokio::time::sleep(interval.mul_f64(rand::random::<f64>())).await;
        backend.kill9();
        let killed = Instant::now();
        let (mut dns_out, mut nginx_out) = (None, None);
        while dns_out.is_none() || nginx_out.is_none() {
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("api still in DNS ({dns_out:?}) or nginx ({nginx_out:?}) a minute after its backend died");
            }
            let srv_now = srv_ports(edge.dns_port, &srv, "web-1");
            if dns_out.is_none() && srv_now.is_some_and(|p| p.is_empty()) {
                dns_out = Some(killed.elapsed());
            }
            if nginx_out.is_none() && in_nginx().await == Some(false) {
                nginx_out = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        dns_ms.push(dns_out.unwrap_or_default().as_secs_f64() * 1000.0);
        nginx_ms.push(nginx_out.unwrap_or_default().as_secs_f64() * 1000.0);
        backend.restart()?;
    }
    backend.kill9();

    // N services with 1 s checks on one host.
    backend.restart()?;
    let services: Vec<Value> = (0..args.services)
        .map(|i| {
            json!({"name": format!("svc{i}"), "port": backend.port,
            "checks": [{"http": format!("{health}?svc={i}"), "interval": "1s"}]})
        })
        .collect();
    let answer = http
        .put(edge.url(WEB, "/v1/roles/host/services"))
        .json(&services)
        .send()
        .await?;
    if !answer.status().is_success() {
        bail!(
            "registering {} services: {}",
            args.services,
            answer.status()
        );
    }
    let checks_url = edge.url(WEB, "/v1/agent/checks");
    wait("every check passing", Duration::from_secs(60), || async {
        let checks = get(&http, &checks_url).await?;
        let map = checks.as_object()?;
        (map.len() == args.services && map.values().all(|c| c["Status"] == "passing")).then_some(())
    })
    .await?;
    let busy = cpu_share(host_pid, args.cpu_seconds).await?;
    let metrics = http
        .get(edge.url(WEB, "/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let runs = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hivemind_host_check_runs_total "))
        .unwrap_or("?")
        .to_string();
    edge.stop_nginx();

    let (dns, nginx) = (summary(dns_ms), summary(nginx_ms));
    if json_out {
        println!(
            "{}",
            json!({"trials": args.trials, "interval": args.interval, "death_to_out_of_dns": dns,
                "death_to_out_of_nginx": nginx, "services": args.services,
                "host_cpu_idle": idle, "host_cpu_with_checks": busy, "check_runs": runs})
        );
    } else {
        let line = |what: &str, v: &Value| {
            println!(
                "backend kill -9 -> out of {what} over {} trials (interval {}): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                args.trials, args.interval,
                v["p50_ms"].as_f64().unwrap_or(f64::NAN),
                v["p99_ms"].as_f64().unwrap_or(f64::NAN),
                v["max_ms"].as_f64().unwrap_or(f64::NAN),
            )
        };
        line("DNS", &dns);
        line("nginx's running config", &nginx);
        println!(
            "host CPU over {} s: {:.2}% of a core with no services, {:.2}% with {} services checked every 1 s ({runs} check runs in all)",
            args.cpu_seconds,
            idle * 100.0,
            busy * 100.0,
            args.services
        );
    }
    Ok(())
}
