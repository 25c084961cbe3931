//! `hivemind-chaos`: the long form of the fault-injection run (see RELIABILITY.md).
//!
//! ```text
//! cargo build --release && cargo run --release -p hivemind-chaos -- \
//!     --members 3 --cycles 120 --seed 1 --bin target/release/hivemind
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hivemind_chaos::run::{run, RunConfig};

#[derive(Parser)]
#[command(about = "Run hivemind's control plane under faults and check what clients saw")]
struct Args {
    /// Control-plane members (3 or 5).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Fault cycles (each fault of the repertoire comes once per round, shuffled).
    #[arg(long, default_value_t = 100)]
    cycles: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// The hivemind binary under test.
    #[arg(long, default_value = "target/release/hivemind")]
    bin: PathBuf,
    /// Where data directories and logs go (default: a new temporary directory, kept).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Shortest and longest hold of a fault, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    hold_min_ms: u64,
    #[arg(long, default_value_t = 8000)]
    hold_max_ms: u64,
    /// Members on loopback even as root (no partitions).
    #[arg(long)]
    loopback: bool,
    /// No power-loss filesystem.
    #[arg(long)]
    no_power_loss: bool,
    /// Only these faults (repeatable; default: every fault the machine allows).
    #[arg(long, value_enum)]
    only: Vec<hivemind_chaos::nemesis::Fault>,
    /// Extra flags passed to every member (repeatable), e.g. `--member-arg=--worker-threads=2`.
    #[arg(long = "member-arg", allow_hyphen_values = true)]
    member_args: Vec<String>,
    /// No membership churn (synthetic role members joining, leaving, claiming keygroups).
    #[arg(long)]
    no_churn: bool,
    /// TLS everywhere, every member and synthetic member with a certificate of its own
    /// (DESIGN.md §6e-2): the control plane holds each to its identity.
    #[arg(long)]
    tls: bool,
    /// Lock clients beside the KV clients (DESIGN.md §6h): mutual exclusion checked by fence,
    /// and no lease expiring early.
    #[arg(long, default_value_t = 3)]
    locks: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.members < 3 {
        anyhow::bail!("--members must be at least 3");
    }
    let dir = match args.dir {
        Some(d) => d,
        None => tempfile_dir()?,
    };
    let config = RunConfig {
        members: args.members,
        cycles: args.cycles,
        seed: args.seed,
        clients: args.clients,
        bin: std::fs::canonicalize(&args.bin)?,
        dir: dir.clone(),
        hold_ms: (args.hold_min_ms, args.hold_max_ms),
        gap: Duration::from_secs(1),
        namespaces: !args.loopback && hivemind_chaos::net::namespaces_available(),
        power_loss: !args.no_power_loss && std::path::Path::new("/dev/fuse").exists(),
        only: args.only,
        extra_args: args.member_args,
        churn: !args.no_churn,
        tls: args.tls,
        locks: args.locks,
    };
    eprintln!("data and logs in {}", dir.display());
    // On SIGINT or SIGTERM the run is dropped: its members are killed by PID, the filesystems
    // unmounted and the namespaces removed.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        report = run(&config) => report?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    };
    println!("{report}");
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hivemind-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
