//! End-to-end: the HTTP contract of DESIGN.md §7 on a real 3-member control plane: error
//! format, KV compare-and-set and metadata, the event feed's long-poll and `410 gone`, the
//! admin token, voter changes, snapshots, and garbage on internal routes.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_compare_and_set_metadata_and_errors_follow_the_contract() {
    let cluster = Cluster::control_plane(3, &[]);
    cluster.wait_healthy().await;
    let a = &cluster.agents[0];
    let c = client();

    // Create-only with cas=0.
    let (status, body) = send(c.put(a.url("/v1/kv/app/config?cas=0")).body("v1")).await;
    assert_eq!(status, 200);
    let first = body["index"].as_u64().unwrap();
    let (status, body) = send(c.put(a.url("/v1/kv/app/config?cas=0")).body("v2")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("cas_failed"))
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("app/config"));

    // Compare-and-set on the modify index.
    let (status, _) = send(
        c.put(a.url(&format!("/v1/kv/app/config?cas={first}")))
            .body("v2"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        c.put(a.url(&format!("/v1/kv/app/config?cas={first}")))
            .body("v3"),
    )
    .await;
    assert_eq!(status, 409);

    // Metadata view.
    let (status, meta) = send(c.get(a.url("/v1/kv/app/config?meta=true"))).await;
    assert_eq!(status, 200);
    assert_eq!(meta["key"], "app/config");
    assert_eq!(meta["value_base64"], "djI="); // "v2"
    assert_eq!(meta["create_index"].as_u64(), Some(first));
    assert!(meta["modify_index"].as_u64().unwrap() > first);

    // Absent key, bad query, bad key.
    let (status, body) = send(c.get(a.url("/v1/kv/nope"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = send(c.put(a.url("/v1/kv/x?cas=abc")).body("v")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, body) = send(c.put(a.url("/v1/kv/bad%0Akey")).body("v")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid"))
    );
    // A rejected write changed nothing.
    let (status, _) = send(c.get(a.url("/v1/kv/x"))).await;
    assert_eq!(status, 404);

    // Prefix listing and delete.
    send(c.put(a.url("/v1/kv/app/other")).body("o")).await;
    let (_, list) = send(c.get(a.url("/v1/kv?prefix=app/"))).await;
    let keys: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/config", "app/other"]);
    let (status, body) = send(c.delete(a.url("/v1/kv/app/other"))).await;
    assert_eq!((status, body["deleted"].as_bool()), (200, Some(true)));
    let (_, body) = send(c.delete(a.url("/v1/kv/app/other"))).await;
    assert_eq!(body["deleted"].as_bool(), Some(false));
}

#[tokio::test(flavor = "multi_thread")]
async fn event_feed_long_polls_and_answers_gone_after_an_epoch_bump() {
    let cluster = Cluster::control_plane(3, &[]);
    let leader = cluster.wait_healthy().await;
    let a = &cluster.agents[(leader + 1) % 3];

    // The three CP members' admissions are in the feed.
    let page = wait_for("three member_joined events", || async {
        let page = get_json(&a.url("/v1/events?after=0")).await.ok()?;
        let joined = page["events"]
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "member_joined")
            .count();
        (joined == 3).then_some(page)
    })
    .await;
    assert_eq!(page["epoch"], 1);
    let after = page["next_after"].as_u64().unwrap();

    // A long-poll with nothing new waits about `wait`, then answers empty.
    let started = Instant::now();
    let empty = get_json(&a.url(&format!("/v1/events?after={after}&wait=1s")))
        .await
        .unwrap();
    assert!(empty["events"].as_array().unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A long-poll wakes when an event is committed (an operator epoch bump through the CLI).
    let url = a.url(&format!("/v1/events?after={after}&wait=30s&epoch=1"));
    let poll = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = cli(&[
        "cp",
        "epoch",
        "bump",
        "--reason",
        "test",
        "--http-addr",
        &cluster.agents[leader].http_addr(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("epoch 2"), "{}", stdout(&out));
    // The epoch changed under the poll: the reader must re-bootstrap.
    let response = poll.await.unwrap();
    assert_eq!(response.status(), 410);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gone");
    assert_eq!(body["error"]["epoch"], 2);

    // Readers of the old epoch or from before its start get 410 with the new epoch.
    let (status, body) = send(client().get(a.url(&format!("/v1/events?after={after}")))).await;
    assert_eq!((status, body["error"]["epoch"].as_u64()), (410, Some(2)));
    // The snapshot tells where the new epoch starts; the feed continues from there.
    let snapshot = wait_for("the snapshot at epoch 2", || async {
        let s = get_json(&a.url("/v1/cp/snapshot")).await.ok()?;
        (s["epoch"] == 2).then_some(s)
    })
    .await;
    assert_eq!(snapshot["members"].as_array().unwrap().len(), 3);
    let start = snapshot["epoch_start_index"].as_u64().unwrap();
    let page = get_json(&a.url(&format!("/v1/events?after={}&epoch=2", start - 1)))
        .await
        .unwrap_err();
    assert!(
        page.to_string().contains("410"),
        "before the epoch start is gone too"
    );
    let page = get_json(&a.url(&format!("/v1/events?after={start}&epoch=2")))
        .await
        .unwrap();
    assert_eq!(page["epoch"], 2);

    // Bad parameters are a 400 naming the problem.
    let (status, body) = send(client().get(a.url("/v1/events?wait=forever"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("wait"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_guards_every_v1_route() {
    let cluster = Cluster::control_plane(3, &["--admin-token", "s3cret"]);
    let a = &cluster.agents[0];
    let c = client();
    wait_for("the cluster to be healthy", || async {
        let status: Value = c
            .get(a.url("/v1/cp/status"))
            .bearer_auth("s3cret")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (status["health"] == "healthy").then_some(())
    })
    .await;
    for path in [
        "/v1/status",
        "/v1/cp/status",
        "/v1/kv/x",
        "/v1/events",
        "/v1/members",
    ] {
        let (status, body) = send(c.get(a.url(path))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
        let (status, _) = send(c.get(a.url(path)).bearer_auth("wrong")).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, _) = send(c.put(a.url("/v1/kv/x")).body("v")).await;
    assert_eq!(status, 401);
    let (status, _) = send(
        c.put(a.url("/v1/kv/x"))
            .header("x-hivemind-token", "s3cret")
            .body("v"),
    )
    .await;
    assert_eq!(status, 200);

    let out = cli(&["kv", "get", "x", "--http-addr", &a.http_addr()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
    let out = cli(&[
        "kv",
        "get",
        "x",
        "--http-addr",
        &a.http_addr(),
        "--token",
        "s3cret",
    ]);
    assert_eq!(stdout(&out).trim(), "v");
}

#[tokio::test(flavor = "multi_thread")]
async fn voters_can_be_added_and_removed() {
    let mut cluster = Cluster::control_plane(3, &[]);
    let leader = cluster.wait_healthy().await;
    let standby = cluster.add_standby("cp4");
    let standby_addr = cluster.agents[standby].http_addr();
    // The standby never initializes on its own.
    wait_for("the standby to answer", || async {
        let s = get_json(&cluster.agents[standby].url("/v1/cp/status"))
            .await
            .ok()?;
        (s["initialized"] == false).then_some(())
    })
    .await;

    // Added through a follower: forwarded to the leader.
    let follower_addr = cluster.agents[(leader + 1) % 3].http_addr();
    let follower_url = |path: &str| format!("http://{follower_addr}{path}");
    let out = cli(&[
        "cp",
        "voters",
        "add",
        &standby_addr,
        "--http-addr",
        &follower_addr,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["voters"].as_array().unwrap().len(), 4);
    let id = get_json(&cluster.agents[standby].url("/v1/status"))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The new voter has the data and a leader.
    client()
        .put(follower_url("/v1/kv/after-add"))
        .body("yes")
        .send()
        .await
        .unwrap();
    wait_for("the new voter to apply", || async {
        let r = client()
            .get(cluster.agents[standby].url("/v1/kv/after-add?stale=true"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // A dead voter can be removed while a quorum remains.
    cluster.agents[standby].kill9();
    let out = cli(&[
        "cp",
        "voters",
        "remove",
        &id,
        "--http-addr",
        &follower_addr,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["voters"].as_array().unwrap().len(), 3);
    assert!(!status["voters"].to_string().contains(&id));

    // Bad input: an unknown id, a malformed id, an unreachable address.
    let out = cli(&[
        "cp",
        "voters",
        "remove",
        "00000000000000aa",
        "--http-addr",
        &follower_addr,
    ]);
    assert!(stderr(&out).contains("not_found"), "{}", stderr(&out));
    let out = cli(&[
        "cp",
        "voters",
        "remove",
        "xyz",
        "--http-addr",
        &follower_addr,
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("ID"),
        "{}",
        stderr(&out)
    );
    let (status, body) = send(
        client()
            .post(follower_url("/v1/cp/voters"))
            .body(format!("{{\"addr\":\"127.0.0.1:{}\"}}", free_port())),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_internal_routes_is_rejected_and_changes_nothing() {
    let cluster = Cluster::control_plane(3, &[]);
    cluster.wait_healthy().await;
    let a = &cluster.agents[0];
    let before = get_json(&a.url("/v1/cp/status")).await.unwrap();
    for path in [
        "/internal/v1/raft/append",
        "/internal/v1/raft/vote",
        "/internal/v1/raft/snapshot",
        "/internal/v1/cp/write",
        "/internal/v1/cp/admin",
        "/internal/v1/cp/hello",
    ] {
        for body in [vec![], vec![0xff; 64], b"{\"json\": true}".to_vec()] {
            let (status, _) = send(client().post(a.url(path)).body(body)).await;
            assert_eq!(status, 400, "{path}");
        }
    }
    let after = get_json(&a.url("/v1/cp/status")).await.unwrap();
    assert_eq!(before["voters"], after["voters"]);
    assert_eq!(after["health"], "healthy");
    // Save a snapshot through the CLI.
    let file = cluster.dir.path().join("registry.json");
    let out = cli(&[
        "snapshot",
        "save",
        file.to_str().unwrap(),
        "--http-addr",
        &a.http_addr(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(saved["members"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_are_batched_without_losing_an_update() {
    let cluster = Cluster::control_plane(3, &[]);
    cluster.wait_healthy().await;
    let urls: Vec<String> = cluster.agents.iter().map(|a| a.url("")).collect();

    // 24 clients increment one counter with compare-and-set, through all three members.
    let c = client();
    send(c.put(format!("{}/v1/kv/counter", urls[0])).body("0")).await;
    let mut tasks = Vec::new();
    for worker in 0..24 {
        let base = urls[worker % 3].clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut done = 0;
            while done < 5 {
                let response = c.get(format!("{base}/v1/kv/counter")).send().await.unwrap();
                let index = response.headers()["x-hivemind-index"]
                    .to_str()
                    .unwrap()
                    .to_string();
                let value: u64 = response.text().await.unwrap().parse().unwrap();
                let put = c
                    .put(format!("{base}/v1/kv/counter?cas={index}"))
                    .body((value + 1).to_string())
                    .send()
                    .await
                    .unwrap();
                match put.status().as_u16() {
                    200 => done += 1,
                    409 => {} // lost the race: read again
                    other => panic!("unexpected status {other}"),
                }
            }
            // Plus one plain write of its own key.
            let put = c
                .put(format!("{base}/v1/kv/own/{worker}"))
                .body(worker.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for url in &urls {
        let counter = c
            .get(format!("{url}/v1/kv/counter"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            counter, "120",
            "every acknowledged increment counted exactly once"
        );
        let (_, list) = send(c.get(format!("{url}/v1/kv?prefix=own/"))).await;
        assert_eq!(list.as_array().unwrap().len(), 24);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_is_a_self_contained_page_and_script_on_every_member() {
    let cluster = Cluster::control_plane(3, &["--gossip-profile", "local", "--admin-token", "t0k"]);
    // The page itself needs no token (it asks for one when the API answers 401).
    for agent in &cluster.agents {
        let response = wait_for("the dashboard", || async {
            client().get(agent.url("/")).send().await.ok()
        })
        .await;
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let page = response.text().await.unwrap();
        assert!(page.contains("<script src=\"/dashboard.js\">"), "{page}");
        let script = client()
            .get(agent.url("/dashboard.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(script.status(), 200);
        let content_type = script.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/javascript"),
            "{content_type}"
        );
        let script = script.text().await.unwrap();
        for api in [
            "/v1/members",
            "/v1/status",
            "/v1/keygroups",
            "/v1/responsibilities",
            "/v1/events",
        ] {
            assert!(script.contains(api), "the page reads {api}");
        }
        // Nothing is fetched from elsewhere at run time.
        assert!(
            !page.contains("src=\"http") && !page.contains("href=\"http"),
            "external asset"
        );
        assert!(
            !script.contains("fetch(\"http") && !script.contains("import "),
            "external script"
        );
    }
    // The API behind it still wants the token.
    let status = client()
        .get(cluster.agents[0].url("/v1/members"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}
