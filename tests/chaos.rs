//! The short form of the fault-injection run (the long form: `hivemind-chaos`, RELIABILITY.md):
//! three real control-plane members, eight clients doing reads, writes, CAS and deletes, and
//! two cycles of every fault this machine allows (kill -9 of the leader, a random member, a
//! minority, everyone; SIGSTOP of the leader and a random member; as root: the leader
//! isolated, a random minority cut off, a bridge; with FUSE: power loss of everyone and of one
//! member), with a fixed seed. The history must be linearizable, every member's registry equal
//! at the end, no member may panic. The members run on TLS with certificates of their own, and
//! the synthetic churn members call as themselves. And the power-loss nemesis must catch a
//! store that acknowledges appends it has not synced.

mod support;

use std::time::Duration;

use hivemind_chaos::nemesis::Fault;
use hivemind_chaos::run::{run, RunConfig};
use support::*;

/// The two runs share the machine's two cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(dir: &std::path::Path) -> RunConfig {
    let namespaces = hivemind_chaos::net::namespaces_available();
    if !namespaces {
        cannot_run(
            "network namespaces and nftables unavailable (root, iproute2, nftables): no partitions",
        );
    }
    let power_loss = std::path::Path::new("/dev/fuse").exists();
    if !power_loss {
        cannot_run("/dev/fuse unavailable (fuse3): no power loss");
    }
    RunConfig {
        members: 3,
        cycles: 0,
        seed: 16,
        clients: 8,
        bin: BIN.into(),
        dir: dir.to_path_buf(),
        hold_ms: (1000, 2000),
        gap: Duration::from_millis(500),
        namespaces,
        power_loss,
        only: Vec::new(),
        extra_args: Vec::new(),
        churn: true,
        tls: false,
        locks: 3,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_twice_leaves_a_linearizable_history_and_equal_registries() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // As a production cluster runs (DESIGN.md §6e-2): TLS, each member and each synthetic
    // churn member with a certificate of its own, held to it by the control plane.
    config.tls = true;
    // Two rounds: every fault twice, about 70 s.
    config.cycles = 2 * hivemind_chaos::nemesis::repertoire(hivemind_chaos::nemesis::Abilities {
        members: 3,
        partitions: config.namespaces,
        power_loss: config.power_loss,
    })
    .len();
    let report = run(&config).await.expect("the run itself");
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.cycles(), config.cycles, "every fault twice");
    assert!(report.per_fault.values().all(|s| s.cycles == 2), "{report}");
    let ok: u64 = report.per_fault.values().map(|s| s.ops.ok).sum();
    assert!(ok > 1000, "the workload hardly ran: {report}");
    let (acquired, writes, _) = report.locks.expect("the lock workload ran");
    assert!(
        acquired > 10 && writes > 10,
        "the lock workload hardly ran: {report}"
    );
    for kind in ["join", "leave", "claim"] {
        assert!(
            report.churn.get(kind).is_some_and(|t| t.ok > 0),
            "no acknowledged {kind}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn power_loss_catches_a_follower_that_acknowledges_before_its_fsync() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    if !config.power_loss {
        return;
    }
    config.cycles = 4;
    config.hold_ms = (500, 1000);
    config.only = vec![Fault::PowerLossAll];
    config.extra_args = vec!["--unsafe-ack-before-persist".into()];
    let report = run(&config).await.expect("the run itself");
    println!("{report}");
    assert!(
        !report.passed(),
        "the power-loss nemesis did not catch acknowledged appends that were never synced: {report}"
    );
}
