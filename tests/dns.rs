//! The host and dns roles end to end: 3 CP, 2 host members and 2 dns members (joined through
//! members outside the control plane), queried with a real DNS client over UDP and TCP.

mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use support::dns::*;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn hosts_resolve_on_every_dns_member_and_follow_changes() {
    let local = ["--gossip-profile", "local"];
    let mut cluster = Cluster::control_plane(3, &local);
    cluster.wait_healthy().await;
    let via_cp = cluster.agents[0].http_addr();

    // web-1 listens everywhere and takes its advertised address from a reloadable config.
    let config = cluster.dir.path().join("web-1.toml");
    std::fs::write(&config, "advertise = \"127.0.0.1\"\n").unwrap();
    let config_path = config.display().to_string();
    let web1 = cluster.add_member(
        "web-1",
        &via_cp,
        &[
            "--gossip-profile",
            "local",
            "--roles",
            "host",
            "--bind",
            "0.0.0.0",
            "--insecure",
            "--address-check",
            "1s",
            "--config",
            &config_path,
        ],
    );
    cluster.agents[web1].start();
    let via_web1 = cluster.agents[web1].http_addr();
    let web2 = cluster.add_member(
        "web-2",
        &via_web1,
        &["--gossip-profile", "local", "--roles", "host"],
    );
    cluster.agents[web2].start();
    let via_web2 = cluster.agents[web2].http_addr();
    let mut dns_ports = Vec::new();
    for (name, via) in [("ns-1", &via_web1), ("ns-2", &via_web2)] {
        let port = free_port();
        let p = port.to_string();
        let ns = cluster.add_member(
            name,
            via,
            &[
                "--gossip-profile",
                "local",
                "--roles",
                "dns",
                "--dns-port",
                &p,
            ],
        );
        cluster.agents[ns].start();
        dns_ports.push((ns, port));
    }
    let ports: Vec<u16> = dns_ports.iter().map(|(_, p)| *p).collect();

    // Both name forms resolve on both dns members; answers are authoritative.
    answers_on(
        &ports,
        "web-1.host.hivemind.",
        RecordType::A,
        &["127.0.0.1"],
    )
    .await;
    answers_on(
        &ports,
        "web-2.host.hivemind.",
        RecordType::A,
        &["127.0.0.1"],
    )
    .await;
    answers_on(
        &ports,
        &format!("web-1.{ZONE}"),
        RecordType::A,
        &["127.0.0.1"],
    )
    .await;
    assert!(
        udp(ports[0], "web-1.host.hivemind.", RecordType::A)
            .unwrap()
            .authoritative
    );
    assert_eq!(
        tcp(ports[1], "web-2.host.hivemind.", RecordType::A).answers,
        ["127.0.0.1"]
    );
    // The hosts wait for nothing once dns members are live.
    wait_for("web-1 ready", || async {
        let s = get_json(&cluster.agents[web1].url("/v1/status"))
            .await
            .ok()?;
        (s["ready"] == true).then_some(())
    })
    .await;

    // A registered service: SRV on both, with the target's address in the additional section.
    assert_eq!(
        put_services(
            &cluster.agents[web2],
            json!([{"name": "http", "port": 8080, "proto": "tcp"}])
        )
        .await,
        200
    );
    let srv = format!("_http._tcp.{ZONE}");
    answers_on(
        &ports,
        &srv,
        RecordType::SRV,
        &[&format!("8080 web-2.{ZONE}")],
    )
    .await;
    assert_eq!(
        udp(ports[0], &srv, RecordType::SRV).unwrap().additionals,
        ["127.0.0.1"]
    );
    assert_eq!(
        put_services(
            &cluster.agents[web2],
            json!([{"name": "http", "port": 0, "proto": "tcp"}])
        )
        .await,
        400
    );

    // An address change reaches both at once.
    std::fs::write(&config, "advertise = \"127.0.0.2\"\n").unwrap();
    cluster.agents[web1].signal("HUP");
    answers_on(
        &ports,
        "web-1.host.hivemind.",
        RecordType::A,
        &["127.0.0.2"],
    )
    .await;

    // The dns map shows the records with their seqs.
    let map = get_json(&cluster.agents[dns_ports[0].0].url("/v1/roles/dns/records"))
        .await
        .unwrap();
    let web2_seq = map["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "web-2")
        .map(|r| r["seq"].as_u64().unwrap())
        .unwrap();
    assert!(web2_seq >= 2, "{map}");
    assert_eq!(map["refused_sealed"], 0);

    // The roles' counters are in /metrics: queries by rcode and records on the dns member,
    // seq and open subscriber streams on a host (one per dns member).
    let scrape = |url: String| async move {
        let text = client().get(url).send().await.ok()?.text().await.ok()?;
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).ok()
    };
    let value = |scrape: &prometheus_parse::Scrape, metric: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    // A UDP loop hands its counts over in batches, and whenever it waits (within 200 ms).
    let ns_metrics = wait_for("the dns member's query counts in /metrics", || async {
        let metrics = scrape(cluster.agents[dns_ports[0].0].url("/metrics")).await?;
        let answered = value(
            &metrics,
            "hivemind_dns_queries_total",
            Some(("rcode", "NoError")),
        )?;
        (answered >= 1.0).then_some(metrics)
    })
    .await;
    // Latency histograms: DNS answers on the dns member, Raft appends on a CP member; each
    // with buckets, a sum and a count that matches the +Inf bucket.
    let histogram_count = |text: &str, name: &str| -> f64 {
        let number = |suffix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}{suffix}")))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name}{suffix} in /metrics"))
        };
        let count = number("_count ");
        assert_eq!(number("_bucket{le=\"+Inf\"} "), count, "{name}");
        number("_sum ");
        count
    };
    let text = |url: String| async move {
        client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let ns_text = text(cluster.agents[dns_ports[0].0].url("/metrics")).await;
    assert!(histogram_count(&ns_text, "hivemind_dns_query_duration_seconds") >= 1.0);
    let cp_text = text(cluster.agents[0].url("/metrics")).await;
    assert!(histogram_count(&cp_text, "hivemind_raft_append_duration_seconds") >= 1.0);
    // Raft's commit index and leader changes (at least the first election), the dns member's
    // responsibility claims.
    let number = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    assert!(number(&cp_text, "hivemind_raft_commit_index") >= 1.0);
    assert!(number(&cp_text, "hivemind_raft_leader_changes_total") >= 1.0);
    assert!(number(&ns_text, "hivemind_dns_responsibility_claims_total") >= 1.0);
    assert_eq!(number(&ns_text, "hivemind_dns_keygroups_held"), 1.0);
    assert!(
        value(
            &ns_metrics,
            "hivemind_dns_queries_total",
            Some(("rcode", "NoError"))
        )
        .unwrap()
            >= 1.0
    );
    assert!(value(&ns_metrics, "hivemind_dns_records", None).unwrap() >= 2.0);
    wait_for("web-2 serving a stream to each dns member", || async {
        let m = scrape(cluster.agents[web2].url("/metrics")).await?;
        (value(&m, "hivemind_host_subscribers", None)? >= 2.0).then_some(())
    })
    .await;

    // kill -9 of a host: its names are NXDOMAIN (with the SOA) on every dns member.
    cluster.agents[web2].kill9();
    nxdomain_on(&ports, "web-2.host.hivemind.").await;
    nxdomain_on(&ports, &format!("web-2.{ZONE}")).await;

    // A dns member started after all of this answers the same.
    let late_port = free_port();
    let p = late_port.to_string();
    let late = cluster.add_member(
        "ns-3",
        &via_cp,
        &[
            "--gossip-profile",
            "local",
            "--roles",
            "dns",
            "--dns-port",
            &p,
        ],
    );
    cluster.agents[late].start();
    answers_on(
        &[late_port],
        "web-1.host.hivemind.",
        RecordType::A,
        &["127.0.0.2"],
    )
    .await;
    nxdomain_on(&[late_port], "web-2.host.hivemind.").await;
    // ...having first copied the map from a sibling dns member (simple join).
    let late_map = get_json(&cluster.agents[late].url("/v1/roles/dns/records"))
        .await
        .unwrap();
    assert!(late_map["copied"].as_u64().unwrap() >= 1, "{late_map}");
    let all_ports = [ports[0], ports[1], late_port];

    // Outside the domain: REFUSED; garbage: FORMERR; membership names answer too.
    assert_eq!(
        udp(late_port, "example.com.", RecordType::A).unwrap().code,
        ResponseCode::Refused
    );
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 9]);
    socket
        .send_to(&garbage, (Ipv4Addr::LOCALHOST, late_port))
        .unwrap();
    let mut buf = [0u8; 512];
    let len = socket.recv(&mut buf).unwrap();
    let formerr = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    answers_on(
        &[late_port],
        "cp1.member.hivemind.",
        RecordType::A,
        &["127.0.0.1"],
    )
    .await;

    // A publisher sealing with another secret: its record is refused (after re-reading the
    // keygroup's config) and counted, and its name never resolves.
    // (The forger is `hivemind-bench dns-publishers --wrong-secret`, run in this process: a
    // synthetic host admitted through the real join path, serving its own stream.)
    let forger_stop = tokio_util::sync::CancellationToken::new();
    let forger = tokio::spawn(hivemind_bench::dns::publishers(
        hivemind_bench::dns::PublishersArgs {
            via: cluster.agents[dns_ports[0].0].http_addr(),
            keygroup: "hivemind/default/hosts".into(),
            hosts: 1,
            listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            wrong_secret: true,
            prefix: "forged".into(),
        },
        forger_stop.clone(),
    ));
    for (ns, _) in &dns_ports {
        wait_for("the forged record refused and counted", || async {
            let map = get_json(&cluster.agents[*ns].url("/v1/roles/dns/records"))
                .await
                .ok()?;
            (map["refused_sealed"].as_u64()? >= 1).then_some(())
        })
        .await;
    }
    forger_stop.cancel();
    forger.await.unwrap().unwrap();
    nxdomain_on(&ports, "forged-0.host.hivemind.").await;

    // A tombstoned keygroup's names go everywhere (deleted through a replica node's member).
    let response = client()
        .delete(cluster.agents[web1].url("/v1/keygroups/hivemind/default/hosts"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tombstoned"], true, "{body}");
    nxdomain_on(&all_ports, "web-1.host.hivemind.").await;
    nxdomain_on(&all_ports, &format!("web-1.{ZONE}")).await;
}
