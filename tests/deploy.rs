//! The recipes in `deploy/`, run the way an operator runs them: `local-cluster.sh` (and, where
//! root may create network namespaces, `netns-cluster.sh`) up, status, down with the built
//! binary; the Kubernetes manifests linted (yamllint, installed by `.ci/run`) and checked
//! against the agent's real flags.

mod support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(repo().join("deploy").join(name));
    command.args(args).env("HIVEMIND_BIN", BIN);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A base port whose 80 successors are free now (the script uses base + 10*i + 0..3).
fn free_base() -> u16 {
    'search: for _ in 0..100 {
        let base = free_port();
        if base > 65_000 {
            continue;
        }
        for p in base..base + 80 {
            if TcpListener::bind(("127.0.0.1", p)).is_err() {
                continue 'search;
            }
        }
        return base;
    }
    panic!("no free range of 80 ports");
}

fn pids(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "pid").then(|| {
                std::fs::read_to_string(&path)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            })
        })
        .collect()
}

fn running(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) is not running.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2) != Some("Z"))
}

#[test]
fn local_cluster_script_comes_up_healthy_and_down_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "CLUSTER_DIR",
            dir.path().join("cluster").display().to_string(),
        ),
        ("BASE_PORT", free_base().to_string()),
    ];
    let up = script("local-cluster.sh", &["up"], &env);
    let cluster_dir = dir.path().join("cluster");
    let started = pids(&cluster_dir);
    let status = script("local-cluster.sh", &["status"], &env);
    let down = script("local-cluster.sh", &["down"], &env);
    assert!(up.status.success(), "up: {}", text(&up));
    assert_eq!(started.len(), 7, "3 CP, 2 hosts, 2 dns: {}", text(&up));
    assert!(status.status.success(), "status: {}", text(&status));
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("cluster: healthy"), "{shown}");
    assert!(shown.contains("members: 7 alive"), "{shown}");
    assert!(down.status.success(), "down: {}", text(&down));
    let left: Vec<u32> = started.into_iter().filter(|p| running(*p)).collect();
    assert!(left.is_empty(), "still running after down: {left:?}");
    // status after down says so, with a failing exit code.
    let after = script("local-cluster.sh", &["status"], &env);
    assert!(!after.status.success());
}

/// Root with network namespaces (CI containers may lack them: then this says so and passes).
#[test]
fn netns_cluster_script_runs_each_member_in_its_own_namespace() {
    let probe = Command::new("ip")
        .args(["netns", "add", "hm-probe"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip")
                .args(["netns", "del", "hm-probe"])
                .status();
        }
        _ => {
            cannot_run("network namespaces unavailable here (not root?): netns-cluster.sh");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CLUSTER_DIR", dir.path().display().to_string()),
        ("PROFILE", "local".to_string()),
    ];
    let up = script("netns-cluster.sh", &["up"], &env);
    let started = pids(dir.path());
    let status = script("netns-cluster.sh", &["status"], &env);
    let down = script("netns-cluster.sh", &["down"], &env);
    assert!(up.status.success(), "up: {}", text(&up));
    assert!(status.status.success(), "status: {}", text(&status));
    assert!(String::from_utf8_lossy(&status.stdout).contains("cluster: healthy"));
    assert!(down.status.success(), "down: {}", text(&down));
    assert!(started.iter().all(|p| !running(*p)), "processes left");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains("hm-"));
}

/// Every `--flag` the agent accepts, from its own help.
fn agent_flags() -> BTreeSet<String> {
    let help = cli(&["agent", "--help"]);
    stdout(&help)
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .split('=')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The manifests as JSON documents (through python3's yaml), or `None` without it.
fn manifests() -> Option<Vec<(String, Value)>> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/k8s")).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(&path)
            .output()
            .ok()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No module named 'yaml'") {
                return None;
            }
            panic!("{} does not parse: {err}", path.display());
        }
        let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        docs.extend(parsed.into_iter().map(|d| (file.clone(), d)));
    }
    Some(docs)
}

#[test]
fn kubernetes_manifests_lint_and_use_only_real_flags() {
    match Command::new("yamllint")
        .args([
            "-d",
            "{extends: relaxed, rules: {line-length: {max: 140}}}",
            "-s",
        ])
        .arg(repo().join("deploy/k8s"))
        .output()
    {
        Ok(out) => assert!(out.status.success(), "yamllint: {}", text(&out)),
        Err(_) => cannot_run("yamllint not installed (.ci/run installs it)"),
    }
    let Some(docs) = manifests() else {
        cannot_run("python3 with yaml not available (.ci/run installs it)");
        return;
    };
    let flags = agent_flags();
    let kinds: BTreeSet<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    for kind in [
        "StatefulSet",
        "DaemonSet",
        "Deployment",
        "Service",
        "Secret",
        "Namespace",
    ] {
        assert!(kinds.contains(kind), "no {kind} among {kinds:?}");
    }
    for (file, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        assert!(doc["apiVersion"].is_string(), "{file}: apiVersion");
        assert!(doc["metadata"]["name"].is_string(), "{file}: metadata.name");
        if !["StatefulSet", "DaemonSet", "Deployment"].contains(&kind) {
            continue;
        }
        let spec = &doc["spec"];
        let selector = spec["selector"]["matchLabels"].as_object().unwrap();
        let labels = &spec["template"]["metadata"]["labels"];
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "{file}: {kind} selector must match its pods");
        }
        if kind == "StatefulSet" {
            let service = spec["serviceName"].as_str().unwrap();
            assert!(
                docs.iter()
                    .any(|(_, d)| d["kind"] == "Service" && d["metadata"]["name"] == service),
                "{file}: no headless Service {service}"
            );
        }
        for container in spec["template"]["spec"]["containers"].as_array().unwrap() {
            assert!(container["image"].is_string(), "{file}: image");
            let args: Vec<&str> = container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(args[0], "agent", "{file}");
            for arg in &args[1..] {
                let flag = arg.split('=').next().unwrap();
                assert!(
                    flags.contains(flag),
                    "{file}: {flag} is not a flag of hivemind agent"
                );
            }
        }
    }
}
