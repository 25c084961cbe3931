//! Several machines in one node (DESIGN.md §5, issue 5): three dns machines share node `ns`,
//! exactly one is responsible for the keygroup and subscribes to the hosts, the other two take
//! every record from it over the intra-node stream. Each test is named after the seed events
//! and tasks it shows, with real processes and a real DNS client.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use support::dns::*;
use support::*;

const KEYGROUP: &str = "hivemind/default/hosts";

/// The dns machine names and their DNS ports, by agent index.
struct DnsNode {
    machines: Vec<(usize, u16)>,
}

/// The machine (agent name) the registry names as responsible for (`ns`, KEYGROUP), if any.
async fn holder(cluster: &Cluster, via: usize) -> Option<String> {
    let list = get_json(&cluster.agents[via].url("/v1/responsibilities"))
        .await
        .ok()?;
    let held: Vec<&Value> = list
        .as_array()?
        .iter()
        .filter(|r| r["node"] == "ns" && r["keygroup"] == KEYGROUP)
        .collect();
    assert!(
        held.len() <= 1,
        "two holders for one (node, keygroup): {list}"
    );
    Some(held.first()?["machine_name"].as_str()?.to_string())
}

async fn dns_status(cluster: &Cluster, agent: usize) -> Option<Value> {
    let status = get_json(&cluster.agents[agent].url("/v1/roles/dns/status"))
        .await
        .ok()?;
    Some(status["keygroups"][KEYGROUP].clone())
}

/// 3 CP members, host web-1 and three dns machines in node `ns`, all answering for web-1.
async fn start() -> (Cluster, DnsNode, usize) {
    let mut cluster = Cluster::local_control_plane().await;
    let web1 = cluster.start_role_member("web-1", "host", &[]);
    let machines = ["ns-a", "ns-b", "ns-c"]
        .into_iter()
        .map(|name| cluster.start_dns_member(name, &["--node", "ns"]))
        .collect::<Vec<_>>();
    let ports: Vec<u16> = machines.iter().map(|(_, p)| *p).collect();
    answers_on(
        &ports,
        "web-1.host.hivemind.",
        RecordType::A,
        &["127.0.0.1"],
    )
    .await;
    (cluster, DnsNode { machines }, web1)
}

fn index_of(cluster: &Cluster, node: &DnsNode, name: &str) -> usize {
    node.machines
        .iter()
        .map(|(i, _)| *i)
        .find(|i| cluster.agents[*i].name == name)
        .unwrap()
}

/// Exactly one machine holds the keygroup and streams from the host; the others stream from
/// it (DESIGN.md §5 task D, intra-node stream); the host serves one subscriber, not three.
async fn one_holder_the_rest_follow(cluster: &Cluster, node: &DnsNode, host: usize) -> String {
    wait_for(
        "one holder subscribed to the host, the others to the holder",
        || async {
            let holder = holder(cluster, 0).await?;
            for (i, _) in node
                .machines
                .iter()
                .filter(|(i, _)| cluster.agents[*i].is_running())
            {
                let status = dns_status(cluster, *i).await?;
                let ok = if cluster.agents[*i].name == holder {
                    status["claim"] == "mine" && status["subscriptions"].as_u64()? >= 1
                } else {
                    status["claim"] == "held_by"
                        && status["holder"] == holder.as_str()
                        && status["subscriptions"] == 1
                };
                if !ok {
                    return None;
                }
            }
            // /v1/responsibilities shows the holder's subscriptions too.
            let list = get_json(&cluster.agents[host].url("/v1/responsibilities"))
                .await
                .ok()?;
            let row = list
                .as_array()?
                .iter()
                .find(|r| r["node"] == "ns" && r["keygroup"] == KEYGROUP)?;
            (row["machine_name"] == holder.as_str() && row["subscriptions"].as_u64()? >= 1)
                .then_some(holder)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_events_1_2_and_task_a_holder_killed_another_machine_claims_and_answers_stay_right() {
    let (mut cluster, node, web1) = start().await;
    let first = one_holder_the_rest_follow(&cluster, &node, web1).await;
    // The host serves exactly one stream: the holder's.
    wait_metric_line(&cluster.agents[web1], "hivemind_host_subscribers 1").await;

    // Survivors are queried all through the failover: every answer must be right.
    let killed = index_of(&cluster, &node, &first);
    let survivors: Vec<u16> = node
        .machines
        .iter()
        .filter(|(i, _)| *i != killed)
        .map(|(_, p)| *p)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (asked, wrong, lost) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let prober = {
        let (stop, asked, wrong, lost, survivors) = (
            stop.clone(),
            asked.clone(),
            wrong.clone(),
            lost.clone(),
            survivors.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for port in &survivors {
                    asked.fetch_add(1, Ordering::Relaxed);
                    match udp(*port, "web-1.host.hivemind.", RecordType::A) {
                        Some(a)
                            if a.code == ResponseCode::NoError && a.answers == ["127.0.0.1"] => {}
                        Some(a) => {
                            eprintln!("wrong answer during failover: {a:?}");
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    cluster.agents[killed].kill9();
    // [1]/A: SWIM → Fail → the CP releases; [2]: a surviving machine claims and subscribes.
    wait_for("another machine of the node holds the keygroup", || async {
        let h = holder(&cluster, 0).await?;
        (h != first).then_some(())
    })
    .await;
    let second = one_holder_the_rest_follow(&cluster, &node, web1).await;
    assert_ne!(second, first);

    // A change on the host reaches both survivors through the new holder.
    assert_eq!(
        put_services(
            &cluster.agents[web1],
            json!([{"name": "http", "port": 8080, "proto": "tcp"}])
        )
        .await,
        200
    );
    answers_on(
        &survivors,
        &format!("_http._tcp.{ZONE}"),
        RecordType::SRV,
        &[&format!("8080 web-1.{ZONE}")],
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    let (asked, wrong, lost) = (
        asked.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
    );
    eprintln!("failover probes: {asked} asked, {wrong} wrong, {lost} lost");
    assert!(asked > 20, "the prober ran ({asked} queries)");
    assert_eq!(wrong, 0, "no wrong answer during the failover");
    // Survivors never depended on the dead holder to answer; a lost datagram on a loaded
    // loopback is the most we accept.
    assert!(lost * 100 <= asked, "{lost} of {asked} queries lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_events_4_5_7_and_8_config_changes_rotation_and_a_machine_added_to_a_host_node() {
    let (mut cluster, node, web1) = start().await;
    one_holder_the_rest_follow(&cluster, &node, web1).await;
    let ports: Vec<u16> = node.machines.iter().map(|(_, p)| *p).collect();
    let version = |cluster: &Cluster, i: usize| {
        let url = cluster.agents[i].url("/v1/roles/dns/status");
        async move {
            let s = get_json(&url).await.ok()?;
            s["keygroups"][KEYGROUP]["version"].as_u64()
        }
    };

    // [4]: an update through a host member (any member) is validated by the CP and reaches
    // every dns machine (B): the TTL moves on all three.
    let update = |body: Value| {
        let url = cluster.agents[web1].url(&format!("/v1/keygroups/{KEYGROUP}"));
        async move { client().patch(url).json(&body).send().await.unwrap() }
    };
    let bad = update(json!({"ttl": "soon"})).await;
    assert_eq!(bad.status(), 400);
    let response = update(json!({"ttl": 42})).await;
    assert_eq!(response.status(), 200);
    let v_ttl = response.json::<Value>().await.unwrap()["version"]
        .as_u64()
        .unwrap();
    for (i, _) in &node.machines {
        wait_for("the new keygroup version on every dns machine", || async {
            (version(&cluster, *i).await? >= v_ttl).then_some(())
        })
        .await;
    }

    // [5]: the secret rotated; the host seals with the new one; every machine still opens
    // what it receives (a subscriber on the old secret re-reads the config and retries).
    let response = update(json!({"rotate_secret": true})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        put_services(
            &cluster.agents[web1],
            json!([{"name": "ssh", "port": 22, "proto": "tcp"}])
        )
        .await,
        200
    );
    answers_on(
        &ports,
        &format!("_ssh._tcp.{ZONE}"),
        RecordType::SRV,
        &[&format!("22 web-1.{ZONE}")],
    )
    .await;
    for (i, _) in &node.machines {
        let records = get_json(&cluster.agents[*i].url("/v1/roles/dns/records"))
            .await
            .unwrap();
        assert_eq!(records["refused_sealed"], 0, "{records}");
    }

    // [8]/C and D: a machine added to the host node `web-1` (AddMachineToNode) is subscribed
    // to by the holder without a restart, and its name resolves on every machine.
    let web1b = cluster.start_role_member("web-1b", "host", &["--node", "web-1"]);
    answers_on(
        &ports,
        "web-1b.host.hivemind.",
        RecordType::A,
        &["127.0.0.1"],
    )
    .await;
    let nodes = get_json(&cluster.agents[0].url("/v1/nodes/web-1"))
        .await
        .unwrap();
    let names: Vec<&str> = nodes["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{nodes}");
    assert!(names.contains(&"web-1b"), "{nodes}");

    // ...and when it leaves the node, its names go everywhere.
    cluster.agents[web1b].sigterm();
    nxdomain_on(&ports, "web-1b.host.hivemind.").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_event_3_a_partitioned_holder_that_comes_back_drops_its_stale_subscriptions() {
    let (cluster, node, web1) = start().await;
    let first = one_holder_the_rest_follow(&cluster, &node, web1).await;
    let frozen = index_of(&cluster, &node, &first);

    // Frozen (SIGSTOP) it is as good as partitioned: declared failed, released, re-claimed.
    cluster.agents[frozen].signal("STOP");
    let second = wait_for("another machine claimed", || async {
        let h = holder(&cluster, 0).await?;
        (h != first).then_some(h)
    })
    .await;
    // Healed (SIGCONT): it learns it was declared down, rejoins as a new incarnation, finds
    // the keygroup held by another machine and drops its host subscription: the host serves
    // one stream again, and the healed machine follows the new holder.
    cluster.agents[frozen].signal("CONT");
    let holder_now = one_holder_the_rest_follow(&cluster, &node, web1).await;
    assert_eq!(holder_now, second);
    wait_metric_line(&cluster.agents[web1], "hivemind_host_subscribers 1").await;
    let port = node.machines.iter().find(|(i, _)| *i == frozen).unwrap().1;
    answers_on(
        &[port],
        "web-1.host.hivemind.",
        RecordType::A,
        &["127.0.0.1"],
    )
    .await;
}

/// Trigger nodes: a `trigger` member of node `audit`, listed in the keygroup's triggers,
/// receives every record change (no serving) as events and on its webhook.
#[tokio::test(flavor = "multi_thread")]
async fn trigger_node_receives_record_changes_as_events_and_on_a_webhook() {
    let mut cluster = Cluster::local_control_plane().await;
    let web1 = cluster.start_role_member("web-1", "host", &[]);
    cluster.start_dns_member("ns-1", &[]);

    // The webhook receiver: collects every POSTed change.
    let (hook, received) = support::webhook_receiver().await;

    // The keygroup names node `audit` as a trigger (asked through web-1, a replica node).
    wait_for("web-1 joined the keygroup", || async {
        let k = get_json(&cluster.agents[web1].url(&format!("/v1/keygroups/{KEYGROUP}")))
            .await
            .ok()?;
        k["replicas"]
            .as_array()?
            .iter()
            .any(|r| r == "web-1")
            .then_some(())
    })
    .await;
    let response = client()
        .patch(cluster.agents[web1].url(&format!("/v1/keygroups/{KEYGROUP}")))
        .json(&json!({"add_triggers": ["audit"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let audit = cluster.start_role_member(
        "audit-1",
        "trigger",
        &["--node", "audit", "--trigger-webhook", &hook],
    );
    wait_for("audit-1 holds the keygroup for node audit", || async {
        let s = get_json(&cluster.agents[audit].url("/v1/roles/trigger/status"))
            .await
            .ok()?;
        let k = &s["keygroups"][KEYGROUP];
        (k["claim"] == "mine" && k["subscriptions"] == 1).then_some(())
    })
    .await;

    // A change on the host: an `updated` event with the new services, and the same on the hook.
    assert_eq!(
        put_services(
            &cluster.agents[web1],
            json!([{"name": "http", "port": 8080, "proto": "tcp"}])
        )
        .await,
        200
    );
    let events_url = cluster.agents[audit].url("/v1/roles/trigger/events?after=0&wait=10s");
    let with_service = |changes: &Value| {
        changes.as_array().is_some_and(|list| {
            list.iter().any(|c| {
                c["kind"] == "updated" && c["host"] == "web-1" && c["services"][0]["port"] == 8080
            })
        })
    };
    let page = wait_for("the change as an event", || async {
        let page = get_json(&events_url).await.ok()?;
        with_service(&page["changes"]).then_some(page)
    })
    .await;
    wait_for("the change on the webhook", || async {
        let got = Value::Array(received.lock().unwrap().clone());
        with_service(&got).then_some(())
    })
    .await;
    // A bad cursor or wait is a 400 with a code.
    let bad = client()
        .get(cluster.agents[audit].url("/v1/roles/trigger/events?wait=forever"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The host dies: a `removed` event after the cursor.
    let after = page["next_after"].as_u64().unwrap();
    cluster.agents[web1].kill9();
    wait_for("a removed event for web-1", || async {
        let url =
            cluster.agents[audit].url(&format!("/v1/roles/trigger/events?after={after}&wait=10s"));
        let page = get_json(&url).await.ok()?;
        page["changes"]
            .as_array()?
            .iter()
            .any(|c| c["kind"] == "removed" && c["host"] == "web-1")
            .then_some(())
    })
    .await;
}
