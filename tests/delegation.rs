//! DNS a parent zone can delegate to (DESIGN.md §6i), with real programs: two dns members on
//! port 53 of their own loopback addresses (127.0.53.1 and .2), `dig` reading the apex NS with
//! its glue and being refused a zone transfer, and Debian's `unbound` as the recursive resolver
//! in front, with a primed stub zone: it asks the one address it is given for the apex NS, then
//! resolves through the servers listed there (the second one, known only from there, answers
//! too).
//! Needs root (port 53), `dig` (dnsutils) and `unbound`; `.ci/run` installs both.

mod support;

use std::process::{Child, Command, Stdio};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;
use support::*;

const NS1: &str = "127.0.53.1";
const NS2: &str = "127.0.53.2";

/// unbound in the foreground, stopped by PID when dropped.
struct Unbound(Child);

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `dig` with `args`: its whole output.
fn dig(args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short` through the resolver on `port`.
fn resolve(port: u16, name: &str, rtype: &str) -> Vec<String> {
    let mut lines: Vec<String> =
        dig(&["@127.0.0.1", "-p", &port.to_string(), "+short", name, rtype])
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .collect();
    lines.sort();
    lines
}

fn unbound(dir: &std::path::Path, port: u16) -> Unbound {
    let config = dir.join("unbound.conf");
    std::fs::write(
        &config,
        format!(
            r#"server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-not-query-localhost: no
  do-ip6: no
  chroot: ""
  username: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  logfile: "{dir}/unbound.log"
  verbosity: 1
  num-threads: 1
  module-config: "iterator"
  qname-minimisation: no
  access-control: 127.0.0.0/8 allow
remote-control:
  control-enable: no
stub-zone:
  name: "hivemind."
  stub-addr: {NS1}@53
  stub-prime: yes
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    Unbound(
        Command::new("unbound")
            .args(["-d", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resolver_delegated_to_the_apex_ns_resolves_hosts_and_services_through_them() {
    if !have("dig") || !have("unbound") {
        return cannot_run("dig or unbound not installed (apt-get install dnsutils unbound)");
    }
    if !is_root() {
        return cannot_run("port 53 needs root");
    }
    let mut cluster = Cluster::local_control_plane().await;
    let web = cluster.start_role_member("web-1", "host", &[]);
    wait_for("web-1 to answer", || async {
        get_json(&cluster.agents[web].url("/v1/status")).await.ok()
    })
    .await;
    assert_eq!(
        put_services(
            &cluster.agents[web],
            json!([{"name": "http", "port": 8080, "proto": "tcp"}])
        )
        .await,
        200
    );
    let mut servers = Vec::new();
    for (name, ip) in [("ns-1", NS1), ("ns-2", NS2)] {
        servers.push(cluster.start_role_member(name, "dns", &["--bind", ip, "--dns-port", "53"]));
    }

    // The apex NS names both, with glue; the SOA's MNAME is one of them.
    wait_for("the apex NS to list both dns members with glue", || async {
        let out = dig(&["@127.0.53.1", "+norec", "hivemind.", "NS"]);
        let listed = ["ns-1.ns.hivemind.", "ns-2.ns.hivemind."]
            .iter()
            .all(|ns| out.contains(&format!("NS\t{ns}")));
        let glue = out.contains(&format!("ns-1.ns.hivemind.\t5\tIN\tA\t{NS1}"))
            && out.contains(&format!("ns-2.ns.hivemind.\t5\tIN\tA\t{NS2}"));
        (listed && glue && out.contains("flags: qr aa")).then_some(())
    })
    .await;
    wait_for("ns-2's SOA to name ns-1 as the primary", || async {
        let soa = dig(&["@127.0.53.2", "+short", "hivemind.", "SOA"]);
        soa.starts_with("ns-1.ns.hivemind. ").then_some(())
    })
    .await;
    // No zone transfers.
    for transfer in ["AXFR", "IXFR=1"] {
        let out = dig(&["@127.0.53.1", "+tcp", "hivemind.", transfer]);
        assert!(out.contains("Transfer failed"), "{transfer}: {out}");
    }
    for transfer in [RecordType::AXFR, RecordType::IXFR] {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let query = support::dns::query_message("hivemind.", transfer);
        socket.send_to(&query, (NS1, 53)).unwrap();
        let mut buf = [0u8; 4096];
        let len = socket.recv(&mut buf).unwrap();
        let answer = support::dns::parse(&buf[..len]);
        assert_eq!(answer.code, ResponseCode::Refused, "{transfer}: {answer:?}");
    }

    // A resolver that knows only ns-1's address resolves a host and a service.
    let port = free_port();
    let _resolver = unbound(cluster.dir.path(), port);
    wait_for(
        "unbound to resolve web-1 through the delegation",
        || async { (resolve(port, "web-1.host.hivemind.", "A") == ["127.0.0.1"]).then_some(()) },
    )
    .await;
    wait_for("unbound to resolve the service", || async {
        let srv = resolve(port, "_http._tcp.hosts.default.hivemind.hivemind.", "SRV");
        (srv == ["0 0 8080 web-1.hosts.default.hivemind.hivemind."]).then_some(())
    })
    .await;

    // unbound spreads its queries over the servers the apex NS listed: ns-2, whose address it
    // learned only from there, answers some of 40 fresh names.
    for n in 0..40 {
        let _ = resolve(port, &format!("probe-{n}.host.hivemind."), "A");
    }
    let ns2_metrics = format!(
        "http://{NS2}:{}/metrics",
        cluster.agents[servers[1]].http_port
    );
    wait_for("ns-2 to have answered queries unbound sent it", || async {
        let text = client()
            .get(&ns2_metrics)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let answered: f64 = text
            .lines()
            .filter(|l| l.starts_with("hivemind_dns_queries_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (answered >= 1.0).then_some(())
    })
    .await;
}
