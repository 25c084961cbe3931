//! `hivemind-bench lite`: `hivemind-lite` beside `hivemind agent` running the same roles
//! (DESIGN.md §6j). On 3 control-plane members of `hivemind`, each trial starts one member of
//! each binary in turn (fresh data dir, `--roles host,dns` by default, joined through the
//! control plane) and takes:
//! - start time: from the spawn until `/v1/status` answers `ready: true`;
//! - RSS (VmRSS) after `--settle` seconds of running, and the peak (VmHWM).
//!
//! The member then stops with SIGTERM (it leaves). Sizes on disk are the files as built and
//! stripped copies (`strip`, when installed). Medians and maxima over `--trials` (nearest rank).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hivemind_common::stats::percentile_f64 as percentile;
use serde_json::{json, Value};

use crate::harness::{
    agent_args, control_plane_procs, hivemind_binary, join_flags, wait, Output, Proc,
};

#[derive(Args, Debug)]
pub struct LiteArgs {
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    /// The `hivemind-lite` binary (built alone: `cargo build --release -p hivemind-lite`).
    #[arg(long)]
    pub lite: PathBuf,
    /// The roles both members run.
    #[arg(long, default_value = "host,dns")]
    pub roles: String,
    /// Seconds a member runs before its RSS is read.
    #[arg(long, default_value_t = 5)]
    pub settle: u64,
    /// First of the loopback ports used.
    #[arg(long, default_value_t = 19500)]
    pub base_port: u16,
}

/// What one binary measured over the trials.
#[derive(Default)]
struct Samples {
    start_ms: Vec<f64>,
    rss_kib: Vec<f64>,
    peak_kib: Vec<f64>,
}

fn summary(mut values: Vec<f64>) -> Value {
    values.sort_by(f64::total_cmp);
    json!({"p50": percentile(&values, 0.5), "max": values.last()})
}

/// The file's size, and a stripped copy's when `strip` runs.
fn sizes(binary: &Path, dir: &Path) -> Result<Value> {
    let built = std::fs::metadata(binary)
        .with_context(|| format!("cannot read {}", binary.display()))?
        .len();
    let copy = dir.join(format!(
        "stripped-{}",
        binary.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::copy(binary, &copy)?;
    let stripped = std::process::Command::new("strip")
        .arg(&copy)
        .status()
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&copy).ok())
        .map(|m| m.len());
    Ok(json!({"bytes": built, "stripped_bytes": stripped}))
}

async fn ready(http: &reqwest::Client, url: &str) -> Option<()> {
    let status: Value = http.get(url).send().await.ok()?.json().await.ok()?;
    (status["ready"] == true).then_some(())
}

pub async fn lite(args: LiteArgs, json_out: bool) -> Result<()> {
    if !args.lite.is_file() {
        bail!(
            "no hivemind-lite at {} (cargo build --release -p hivemind-lite)",
            args.lite.display()
        );
    }
    let full = hivemind_binary()?;
    let dir = tempfile::tempdir()?;
    let port = |i: u16| args.base_port + 2 * i;
    let joins = join_flags((0..3).map(port));
    let mut cp = control_plane_procs(&full, dir.path(), port, &[]);
    for (i, p) in cp.iter_mut().enumerate() {
        p.start(Output::File(dir.path().join(format!("cp{}.log", i + 1))))?;
    }
    let http = hivemind_tls::http_client(None)
        .timeout(Duration::from_secs(2))
        .build()?;
    for i in 0..3 {
        let url = format!("http://127.0.0.1:{}/v1/status", port(i));
        wait("the control plane ready", Duration::from_secs(60), || {
            ready(&http, &url)
        })
        .await?;
    }

    let binaries = [
        ("hivemind agent", full.clone()),
        ("hivemind-lite", args.lite.clone()),
    ];
    let mut samples: Vec<Samples> = binaries.iter().map(|_| Samples::default()).collect();
    let mut next = 3u16;
    for trial in 0..args.trials {
        for (b, (kind, program)) in binaries.iter().enumerate() {
            let name = format!("m{trial}-{}", if b == 0 { "full" } else { "lite" });
            let (http_port, dns_port) = (port(next), port(next) + 40);
            next += 1;
            let mut extra = joins.clone();
            extra.extend([
                "--roles".to_string(),
                args.roles.clone(),
                "--dns-port".into(),
                dns_port.to_string(),
            ]);
            let mut member = Proc::new(
                program,
                agent_args(dir.path(), &name, http_port, "local", &extra),
            );
            let url = format!("http://127.0.0.1:{http_port}/v1/status");
            let started = Instant::now();
            member.start(Output::File(dir.path().join(format!("{name}.log"))))?;
            wait(&format!("{kind} ready"), Duration::from_secs(60), || {
                ready(&http, &url)
            })
            .await?;
            samples[b]
                .start_ms
                .push(started.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_secs(args.settle)).await;
            let rss = member.rss_kib().context("the member's VmRSS")?;
            let peak = member.peak_rss_kib().context("the member's VmHWM")?;
            samples[b].rss_kib.push(rss as f64);
            samples[b].peak_kib.push(peak as f64);
            member.terminate(Duration::from_secs(10));
        }
    }
    drop(cp);

    let mut report = Vec::new();
    for ((kind, program), s) in binaries.iter().zip(samples) {
        report.push(json!({
            "binary": kind,
            "size": sizes(program, dir.path())?,
            "start_to_ready_ms": summary(s.start_ms),
            "rss_kib": summary(s.rss_kib),
            "peak_rss_kib": summary(s.peak_kib),
        }));
    }
    let report = json!({"roles": args.roles, "trials": args.trials, "settle_s": args.settle, "binaries": report});
    if json_out {
        println!("{report}");
        return Ok(());
    }
    println!(
        "roles {}, {} trials, RSS after {} s (p50 / max)",
        args.roles, args.trials, args.settle
    );
    println!(
        "{:<16} {:>12} {:>14} {:>20} {:>16} {:>16}",
        "binary", "size MiB", "stripped MiB", "start->ready ms", "RSS MiB", "peak RSS MiB"
    );
    let mib = |v: &Value| v.as_f64().map_or(f64::NAN, |b| b / (1024.0 * 1024.0));
    let kib_mib = |v: &Value| v.as_f64().map_or(f64::NAN, |k| k / 1024.0);
    for b in report["binaries"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:>12.1} {:>14.1} {:>9.0} / {:>7.0} {:>7.1} / {:>6.1} {:>7.1} / {:>6.1}",
            b["binary"].as_str().unwrap_or("?"),
            mib(&b["size"]["bytes"]),
            mib(&b["size"]["stripped_bytes"]),
            b["start_to_ready_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            b["start_to_ready_ms"]["max"].as_f64().unwrap_or(f64::NAN),
            kib_mib(&b["rss_kib"]["p50"]),
            kib_mib(&b["rss_kib"]["max"]),
            kib_mib(&b["peak_rss_kib"]["p50"]),
            kib_mib(&b["peak_rss_kib"]["max"]),
        );
    }
    Ok(())
}
