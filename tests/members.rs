//! End-to-end: SWIM gossip among real control-plane processes: everyone sees everyone, a
//! kill -9 is detected and recorded in the registry once, a restart comes back as a new
//! generation, and sealed gossip drops packets that do not open.

mod support;

use serde_json::Value;
use support::*;

async fn states(agent: &Agent) -> Option<Vec<(String, String, u64)>> {
    let members = get_json(&agent.url("/v1/members")).await.ok()?;
    let mut out: Vec<_> = members
        .as_array()?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["state"].as_str().unwrap_or_default().to_string(),
                m["generation"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    Some(out)
}

/// Waits until `agent` lists member `name` in `state` at `generation`.
async fn sees(agent: &Agent, name: &str, state: &str, generation: u64) {
    let want = (name.to_string(), state.to_string(), generation);
    wait_for(
        &format!(
            "{} to see {name} {state} (generation {generation})",
            agent.name
        ),
        || async { states(agent).await?.contains(&want).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_member_is_failed_once_everywhere_and_comes_back_as_a_new_generation() {
    let mut cluster = Cluster::control_plane(3, &["--gossip-profile", "local"]);
    cluster.wait_healthy().await;
    // Everyone gossips with everyone.
    for a in &cluster.agents {
        wait_for(&format!("{} to gossip with 2 peers", a.name), || async {
            let status = get_json(&a.url("/v1/status")).await.ok()?;
            (status["gossip"]["members"] == 2).then_some(())
        })
        .await;
    }

    cluster.agents[2].kill9();
    for a in cluster.running() {
        wait_for(&format!("{} to see cp3 failed", a.name), || async {
            let s = states(a).await?;
            s.contains(&("cp3".to_string(), "failed".to_string(), 1))
                .then_some(())
        })
        .await;
    }
    // The registry recorded the failure exactly once, though both survivors reported it.
    let survivor = &cluster.agents[0];
    let events = wait_for("member_failed in the feed", || async {
        let page = get_json(&survivor.url("/v1/events?after=0")).await.ok()?;
        let failed: Vec<Value> = page["events"]
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "member_failed")
            .cloned()
            .collect();
        (!failed.is_empty()).then_some(failed)
    })
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["name"], "cp3");
    assert_eq!(events[0]["generation"], 1);

    cluster.agents[2].start();
    for a in &cluster.agents {
        wait_for(
            &format!("{} to see cp3 alive as generation 2", a.name),
            || async {
                let s = states(a).await?;
                s.contains(&("cp3".to_string(), "alive".to_string(), 2))
                    .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sealed_gossip_drops_packets_that_do_not_open() {
    let key = stdout(&cli(&["keygen"])).trim().to_string();
    let cluster = Cluster::control_plane(3, &["--gossip-profile", "local", "--gossip-key", &key]);
    cluster.wait_healthy().await;
    let target = &cluster.agents[0];
    wait_for("sealed gossip to connect the members", || async {
        let status = get_json(&target.url("/v1/status")).await.ok()?;
        (status["gossip"]["members"] == 2).then_some(())
    })
    .await;

    // Packets sealed with another key, or not sealed at all, are dropped and counted.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for packet in [
        vec![0u8; 8],
        vec![0xab; 200],
        b"plain foca-looking bytes".to_vec(),
    ] {
        socket
            .send_to(&packet, ("127.0.0.1", target.gossip_port))
            .unwrap();
    }
    wait_for("three unopened packets counted", || async {
        let status = get_json(&target.url("/v1/status")).await.ok()?;
        (status["gossip"]["dropped_unopened"].as_u64()? >= 3).then_some(())
    })
    .await;
    let status = get_json(&target.url("/v1/status")).await.unwrap();
    assert_eq!(status["gossip"]["members"], 2, "the cluster is undisturbed");
    assert_eq!(status["ready"], true);

    // ...and in /metrics, which parses as Prometheus text.
    let text = metrics_text(target).await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let unopened = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "hivemind_gossip_dropped_total"
                && s.labels.get("reason") == Some("unopened")
        })
        .expect("the unopened counter is exported");
    // (The text is OpenMetrics: the family is typed without `_total`, which this 0.0.4-format
    // parser reports as untyped; the value is what matters here.)
    assert!(
        matches!(unopened.value,
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) if v >= 3.0),
        "{:?}",
        unopened.value
    );

    // Internal routes require the cluster secret derived from the gossip key.
    for path in ["/internal/v1/cp/registry", "/internal/v1/cp/propose"] {
        let response = client()
            .post(target.url(path))
            .body(vec![0u8; 4])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_cluster_secret");
    }
    // So do the streams (the members above replicate and forward through them with the
    // secret: the control plane is healthy).
    for path in [
        "/internal/v1/raft/append-stream",
        "/internal/v1/call-stream",
    ] {
        let response = client()
            .get(target.url(path))
            .header("connection", "upgrade")
            .header("upgrade", "hivemind-frames/1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_the_leave_command_commit_leave_first_and_exit_0() {
    let mut cluster = Cluster::control_plane(3, &["--gossip-profile", "local"]);
    cluster.wait_healthy().await;
    for a in &cluster.agents {
        wait_for("gossip among all three", || async {
            (get_json(&a.url("/v1/status")).await.ok()?["gossip"]["members"] == 2).then_some(())
        })
        .await;
    }

    let status = cluster.agents[2].sigterm();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    {
        let cp1 = &cluster.agents[0];
        wait_for("cp3 left", || async {
            let s = states(cp1).await?;
            s.contains(&("cp3".to_string(), "left".to_string(), 1))
                .then_some(())
        })
        .await;
    }

    // `hivemind leave` asks a member to go; it commits Leave while the quorum (cp1, cp2) holds.
    let out = cli(&["leave", "--http-addr", &cluster.agents[1].http_addr()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = cluster.agents[1].wait_exit();
    assert!(status.success(), "leave exit: {status:?}");
    // cp2's Leave was committed (cp1 acknowledged it), but cp1, alone now, learns the commit
    // index only once a quorum is back: restart cp3 and cp1's view shows the leave.
    cluster.agents[2].start();
    let cp1 = &cluster.agents[0];
    sees(cp1, "cp2", "left", 1).await;

    // A graceful leave is not a failure: no member_failed in the feed (cp3's own restart is a
    // new join, not a failure either).
    let page = get_json(&cp1.url("/v1/events?after=0")).await.unwrap();
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "member_left").count(),
        2,
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"member_failed"), "{kinds:?}");

    // The CLI's member table says the same.
    let out = cli(&["members", "--http-addr", &cp1.http_addr()]);
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .any(|l| l.contains("cp2") && l.contains("left")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("cp1") && l.contains("alive")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn role_members_join_through_any_member_and_rejected_joins_leave_no_trace() {
    let key = stdout(&cli(&["keygen"])).trim().to_string();
    let common = [
        "--gossip-profile",
        "local",
        "--join-token",
        "s3cret",
        "--gossip-key",
        &key,
    ];
    let mut cluster = Cluster::control_plane(3, &common);
    cluster.wait_healthy().await;
    let via_cp = cluster.agents[1].http_addr();
    let member_args = [
        "--gossip-profile",
        "local",
        "--join-token",
        "s3cret",
        "--gossip-key",
        &key,
        "--roles",
        "host",
    ];
    let dns_args = [
        "--gossip-profile",
        "local",
        "--join-token",
        "s3cret",
        "--gossip-key",
        &key,
        "--roles",
        "dns",
    ];
    let web1 = cluster.add_member("web-1", &via_cp, &member_args);
    cluster.agents[web1].start();
    // Admitted, caught up with the feed and its keygroup joined, a host still waits: it
    // requires dns, and no live member performs it.
    let status = wait_for("web-1 waiting for dns only", || async {
        let s = get_json(&cluster.agents[web1].url("/v1/status"))
            .await
            .ok()?;
        (s["admitted"] == true
            && s["feed"]["caught_up"] == true
            && s["waiting_for"] == serde_json::json!(["role:dns"]))
        .then_some(s)
    })
    .await;
    assert_eq!(status["ready"], false);
    // web-2 joins through web-1, which is not a control-plane member.
    let via_member = cluster.agents[web1].http_addr();
    let web2 = cluster.add_member("web-2", &via_member, &member_args);
    cluster.agents[web2].start();

    // A member performing dns joins: the host is ready.
    let ns = cluster.add_member("ns-1", &via_cp, &dns_args);
    cluster.agents[ns].start();
    // ns-2 joins through web-2: a member that itself joined through a non-CP member.
    let via_web2 = cluster.agents[web2].http_addr();
    let ns2 = cluster.add_member("ns-2", &via_web2, &dns_args);
    cluster.agents[ns2].start();
    wait_for("web-1 ready once a dns member is live", || async {
        let s = get_json(&cluster.agents[web1].url("/v1/status"))
            .await
            .ok()?;
        (s["ready"] == true).then_some(())
    })
    .await;

    let everyone = |n: usize| {
        move |s: Vec<(String, String, u64)>| {
            s.len() == n && s.iter().all(|(_, state, _)| state == "alive")
        }
    };
    // 3 CP + 4 role members: everyone lists all 7 alive.
    for a in &cluster.agents {
        wait_for(&format!("{} to list all 7 alive", a.name), || async {
            let s = states(a).await?;
            everyone(7)(s).then_some(())
        })
        .await;
    }
    // The host role publishes its record with a seq (persisted; checked across a restart below).
    let record = get_json(&cluster.agents[web2].url("/v1/roles/host/record"))
        .await
        .unwrap();
    assert_eq!(record["host"], "web-2");
    let first_seq = record["seq"].as_u64().unwrap();
    assert!(first_seq >= 1);

    // A wrong token is refused with its reason; nothing of the joiner appears anywhere.
    let bad = cluster.add_member(
        "intruder",
        &via_member,
        &["--gossip-profile", "local", "--join-token", "wrong"],
    );
    let out = cluster.agents[bad].run_to_exit();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad_token"), "{}", stderr(&out));
    // So is a joiner with another gossip key (it could not gossip with us), through any member.
    let other_key = stdout(&cli(&["keygen"])).trim().to_string();
    let bad_key = cluster.add_member(
        "wrong-key",
        &via_member,
        &[
            "--gossip-profile",
            "local",
            "--join-token",
            "s3cret",
            "--gossip-key",
            &other_key,
        ],
    );
    let out = cluster.agents[bad_key].run_to_exit();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad_gossip_key"), "{}", stderr(&out));
    // A name held by a live member is refused too.
    let dup = cluster.add_member("web-1", &via_cp, &member_args);
    let out = cluster.agents[dup].run_to_exit();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("name_taken"), "{}", stderr(&out));
    for a in cluster.agents.iter().filter(|a| a.is_running()) {
        let s = states(a).await.unwrap();
        assert_eq!(s.len(), 7, "{}: {s:?}", a.name);
        assert!(!s
            .iter()
            .any(|(name, _, _)| name == "intruder" || name == "wrong-key"));
    }

    // kill -9 of a role member: failed everywhere, once in the registry; back as generation 2.
    cluster.agents[web2].kill9();
    for a in cluster.running() {
        sees(a, "web-2", "failed", 1).await;
    }
    let page = get_json(&cluster.agents[0].url("/v1/events?after=0"))
        .await
        .unwrap();
    let failed = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "member_failed")
        .count();
    assert_eq!(failed, 1);
    cluster.agents[web2].start();
    for a in cluster.running() {
        sees(a, "web-2", "alive", 2).await;
    }
    // Its host record continues above the seq it used before the kill.
    let record = get_json(&cluster.agents[web2].url("/v1/roles/host/record"))
        .await
        .unwrap();
    assert!(record["seq"].as_u64().unwrap() > first_seq, "{record}");
    assert_eq!(record["generation"], 2);

    // SIGTERM of a role member: left.
    assert!(cluster.agents[web1].sigterm().success());
    sees(&cluster.agents[0], "web-1", "left", 1).await;
}

/// Retention trims the feed within its epoch (as etcd compacts): members that keep up are not
/// disturbed; one stopped meanwhile finds its position trimmed away and re-bootstraps from a
/// snapshot. An operator's new epoch still makes every member re-bootstrap.
#[tokio::test(flavor = "multi_thread")]
async fn the_feed_is_trimmed_past_its_retention_and_a_member_stopped_meanwhile_rebootstraps() {
    let common = ["--gossip-profile", "local", "--event-retention", "12"];
    let mut cluster = Cluster::control_plane(3, &common);
    cluster.wait_healthy().await;
    let via = cluster.agents[0].http_addr();
    let web = cluster.add_member("web-1", &via, &["--gossip-profile", "local"]);
    cluster.agents[web].start();
    let watcher = cluster.add_member("watcher", &via, &["--gossip-profile", "local"]);
    cluster.agents[watcher].start();
    let ready = |a: &Agent| {
        let url = a.url("/v1/status");
        async move {
            let s = get_json(&url).await.ok()?;
            (s["ready"] == true && s["feed"]["caught_up"] == true).then_some(s)
        }
    };
    let stopped_at = wait_for("web-1 admitted", || ready(&cluster.agents[web])).await["feed"]
        ["index"]
        .as_u64()
        .unwrap();
    // A fresh member whose join came after a trim starts from a snapshot: count from here.
    let rebootstraps = wait_for("watcher admitted", || ready(&cluster.agents[watcher])).await
        ["feed"]["rebootstraps"]
        .clone();
    let snapshot = |a: &Agent| {
        let url = a.url("/v1/cp/snapshot?stale=true");
        async move { get_json(&url).await.ok() }
    };
    let first = snapshot(&cluster.agents[0]).await.unwrap()["epoch"]
        .as_u64()
        .unwrap();

    // web-1 is stopped (kill -9) while the cluster moves on: more events than the retention.
    cluster.agents[web].kill9();
    for i in 0..4 {
        let extra = cluster.add_member(&format!("tmp-{i}"), &via, &["--gossip-profile", "local"]);
        cluster.agents[extra].start();
        wait_for("tmp admitted", || async {
            (get_json(&cluster.agents[extra].url("/v1/status"))
                .await
                .ok()?["ready"]
                == true)
                .then_some(())
        })
        .await;
        assert!(cluster.agents[extra].sigterm().success());
    }
    let trimmed = wait_for("the leader to trim the feed past web-1", || async {
        let s = snapshot(&cluster.agents[0]).await?;
        let start = s["feed_start_index"].as_u64()?;
        (start > stopped_at).then_some(s)
    })
    .await;
    assert_eq!(trimmed["epoch"].as_u64(), Some(first), "no new epoch");
    assert_eq!(trimmed["epoch_start_index"], trimmed["feed_start_index"]);
    // What was trimmed is gone for its readers.
    let response = client()
        .get(cluster.agents[0].url(&format!("/v1/events?after={stopped_at}&epoch={first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 410);

    // The watcher kept up: it never had to re-bootstrap.
    let status = wait_for("the watcher caught up", || ready(&cluster.agents[watcher])).await;
    assert_eq!(status["feed"]["rebootstraps"], rebootstraps, "{status}");
    assert_eq!(status["feed"]["epoch"].as_u64(), Some(first));

    // Restarted, web-1 finds its position trimmed away and rebuilds its view from a snapshot.
    cluster.agents[web].start();
    let status = wait_for("web-1 back and caught up", || async {
        let s = ready(&cluster.agents[web]).await?;
        (s["feed"]["rebootstraps"].as_u64()? >= 1).then_some(s)
    })
    .await;
    assert_eq!(status["feed"]["epoch"].as_u64(), Some(first));
    assert!(cluster.agents[web]
        .log_tail(200)
        .contains("re-bootstrapped the membership view from a snapshot"));
    sees(&cluster.agents[0], "web-1", "alive", 2).await;

    // An operator forces a new epoch while web-1 is stopped: restarted, it rejoins in it.
    cluster.agents[web].kill9();
    let addr = cluster.agents[1].http_addr();
    let out = cli(&["--http-addr", &addr, "cp", "epoch", "bump"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let forced = wait_for("the forced epoch", || async {
        let e = snapshot(&cluster.agents[0]).await?["epoch"].as_u64()?;
        (e > first).then_some(e)
    })
    .await;
    cluster.agents[web].start();
    let status = wait_for("web-1 back in the forced epoch", || async {
        let s = get_json(&cluster.agents[web].url("/v1/status"))
            .await
            .ok()?;
        (s["ready"] == true && s["feed"]["epoch"].as_u64()? >= forced).then_some(s)
    })
    .await;
    assert_eq!(status["feed"]["caught_up"], true);
    sees(&cluster.agents[0], "web-1", "alive", 3).await;

    // With every CP member gone the feed cannot be read, and web-1 stops claiming to be caught
    // up (which also puts its ACL table back on timed reads: `acl::timed_read_due`).
    for cp in 0..3 {
        cluster.agents[cp].kill9();
    }
    let status = wait_for("web-1 to report its feed behind", || async {
        let s = get_json(&cluster.agents[web].url("/v1/status"))
            .await
            .ok()?;
        (s["feed"]["caught_up"] == false).then_some(s)
    })
    .await;
    assert!(
        status["waiting_for"]
            .as_array()
            .is_some_and(|w| w.iter().any(|x| x == "event_feed")),
        "{status}"
    );
}

/// The address watchdog: `--advertise` changed at runtime (config file + SIGHUP) renews the
/// member's identity, commits `UpdateAddress`, moves its gossip identity and republishes its
/// host record, without the member ever being reported failed.
#[tokio::test(flavor = "multi_thread")]
async fn an_address_changed_at_runtime_reaches_the_registry_gossip_and_roles() {
    let mut cluster = Cluster::control_plane(3, &["--gossip-profile", "local"]);
    cluster.wait_healthy().await;
    let via = cluster.agents[0].http_addr();
    let config = cluster.dir.path().join("web-1.toml");
    std::fs::write(&config, "advertise = \"127.0.0.1\"\n").unwrap();
    let config_path = config.display().to_string();
    let web = cluster.add_member(
        "web-1",
        &via,
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
    cluster.agents[web].start();
    let before = wait_for("web-1 alive everywhere", || async {
        for a in &cluster.agents {
            states(a)
                .await?
                .contains(&("web-1".into(), "alive".into(), 1))
                .then_some(())?;
        }
        get_json(&cluster.agents[web].url("/v1/roles/host/record"))
            .await
            .ok()
    })
    .await;
    assert_eq!(before["addrs"], serde_json::json!(["127.0.0.1"]));

    std::fs::write(&config, "advertise = \"127.0.0.2\"\n").unwrap();
    cluster.agents[web].signal("HUP");

    let port = cluster.agents[web].http_port;
    for a in cluster.running() {
        wait_for(
            &format!("{} to list web-1 at 127.0.0.2", a.name),
            || async {
                let members = get_json(&a.url("/v1/members")).await.ok()?;
                members.as_array()?.iter().find(|m| {
                    m["name"] == "web-1"
                        && m["http"] == format!("127.0.0.2:{port}")
                        && m["state"] == "alive"
                        && m["generation"] == 2
                })?;
                Some(())
            },
        )
        .await;
    }
    // The registry recorded the change once, and never a failure of web-1.
    let page = get_json(&cluster.agents[0].url("/v1/events?after=0"))
        .await
        .unwrap();
    let events = page["events"].as_array().unwrap();
    let of_web = |kind: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["name"].as_str().is_none_or(|n| n == "web-1"))
            .count()
    };
    assert_eq!(of_web("member_address_changed"), 1);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "member_failed")
            .count(),
        0
    );
    // The host role republished at once with a higher seq.
    let after = get_json(&cluster.agents[web].url("/v1/roles/host/record"))
        .await
        .unwrap();
    assert_eq!(after["addrs"], serde_json::json!(["127.0.0.2"]));
    assert!(after["seq"].as_u64() > before["seq"].as_u64());
    // Gossip follows: the CP members see the new identity alive, and still after a while.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(states(&cluster.agents[0]).await.unwrap().contains(&(
        "web-1".into(),
        "alive".into(),
        2
    )));
}
