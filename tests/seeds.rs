//! Seed 002's last rules, end to end:
//! - a leave without a quorum ("leaves are not propagated without quorum"): a member that
//!   cannot commit its `Leave` within the bounded wait goes anyway; nothing is recorded until a
//!   quorum is back, and then it is `left` (its `Leave` survived in the leader's log and
//!   commits) or `failed` (the leader reports the live members its SWIM does not vouch for,
//!   `--fail-unheard-after`), never still `alive`;
//! - a member that joined and never gossiped (killed before any peer's SWIM knew it) does not
//!   stay `alive` forever: the leader reports it failed after `--fail-unheard-after`;
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

/// The grace the leader gives a live member its SWIM has not heard of, in these tests.
const UNHEARD: &str = "3s";

/// 3 CP members, local gossip, the leader reporting unheard members after [`UNHEARD`].
async fn control_plane() -> Cluster {
    let cluster = Cluster::control_plane(
        3,
        &["--gossip-profile", "local", "--fail-unheard-after", UNHEARD],
    );
    cluster.wait_healthy().await;
    cluster
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leave_without_a_quorum_is_recorded_once_the_quorum_is_back_never_left_alive() {
    let mut cluster = control_plane().await;
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

    // The quorum comes back: web-1 ends `left` (its Leave survived in the leader's log and
    // commits now) or `failed` (it did not; the leader reports the member its SWIM does not
    // vouch for), never `alive`, and the feed says which, once.
    cluster.agents[1].start();
    cluster.agents[2].start();
    cluster.wait_healthy().await;
    let state = wait_for("web-1 no longer alive in the registry", || async {
        let (state, _) = state_of(&cluster.agents[0], "web-1").await?;
        (state == "left" || state == "failed").then_some(state)
    })
    .await;
    let page = get_json(&cluster.agents[0].url("/v1/events?after=0"))
        .await
        .unwrap();
    let ends: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "web-1")
        .filter_map(|e| e["kind"].as_str().map(String::from))
        .filter(|k| k == "member_left" || k == "member_failed")
        .collect();
    let expected = if state == "left" {
        "member_left"
    } else {
        "member_failed"
    };
    assert_eq!(ends, [expected], "web-1 ended {state}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_never_gossiped_is_reported_failed_by_the_leader() {
    use hivemind_common::MemberId;
    use hivemind_control_plane::network::InternalClient;
    use hivemind_control_plane::ops::{self, Op};
    use hivemind_control_plane::registry::MemberInfo;
    use hivemind_member::cp::join::JoinRequest;

    let cluster = control_plane().await;
    // Admitted through the real join path, then gone before any SWIM heard of it (its gossip
    // address answers nothing), as a member killed right after its join.
    let member = MemberInfo {
        id: MemberId::random(&mut rand::thread_rng()),
        name: "ghost-1".into(),
        node: "ghost-1".into(),
        roles: vec![],
        http_addr: "127.0.0.1:9".into(),
        gossip_addr: "127.0.0.1:9".into(),
        generation: 1,
        control_plane: false,
    };
    let request = JoinRequest {
        member,
        token: None,
        cluster_proof: None,
        epoch: None,
    };
    let joined = InternalClient::new(None, None)
        .call::<_, Result<hivemind_member::cp::join::JoinAccepted, hivemind_control_plane::CpError>>(
            &cluster.agents[0].http_addr(),
            ops::Join::PATH,
            &request,
            std::time::Duration::from_secs(30),
        )
        .await;
    assert!(matches!(joined, Ok(Ok(_))), "{joined:?}");
    wait_for("ghost-1 reported failed", || async {
        (state_of(&cluster.agents[0], "ghost-1").await?.0 == "failed").then_some(())
    })
    .await;
    // Admitted alive first, then failed: once each.
    let page = get_json(&cluster.agents[0].url("/v1/events?after=0"))
        .await
        .unwrap();
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains("\"ghost-1\""))
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("member_"))
        .collect();
    assert_eq!(kinds, ["member_joined", "member_failed"]);
    // The real members stay alive.
    for cp in ["cp1", "cp2", "cp3"] {
        assert_eq!(state_of(&cluster.agents[0], cp).await.unwrap().0, "alive");
    }
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
