//! Control-plane traffic spread over the CP members (DESIGN.md §6f), end to end with real
//! processes: 30 members outside the control plane over 3 CP members each keep their feed
//! long-poll on the CP member they chose (`hivemind_feed_followers` on each CP member), no
//! share more than twice another's; a write reaches all of them, each CP member encoding the
//! page once for its caught-up followers (`hivemind_feed_pages`); a CP member killed with
//! `kill -9` loses its members to the other two, and after it returns they come back to it,
//! spread as before.

mod support;

use hivemind_common::MemberId;
use hivemind_member::cp::cp_choice;
use serde_json::Value;
use std::time::Duration;

use support::{client, get_json, wait_for_within, Cluster};

const MEMBERS: usize = 30;

/// 33 debug-build processes share the CI machine's two cores: starting them and a failure's
/// detection take longer than one member's would.
const LIMIT: Duration = Duration::from_secs(120);

/// The value of the metric line starting with `prefix` on `agent`, if it answers.
async fn metric(agent: &support::Agent, prefix: &str) -> Option<u64> {
    let text = client().get(agent.url("/metrics")).send().await.ok()?;
    let text = text.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Each CP member's `hivemind_feed_followers` (`None` for one that does not answer).
async fn shares_now(cluster: &Cluster) -> Vec<Option<u64>> {
    let mut shares = Vec::new();
    for agent in &cluster.agents[..3] {
        shares.push(metric(agent, "hivemind_feed_followers ").await);
    }
    shares
}

/// The registry's live members as `via` sees them: (name, id, HTTP address, CP member).
async fn alive(cluster: &Cluster, via: usize) -> Option<Vec<(String, MemberId, String, bool)>> {
    let members: Value = get_json(&cluster.agents[via].url("/v1/members"))
        .await
        .ok()?;
    members
        .as_array()?
        .iter()
        .filter(|m| m["state"] == "alive")
        .map(|m| {
            Some((
                m["name"].as_str()?.to_string(),
                m["id"].as_str()?.parse().ok()?,
                m["http"].as_str()?.to_string(),
                m["control_plane"].as_bool()?,
            ))
        })
        .collect()
}

/// The share of the members outside the control plane each CP member should hold (in the
/// order of `cluster.agents`, `None` for one that is not live), as every member computes it
/// from the same view (`cp_choice::assign`).
fn expected(cluster: &Cluster, live: &[(String, MemberId, String, bool)]) -> Vec<Option<u64>> {
    let outside: Vec<MemberId> = live.iter().filter(|m| !m.3).map(|m| m.1).collect();
    let cps: Vec<String> = live.iter().filter(|m| m.3).map(|m| m.2.clone()).collect();
    let assigned = cp_choice::assign(&outside, &cps);
    cluster.agents[..3]
        .iter()
        .map(|agent| {
            let at = cps.iter().position(|c| *c == agent.http_addr())?;
            Some(assigned.values().filter(|&&i| i == at).count() as u64)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn members_spread_over_the_control_plane_and_follow_it_through_a_loss() {
    let mut cluster = Cluster::local_control_plane().await;
    let via = cluster.agents[0].http_addr();
    for i in 0..MEMBERS {
        let index = cluster.add_member(&format!("m{i}"), &via, &["--gossip-profile", "local"]);
        cluster.agents[index].start();
    }
    let live = wait_for_within("all 33 members alive", LIMIT, || async {
        let live = alive(&cluster, 0).await?;
        (live.len() == MEMBERS + 3).then_some(live)
    })
    .await;

    // Every member follows the feed on the CP member it was assigned; the shares are fair.
    let spread = expected(&cluster, &live);
    let shares: Vec<u64> = spread.iter().map(|s| s.unwrap()).collect();
    let (min, max) = (*shares.iter().min().unwrap(), *shares.iter().max().unwrap());
    assert!(max <= 2 * min, "unfair shares {shares:?}");
    assert_eq!(shares.iter().sum::<u64>(), MEMBERS as u64);
    wait_for_within(
        "30 long-polls where the assignment puts them",
        LIMIT,
        || async { (shares_now(&cluster).await == spread).then_some(()) },
    )
    .await;
    eprintln!("followers per CP member: {shares:?}");

    // A write reaches every member, and each CP member encoded its page once for all of its
    // caught-up followers (`hivemind_feed_pages{how="shared"}`).
    let written: Value = client()
        .put(cluster.agents[0].url("/v1/kv/scale/probe"))
        .body("x")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let index = written["index"].as_u64().expect("the write's index");
    wait_for_within("every member past the write", LIMIT, || async {
        for agent in &cluster.agents[3..] {
            let seen = metric(agent, "hivemind_feed_index ").await?;
            if seen < index {
                return None;
            }
        }
        Some(())
    })
    .await;
    for agent in &cluster.agents[..3] {
        let shared = metric(agent, "hivemind_feed_pages_total{how=\"shared\"} ").await;
        assert!(
            shared.is_some_and(|n| n > 0),
            "{} shared no feed page: {shared:?}",
            agent.name
        );
    }

    // One CP member lost: its members move to the other two at once (failover), then spread
    // over the two by the assignment once the registry has it failed.
    cluster.agents[0].kill9();
    wait_for_within(
        "the lost CP member's members on the other two",
        LIMIT,
        || async {
            let now = shares_now(&cluster).await;
            let sum: u64 = now[1..].iter().map(|s| s.unwrap_or(0)).sum();
            (sum == MEMBERS as u64).then_some(())
        },
    )
    .await;
    let without = wait_for_within("the lost CP member seen failed", LIMIT, || async {
        let live = alive(&cluster, 1).await?;
        (!live.iter().any(|m| m.0 == "cp1")).then_some(live)
    })
    .await;
    let over_two = expected(&cluster, &without);
    assert_eq!(over_two[0], None);
    wait_for_within(
        "the members spread over the two that are left",
        LIMIT,
        || async { (shares_now(&cluster).await == over_two).then_some(()) },
    )
    .await;
    eprintln!("followers per CP member without cp1: {over_two:?}");

    // It returns: the members come back to it, spread as they were (the assignment depends
    // only on who is there).
    cluster.agents[0].start();
    wait_for_within(
        "the members spread again as before the loss",
        LIMIT,
        || async { (shares_now(&cluster).await == spread).then_some(()) },
    )
    .await;
}
