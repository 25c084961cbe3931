//! `hivemind-bench`: the benchmarks' command line (see the crate's documentation and
//! BENCHMARKS.md). Build it with `cargo build --release -p hivemind-bench`; the benchmarks that
//! start clusters run the `hivemind` binary beside it (or `--hivemind PATH`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hivemind_bench::{checks, coord, dns, failover, gossip, kv, lite, members, nginx};

#[derive(Parser, Debug)]
#[command(
    name = "hivemind-bench",
    version,
    about = "Benchmarks of hivemind next to its peers"
)]
struct Cli {
    /// Print JSON instead of human-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// KV write and linearizable-read throughput and latency against hivemind or etcd.
    Kv(kv::KvBenchArgs),
    /// Failure detection and join dissemination (and peak RSS) of N members, next to serf.
    Gossip(gossip::GossipBenchArgs),
    /// Time from a host's service change until every dns member answers it.
    Propagation(dns::PropagationArgs),
    /// Responsibility failover of a node of dns machines: kill -9 of the holder until another
    /// machine receives from the host (starts its own cluster on loopback).
    Failover(failover::FailoverArgs),
    /// Admit N synthetic hosts and serve their records (for a DNS query-rate benchmark).
    DnsPublishers(dns::PublishersArgs),
    /// Registration -> first 200 through a real nginx run by the nginx role.
    Nginx(nginx::NginxBenchArgs),
    /// A backend's death until DNS and nginx drop it, and what 100 services with 1 s checks
    /// cost their host (starts its own cluster on loopback).
    Checks(checks::ChecksArgs),
    /// Watch delivery, lock hand-off and kept-alive leases against hivemind or etcd (on a
    /// running cluster).
    Coord(coord::CoordArgs),
    /// `hivemind-lite` beside `hivemind agent` with the same roles: size, start time, RSS
    /// (starts its own control plane on loopback).
    Lite(lite::LiteArgs),
    /// A control plane's cost per member: N synthetic members following the feed; per CP
    /// member its followers, connections and RSS, and the feed latency.
    Members(members::MembersArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Bench::Kv(args) => kv::kv(args, cli.json).await,
            Bench::Gossip(args) => gossip::gossip(args, cli.json).await,
            Bench::Propagation(args) => dns::propagation(args, cli.json).await,
            Bench::Failover(args) => failover::failover(args, cli.json).await,
            Bench::Nginx(args) => nginx::nginx(args, cli.json).await,
            Bench::Members(args) => members::members(args, cli.json).await,
            Bench::Checks(args) => checks::checks(args, cli.json).await,
            Bench::Coord(args) => coord::coord(args, cli.json).await,
            Bench::Lite(args) => lite::lite(args, cli.json).await,
            // Serves until the process is stopped: SIGINT or SIGTERM end it, and there is
            // nothing to clean up (the synthetic hosts fail in SWIM like any dead member).
            Bench::DnsPublishers(args) => {
                dns::publishers(args, tokio_util::sync::CancellationToken::new()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
