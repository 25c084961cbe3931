//! Keygroups end to end: the naming-service rules through the HTTP API and the CLI of real
//! members, acting as the node of the member that receives the request.

mod support;

use serde_json::{json, Value};
use support::*;

async fn send(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn naming_service_rules_through_any_member() {
    let mut cluster = Cluster::control_plane(3, &["--gossip-profile", "local"]);
    cluster.wait_healthy().await;
    let via = cluster.agents[0].http_addr();
    let web = cluster.add_member("web-1", &via, &["--gossip-profile", "local"]);
    cluster.agents[web].start();
    wait_for("web-1 ready", || async {
        let s = get_json(&cluster.agents[web].url("/v1/status"))
            .await
            .ok()?;
        (s["ready"] == true).then_some(())
    })
    .await;
    let cp = &cluster.agents[0];
    let web = &cluster.agents[web];
    let kg = "/v1/keygroups/shop/eu/hosts";
    let cp_node = cp.name.clone();

    // Created through cp-0: its node is the first replica, version 1, secret shown to it.
    let (status, created) = send(reqwest::Method::PUT, cp.url(kg), Some(json!({"ttl": 30}))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], 1);
    assert_eq!(created["replicas"], json!([cp_node]));
    assert_eq!(created["ttl"], 30);
    assert!(created["secret_base64"]
        .as_str()
        .is_some_and(|s| s.len() == 44));
    let (status, again) = send(reqwest::Method::PUT, web.url(kg), None).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("keygroup_exists"))
    );

    // Seen through web-1, whose node is no member of it: no secret; it may not change it.
    let (status, seen) = send(reqwest::Method::GET, web.url(kg), None).await;
    assert_eq!(status, 200);
    assert_eq!(seen["version"], 1);
    assert!(seen.get("secret_base64").is_none(), "{seen}");
    let (status, refused) = send(
        reqwest::Method::PATCH,
        web.url(kg),
        Some(json!({"add_replicas": ["web-1"]})),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("not_a_replica"))
    );

    // Opened by its replica, web-1 adds itself (and sees the secret from then on).
    let (status, opened) = send(
        reqwest::Method::PATCH,
        cp.url(kg),
        Some(json!({"open": true})),
    )
    .await;
    assert_eq!((status, opened["version"].as_u64()), (200, Some(2)));
    let (status, joined) = send(
        reqwest::Method::PATCH,
        web.url(kg),
        Some(json!({"add_replicas": ["web-1"]})),
    )
    .await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["version"], 3);
    assert_eq!(joined["replicas"], json!([cp_node, "web-1"]));
    assert!(joined["secret_base64"].is_string());

    // Rotating the secret is a new version with a new secret; bad input changes nothing.
    let (_, rotated) = send(
        reqwest::Method::PATCH,
        cp.url(kg),
        Some(json!({"rotate_secret": true})),
    )
    .await;
    assert_eq!(rotated["version"], 4);
    assert_ne!(rotated["secret_base64"], joined["secret_base64"]);
    let (status, bad) = send(
        reqwest::Method::PATCH,
        cp.url(kg),
        Some(json!({"ttl": 0, "open": false})),
    )
    .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid"))
    );
    let (status, bad) = send(reqwest::Method::PATCH, cp.url(kg), Some(json!({"tll": 3}))).await;
    assert_eq!(status, 400, "{bad}");
    let (_, unchanged) = send(reqwest::Method::GET, cp.url(kg), None).await;
    assert_eq!(
        (unchanged["version"].as_u64(), unchanged["open"].as_bool()),
        (Some(4), Some(true))
    );

    // The last replica stays.
    send(
        reqwest::Method::PATCH,
        web.url(kg),
        Some(json!({"remove_replicas": [cp_node]})),
    )
    .await;
    let (status, last) = send(
        reqwest::Method::PATCH,
        web.url(kg),
        Some(json!({"remove_replicas": ["web-1"]})),
    )
    .await;
    assert_eq!(
        (status, last["error"]["code"].as_str()),
        (409, Some("last_replica"))
    );

    // Deleted by its replica: a tombstone, versioned, irreversible, without a secret.
    let (status, gone) = send(reqwest::Method::DELETE, web.url(kg), None).await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["tombstoned"], true);
    assert_eq!(gone["version"], 6);
    assert!(gone.get("secret_base64").is_none());
    let (status, again) = send(reqwest::Method::PUT, cp.url(kg), None).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("tombstoned"))
    );
    let events = get_json(&cp.url("/v1/events?after=0")).await.unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("keygroup_"))
        .collect();
    assert_eq!(
        kinds,
        [
            "keygroup_created",
            "keygroup_updated",
            "keygroup_updated",
            "keygroup_updated",
            "keygroup_updated",
            "keygroup_deleted"
        ]
    );
    let (status, missing) = send(
        reqwest::Method::GET,
        cp.url("/v1/keygroups/no/such/group"),
        None,
    )
    .await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("unknown_keygroup"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_keygroup_cli() {
    let cluster = Cluster::control_plane(3, &["--gossip-profile", "local"]);
    cluster.wait_healthy().await;
    let addr = cluster.agents[1].http_addr();
    let run = |args: &[&str]| {
        let mut all = vec!["--http-addr", addr.as_str()];
        all.extend_from_slice(args);
        cli(&all)
    };
    let out = run(&["keygroup", "create", "app/t/g", "--ttl", "12", "--open"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("app/t/g"));
    let out = run(&[
        "--json",
        "keygroup",
        "update",
        "app/t/g",
        "--add-trigger",
        "audit",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let updated: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(updated["triggers"], json!(["audit"]));
    assert_eq!(updated["version"], 2);
    let list = stdout(&run(&["keygroup", "list"]));
    assert!(
        list.contains("app/t/g") && list.contains("audit") && list.contains("live"),
        "{list}"
    );
    let out = run(&["keygroup", "get", "not-a-keygroup"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NAME"), "{}", stderr(&out));
    let out = run(&["keygroup", "delete", "app/t/g"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("tombstoned"));
    let out = run(&["keygroup", "update", "app/t/g", "--ttl", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("tombstoned"), "{}", stderr(&out));
    let out = run(&["--json", "responsibilities"]);
    assert_eq!(stdout(&out).trim(), "[]");
}

/// The CLI reads the server's view types: every keygroup command, `responsibilities`,
/// `events`, `kv` listing and deletion print tables (and `--json`) from a real member.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reads_keygroups_events_and_kv_as_the_server_answers_them() {
    let cluster = Cluster::local_control_plane().await;
    let addr = cluster.agents[0].http_addr();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--http-addr", &addr]);
        let out = cli(&all);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let created = run(&["keygroup", "create", "cli/eu/hosts", "--ttl", "9"]);
    assert!(
        created.contains("cli/eu/hosts") && created.contains("live"),
        "{created}"
    );
    let updated = run(&[
        "keygroup",
        "update",
        "cli/eu/hosts",
        "--add-trigger",
        "audit",
        "--rotate-secret",
    ]);
    assert!(updated.contains("audit"), "{updated}");
    let got: Value = serde_json::from_str(&run(&["keygroup", "get", "cli/eu/hosts", "--json"]))
        .expect("--json prints JSON");
    assert_eq!(got["version"], 2);
    assert_eq!(got["ttl"], 9);
    assert!(run(&["keygroup", "list"]).contains("cli/eu/hosts"));
    let deleted = run(&["keygroup", "delete", "cli/eu/hosts"]);
    assert!(deleted.contains("tombstoned"), "{deleted}");

    run(&["kv", "put", "cli/a", "1"]);
    run(&["kv", "put", "cli/b", "2"]);
    let listed = run(&["kv", "get", "--prefix", "cli/"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["cli/a", "cli/b"]);
    assert!(run(&["kv", "delete", "cli/a"]).starts_with("deleted (index "));
    assert_eq!(run(&["kv", "delete", "cli/a"]).trim(), "no such key");

    let events = run(&["events"]);
    for kind in ["keygroup_created", "keygroup_deleted"] {
        assert!(events.contains(kind), "{kind} missing from:\n{events}");
    }
    let held = run(&["responsibilities"]);
    assert!(held.starts_with("NODE"), "{held}");
}
