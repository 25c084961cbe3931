//! End-to-end (DESIGN.md §6e): a cluster on TLS with certificates from `hivemind tls`, and ACLs.
//! Real processes, spoken to as a user does: curl, the CLI, DNS. Shows that
//! - a member whose certificate the cluster CA did not sign does not start;
//! - clients with the CA reach it, clients without it or speaking plaintext do not;
//! - internal routes need a member certificate from the cluster CA, and a member with a
//!   certificate from another CA can neither join nor call them;
//! - host and dns members join over TLS and DNS answers as before;
//! - a renewed certificate is served after SIGHUP;
//! - after `acl bootstrap` anonymous requests are refused, and a token gets exactly its rules;
//! - no secret reaches a log.

mod support;

use std::path::PathBuf;

use hickory_proto::rr::RecordType;
use support::pki::*;
use support::*;

/// The admin token every member is started with (a management token besides ACLs).
const ADMIN: &str = "adm1n-t0ken-that-must-never-be-logged";

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_cluster_with_acls() {
    if curl(&["--version"]).is_none() {
        cannot_run("curl is not installed (.ci/run installs it)");
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki_dir.path();
    make_pki(
        pki,
        &[
            ("--server --control-plane", "cp1"),
            ("--server --control-plane", "cp2"),
            ("--server --control-plane", "cp3"),
            ("--server", "h1"),
            ("--server", "d1"),
            ("--client", "ops"),
        ],
    );
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path();
    make_pki(other, &[("--server", "x1")]);
    let ca: PathBuf = pki.join("ca.pem");
    let ca_s = ca.display().to_string();

    // A certificate the cluster CA did not sign: the member names it and does not start.
    let x1 = |f: &str| other.join(f).display().to_string();
    let out = cli(&[
        "agent",
        "--control-plane",
        "--tls-cert",
        &x1("x1.pem"),
        "--tls-key",
        &x1("x1-key.pem"),
        "--tls-ca",
        &ca_s,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("x1.pem") && stderr(&out).contains("not valid"),
        "{}",
        stderr(&out)
    );

    let flags = ["--gossip-profile", "local", "--admin-token", ADMIN];
    let mut cluster = Cluster::control_plane_with(3, &flags, |name| tls_flags(pki, name));
    let addr = |i: usize, c: &Cluster| c.agents[i].http_addr();
    let https = |i: usize, c: &Cluster, path: &str| format!("https://{}{path}", addr(i, c));

    // Healthy, seen over HTTPS with the CA (curl, as a user would).
    let status_url = https(0, &cluster, "/v1/cp/status");
    wait_for("a healthy TLS control plane", || async {
        let out = curl(&[
            "--cacert",
            &ca_s,
            "-H",
            &format!("X-Hivemind-Token: {ADMIN}"),
            &status_url,
        ])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["health"] == "healthy").then_some(())
    })
    .await;
    // Without the CA, curl does not trust it; plaintext to the TLS port gets no answer.
    let out = curl(&[&status_url]).unwrap();
    assert!(!out.status.success(), "no --cacert: refused");
    let plain = format!("http://{}/v1/status", addr(0, &cluster));
    let out = curl(&[&plain]).unwrap();
    assert!(!out.status.success(), "plaintext answered: {:?}", out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"id\""));

    // Internal routes: a client without a member certificate is refused by the route; one
    // with a certificate from another CA already by the handshake.
    let internal = https(0, &cluster, "/internal/v1/cp/status");
    let out = curl(&["--cacert", &ca_s, "-X", "POST", &internal]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("certificate_required"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = curl(&[
        "--cacert",
        &ca_s,
        "--cert",
        &x1("x1.pem"),
        "--key",
        &x1("x1-key.pem"),
        "-X",
        "POST",
        &internal,
    ])
    .unwrap();
    assert!(!out.status.success(), "a foreign certificate is refused");

    // A member with a certificate from another CA cannot join.
    let via = addr(0, &cluster);
    let mut stranger_flags = vec!["--gossip-profile".to_string(), "local".into()];
    stranger_flags.extend(tls_flags(other, "x1"));
    let stranger_flags: Vec<&str> = stranger_flags.iter().map(String::as_str).collect();
    let stranger = cluster.add_member("x1", &via, &stranger_flags);
    cluster.agents[stranger].start();

    // A host and a dns member join over TLS; DNS answers as before.
    let h1_flags = tls_flags(pki, "h1");
    let h1_flags: Vec<&str> = h1_flags.iter().map(String::as_str).collect();
    let h1 = cluster.start_role_member("h1", "host", &h1_flags);
    let d1_flags = tls_flags(pki, "d1");
    let d1_flags: Vec<&str> = d1_flags.iter().map(String::as_str).collect();
    let (_, dns_port) = cluster.start_dns_member("d1", &d1_flags);
    support::dns::answers_on(
        &[dns_port],
        "h1.host.hivemind.",
        RecordType::A,
        &["127.0.0.1"],
    )
    .await;
    let members = hm(&ca, &via, Some(ADMIN), &["members", "--json"]);
    assert!(members.status.success(), "{}", stderr(&members));
    let members: serde_json::Value = serde_json::from_slice(&members.stdout).unwrap();
    let names: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(names.contains(&"h1") && names.contains(&"d1"), "{names:?}");
    assert!(!names.contains(&"x1"), "the stranger joined: {names:?}");
    let stranger_log = cluster.agents[stranger].log_tail(200);
    assert!(
        stranger_log.contains("certificate") || stranger_log.contains("Certificate"),
        "the stranger's log says why: {stranger_log}"
    );
    cluster.agents[stranger].kill9();

    // The CLI with a client certificate works too.
    let ops = |f: &str| pki.join(f).display().to_string();
    let out = cli(&[
        "--http-addr",
        &format!("https://{via}"),
        "--ca-file",
        &ca_s,
        "--client-cert",
        &ops("ops.pem"),
        "--client-key",
        &ops("ops-key.pem"),
        "--token",
        ADMIN,
        "kv",
        "put",
        "app/x",
        "hello",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A renewed certificate (one more name) is served after SIGHUP, without a restart.
    let renewed_dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.join("ca.pem"), renewed_dir.path().join("ca.pem")).unwrap();
    std::fs::copy(
        pki.join("ca-key.pem"),
        renewed_dir.path().join("ca-key.pem"),
    )
    .unwrap();
    let r = renewed_dir.path().to_str().unwrap();
    let out = cli(&[
        "tls",
        "cert",
        "create",
        "--server",
        "--control-plane",
        "--name",
        "cp1",
        "--dir",
        r,
        "--dns",
        "renewed.test",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let port = cluster.agents[0].http_port;
    let resolve = format!("renewed.test:{port}:127.0.0.1");
    let renewed_url = format!("https://renewed.test:{port}/v1/openapi.json");
    let by_new_name = || {
        curl(&[
            "--cacert",
            &ca_s,
            "--resolve",
            &resolve,
            "-H",
            &format!("X-Hivemind-Token: {ADMIN}"),
            &renewed_url,
        ])
        .is_some_and(|o| o.status.success())
    };
    assert!(
        !by_new_name(),
        "the old certificate does not name renewed.test"
    );
    for f in ["cp1.pem", "cp1-key.pem"] {
        std::fs::copy(renewed_dir.path().join(f), pki.join(f)).unwrap();
    }
    cluster.agents[0].signal("HUP");
    wait_for("the renewed certificate served", || async {
        by_new_name().then_some(())
    })
    .await;

    // ACLs: bootstrap (here with the admin token, which the cluster requires before ACLs).
    let boot = hm(&ca, &via, Some(ADMIN), &["acl", "bootstrap", "--json"]);
    let root = secret_of(&boot);
    let again = hm(&ca, &via, Some(&root), &["acl", "bootstrap"]);
    assert!(
        stderr(&again).contains("acl_bootstrapped"),
        "{}",
        stderr(&again)
    );
    // Anonymous requests are refused on every member, the role members included.
    for i in [1, 2, 4] {
        let member = addr(i, &cluster);
        wait_for("anonymous refused", || async {
            let out = hm(&ca, &member, None, &["kv", "get", "app/x"]);
            stderr(&out).contains("permission_denied").then_some(())
        })
        .await;
    }
    let rules = pki.join("app-read.toml");
    std::fs::write(&rules, "[kv]\n\"app/\" = \"read\"\n").unwrap();
    let out = hm(
        &ca,
        &via,
        Some(&root),
        &[
            "acl",
            "policy",
            "create",
            "app-read",
            "--rules",
            rules.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bad = pki.join("bad.toml");
    std::fs::write(&bad, "[kv]\n\"app/\" = \"sudo\"\n").unwrap();
    let out = hm(
        &ca,
        &via,
        Some(&root),
        &[
            "acl",
            "policy",
            "create",
            "bad",
            "--rules",
            bad.to_str().unwrap(),
        ],
    );
    assert!(
        stderr(&out).contains("sudo"),
        "the bad access is named: {}",
        stderr(&out)
    );
    let reader = secret_of(&hm(
        &ca,
        &via,
        Some(&root),
        &["acl", "token", "create", "--policy", "app-read", "--json"],
    ));
    // Used at once on another member: reads app/x, may not write it nor read other/y.
    let cp3 = addr(2, &cluster);
    let out = hm(&ca, &cp3, Some(&reader), &["kv", "get", "app/x"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hello");
    let out = hm(&ca, &cp3, Some(&reader), &["kv", "put", "app/x", "nope"]);
    assert!(
        stderr(&out).contains("permission_denied"),
        "{}",
        stderr(&out)
    );
    let out = hm(&ca, &cp3, Some(&reader), &["kv", "get", "other/y"]);
    assert!(
        stderr(&out).contains("permission_denied"),
        "{}",
        stderr(&out)
    );
    // Consul's header works the same way.
    let out = curl(&[
        "--cacert",
        &ca_s,
        "-H",
        &format!("X-Consul-Token: {reader}"),
        &https(2, &cluster, "/v1/kv/app/x"),
    ])
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    // A member outside the control plane knows it too (its table read at once for the
    // unknown token): the token is valid there, it only lacks the permission to list members.
    let h1_addr = addr(h1, &cluster);
    let out = hm(&ca, &h1_addr, Some(&reader), &["members"]);
    assert!(
        stderr(&out).contains("permission_denied"),
        "{}",
        stderr(&out)
    );
    // A malformed token is named; a deleted token stops working.
    let out = hm(&ca, &cp3, Some("not-a-token"), &["kv", "get", "app/x"]);
    assert!(stderr(&out).contains("malformed_token"), "{}", stderr(&out));
    let list = hm(&ca, &via, Some(&root), &["acl", "token", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        !list.to_string().contains(&reader),
        "listings never show a secret"
    );
    let accessor = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["policies"][0] == "app-read")
        .unwrap()["accessor"]
        .as_str()
        .unwrap()
        .to_string();
    let out = hm(
        &ca,
        &via,
        Some(&root),
        &["acl", "token", "delete", &accessor],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("a deleted token refused", || async {
        let out = hm(&ca, &cp3, Some(&reader), &["kv", "get", "app/x"]);
        stderr(&out).contains("acl_not_found").then_some(())
    })
    .await;
    // Also outside the control plane, where the table is re-read when the feed brings the
    // change (no timed read while the feed is caught up).
    wait_for(
        "a deleted token refused outside the control plane",
        || async {
            let out = hm(&ca, &h1_addr, Some(&reader), &["members"]);
            stderr(&out).contains("acl_not_found").then_some(())
        },
    )
    .await;
    // The access log names the accessor (logged as the answer goes out: wait for it), never a
    // secret.
    wait_for("the accessor in an access log", || async {
        cluster
            .agents
            .iter()
            .any(|a| a.log_tail(100_000).contains(&accessor))
            .then_some(())
    })
    .await;
    for agent in &cluster.agents {
        let log = agent.log_tail(100_000);
        for secret in [ADMIN, root.as_str(), reader.as_str()] {
            assert!(!log.contains(secret), "{} logged a secret", agent.name);
        }
    }
}
