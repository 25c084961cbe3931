//! End-to-end: `hivemind dev` starts a working cluster in one process, prints where it is,
//! serves client commands, and on SIGINT stops with exit 0 and removes its temporary data.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use support::*;

#[test]
fn dev_cluster_serves_clients_and_cleans_up_on_sigint() {
    let base = dev_base_port();
    let logs = tempfile::tempdir().unwrap();
    let stderr_log = logs.path().join("dev.stderr");
    let mut child = Command::new(BIN)
        .args(["dev", "--base-port", &base.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&stderr_log).unwrap()))
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
    let data_dir = data_dir.unwrap_or_else(|| {
        let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "no data dir in:\n{printed}\nstderr (last lines, newest first):\n{}",
            tail.join("\n")
        )
    });
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

    // The sample host resolves through the dev cluster's dns member, with a real DNS client.
    assert!(
        printed.contains(&format!("dig @127.0.0.1 -p {}", base + 53)),
        "{printed}"
    );
    let mut query = Message::new(7, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(
        Name::from_ascii("web-1.host.hivemind.").unwrap(),
        RecordType::A,
    ));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), ("127.0.0.1", base + 53))
        .unwrap();
    let mut buf = [0u8; 1024];
    let len = socket.recv(&mut buf).unwrap();
    let answer = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(answer.answers.len(), 1, "{answer:?}");
    assert_eq!(answer.answers[0].data.to_string(), "127.0.0.1");
    // The CLI lists all six members alive.
    let out = cli(&["members", "--http-addr", &addr]);
    let table = stdout(&out);
    assert_eq!(table.matches(" alive ").count(), 6, "{table}");

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
