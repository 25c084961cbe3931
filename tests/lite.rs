//! `hivemind-lite` (DESIGN.md §6j): the member without the control plane. Built here on its own
//! (`cargo build -p hivemind-lite`: a workspace-wide build unifies features and would give it
//! the control plane back), checked to hold neither openraft nor fjall, and run as real
//! processes: a host member and a dns member join a cluster of three `hivemind` CP members, and
//! the dns member answers the host's name and service.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use hickory_proto::rr::RecordType;
use serde_json::json;
use support::dns::{answers_on, ZONE};
use support::{get_json, put_services, wait_ready, Cluster};

/// Builds `hivemind-lite` alone, in this test's profile, and answers its path.
fn build_lite() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--quiet", "-p", "hivemind-lite"])
        .output()
        .expect("cargo build -p hivemind-lite");
    assert!(
        built.status.success(),
        "cargo build -p hivemind-lite failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // target/debug/deps/lite-<hash> → target/debug/hivemind-lite
    let exe = std::env::current_exe().expect("this test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the profile directory");
    profile_dir.join("hivemind-lite")
}

#[test]
fn lite_is_built_without_openraft_and_fjall_and_has_no_control_plane_flag() {
    let lite = build_lite();
    let tree = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "-p",
            "hivemind-lite",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo tree");
    assert!(tree.status.success(), "cargo tree failed");
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert!(tree.contains("hivemind-member"), "{tree}");
    for absent in ["openraft ", "fjall "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(absent)),
            "hivemind-lite depends on {absent}"
        );
    }
    let refused = Command::new(&lite)
        .args(["agent", "--control-plane"])
        .output()
        .expect("run hivemind-lite");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--control-plane"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let help = Command::new(&lite).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.starts_with("A hivemind member without the control plane"));
    assert!(!help.contains("\n  dev "), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lite_members_join_as_host_and_dns() {
    let lite = build_lite();
    let mut cluster = Cluster::local_control_plane().await;
    let via = cluster.agents[0].http_addr();
    let dns_port = support::free_port();
    let dns_port_text = dns_port.to_string();
    let host = cluster.add_member(
        "lite-web",
        &via,
        &["--gossip-profile", "local", "--roles", "host"],
    );
    let dns = cluster.add_member(
        "lite-dns",
        &via,
        &[
            "--gossip-profile",
            "local",
            "--roles",
            "dns",
            "--dns-port",
            &dns_port_text,
        ],
    );
    for index in [host, dns] {
        cluster.agents[index].bin = lite.clone();
        cluster.agents[index].start();
    }

    // Both are members outside the control plane, alive and ready.
    for index in [host, dns] {
        wait_ready(&cluster.agents[index]).await;
    }
    let members = get_json(&cluster.agents[0].url("/v1/members"))
        .await
        .unwrap();
    for name in ["lite-web", "lite-dns"] {
        let member = members
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {members}"));
        assert_eq!(member["state"], "alive", "{member}");
        assert_eq!(member["control_plane"], false, "{member}");
    }

    // The lite dns member answers the lite host's name and the service it registers.
    answers_on(
        &[dns_port],
        "lite-web.host.hivemind.",
        RecordType::A,
        &["127.0.0.1"],
    )
    .await;
    assert_eq!(
        put_services(
            &cluster.agents[host],
            json!([{"name": "http", "port": 8080, "proto": "tcp"}])
        )
        .await,
        200
    );
    answers_on(
        &[dns_port],
        &format!("_http._tcp.{ZONE}"),
        RecordType::SRV,
        &[&format!("8080 lite-web.{ZONE}")],
    )
    .await;

    // Its client CLI talks to the cluster like `hivemind`'s.
    let status = Command::new(&lite)
        .args(["--http-addr", &cluster.agents[dns].http_addr(), "status"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}
