//! End-to-end: `hivemind dev` starts a working cluster in one process, prints where it is,
//! serves client commands, and on SIGINT stops with exit 0 and removes its temporary data.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn dev_cluster_serves_clients_and_cleans_up_on_sigint() {
    // Ten consecutive free ports are not guaranteed; pick a base whose three HTTP ports are free.
    let base = loop {
        let candidate = free_port();
        if candidate < 60000
            && (1..=2)
                .all(|i| std::net::TcpListener::bind(("127.0.0.1", candidate + 10 * i)).is_ok())
        {
            break candidate;
        }
    };
    let mut child = Command::new(BIN)
        .args(["dev", "--base-port", &base.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut data_dir = None;
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.split("data in ").nth(1) {
            data_dir = Some(rest.trim_end_matches(" (removed on exit)").to_string());
        }
        if line.starts_with("Stop with Ctrl-C") {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "dev did not print its table:\n{printed}"
        );
    }
    let data_dir = data_dir.unwrap_or_else(|| panic!("no data dir in:\n{printed}"));
    assert!(std::path::Path::new(&data_dir).exists());
    assert!(printed.contains(&format!("127.0.0.1:{base}")), "{printed}");

    let addr = format!("127.0.0.1:{base}");
    let out = cli(&["kv", "put", "greeting", "hello", "--http-addr", &addr]);
    assert!(out.status.success(), "{}", stderr(&out));
    let other = format!("127.0.0.1:{}", base + 20);
    let out = cli(&["kv", "get", "greeting", "--http-addr", &other]);
    assert_eq!(stdout(&out).trim(), "hello");
    let out = cli(&["status", "--http-addr", &addr]);
    assert!(stdout(&out).contains("ready: yes"), "{}", stdout(&out));

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("dev did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "temporary data left behind"
    );
}
