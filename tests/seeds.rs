//! Seed 002's last rules, end to end:
//! - a leave without a quorum ("leaves are not propagated without quorum"): a member that
//!   cannot commit its `Leave` within the bounded wait goes anyway, and the registry records it
//!   as **failed**, never as left, once a quorum is back and SWIM's verdict is committed: only a
//!   committed `Leave` is a leave;
//! - "needs for bootstrap": a dns member waits for a live host before it reports ready the
//!   first time (`bootstrap:host`), and stays ready when the last host goes.

mod support;

use serde_json::Value;
use support::*;

/// (state, generation) of member `name` in `agent`'s `/v1/members`.
async fn state_of(agent: &Agent, name: &str) -> Option<(String, u64)> {
    let members: Value = get_json(&agent.url("/v1/members")).await.ok()?;
    let m = members.as_array()?.iter().find(|m| m["name"] == name)?;
    Some((m["state"].as_str()?.to_string(), m["generation"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "finds a gap that is not fixed yet: once the quorum is back, the member's failure is \
            not always committed (only a member whose SWIM saw it go down reports it, and it \
            gives up after about 6 s); run with --ignored"]
async fn a_leave_without_a_quorum_is_recorded_as_a_failure_once_the_quorum_is_back() {
    let mut cluster = Cluster::local_control_plane().await;
    let web = cluster.start_role_member("web-1", "host", &[]);
    wait_for("web-1 alive in the registry", || async {
        (state_of(&cluster.agents[0], "web-1").await? == ("alive".to_string(), 1)).then_some(())
    })
    .await;

    // Two of three CP members down: no quorum. web-1 is asked to leave.
    cluster.agents[1].kill9();
    cluster.agents[2].kill9();
    let out = cli(&["leave", "--http-addr", &cluster.agents[web].http_addr()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // It cannot commit its Leave, goes anyway after the bounded wait, and exits 0.
    let status = cluster.agents[web].wait_exit();
    assert!(status.success(), "leave exit: {status:?}");
    let log = std::fs::read_to_string(&cluster.agents[web].log).unwrap_or_default();
    assert!(
        log.contains("could not commit Leave; leaving anyway"),
        "{log}"
    );

    // The quorum comes back: web-1 ends failed (SWIM's verdict), not left.
    cluster.agents[1].start();
    cluster.agents[2].start();
    cluster.wait_healthy().await;
    // Committed in the registry (the feed), not only seen down by SWIM here.
    let about_web = wait_for("web-1's failure in the event feed", || async {
        let page = get_json(&cluster.agents[0].url("/v1/events?after=0"))
            .await
            .ok()?;
        let kinds: Vec<String> = page["events"]
            .as_array()?
            .iter()
            .filter(|e| e.to_string().contains("\"web-1\"") || e["name"] == "web-1")
            .filter_map(|e| e["kind"].as_str().map(String::from))
            .collect();
        kinds.iter().any(|k| k == "member_failed").then_some(kinds)
    })
    .await;
    assert!(
        !about_web.iter().any(|k| k == "member_left"),
        "{about_web:?}"
    );
    assert_eq!(
        state_of(&cluster.agents[0], "web-1").await.unwrap().0,
        "failed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dns_member_waits_for_a_host_to_bootstrap_and_only_then() {
    let mut cluster = Cluster::local_control_plane().await;
    let (ns, _) = cluster.start_dns_member("ns-1", &[]);
    let status = cluster.agents[ns].url("/v1/status");
    wait_for("ns-1 waiting only for a host to bootstrap", || async {
        let s = get_json(&status).await.ok()?;
        (s["admitted"] == true
            && s["feed"]["caught_up"] == true
            && s["waiting_for"] == serde_json::json!(["bootstrap:host"])
            && s["ready"] == false)
            .then_some(())
    })
    .await;
    let web = cluster.start_role_member("web-1", "host", &[]);
    wait_for("ns-1 ready once a host is live", || async {
        (get_json(&status).await.ok()?["ready"] == true).then_some(())
    })
    .await;
    // The last host goes: a need for bootstrap is not a requirement, ns-1 stays ready. (Once
    // the others gossip with it: a member killed before any of them knew it in SWIM is not
    // declared down; see the closing note of this change.)
    wait_for("web-1 gossiping with the four others", || async {
        let s = get_json(&cluster.agents[web].url("/v1/status"))
            .await
            .ok()?;
        (s["gossip"]["members"] == 4).then_some(())
    })
    .await;
    cluster.agents[web].kill9();
    wait_for("web-1 recorded failed", || async {
        (state_of(&cluster.agents[0], "web-1").await?.0 == "failed").then_some(())
    })
    .await;
    let s = get_json(&status).await.unwrap();
    assert_eq!(s["ready"], true, "{s}");
}
