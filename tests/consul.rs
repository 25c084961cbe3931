//! The Consul-compatible catalog end to end: its answers and blocking queries on a real
//! cluster, read over HTTP and by a real Consul client (python-consul, Debian's
//! `python3-consul`) unmodified; a killed host's services leave the catalog.
//!
//! (Debian's Prometheus 2.42.0+ds is built without `consul_sd_configs`, so Prometheus itself
//! cannot be the client here.)

mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// python-consul against the catalog on the port given: prints the index, then (after a
/// blocking query a change ends) what it reads.
const CONSUL_CLIENT: &str = r#"
import json, sys, time
import consul
c = consul.Consul(host="127.0.0.1", port=int(sys.argv[1]))
index, services = c.catalog.services()
print(json.dumps({"index": index}), flush=True)
started = time.monotonic()
index, services = c.catalog.services(index=index, wait="20s")
waited = time.monotonic() - started
_, health = c.health.service("web", passing=True)
_, nodes = c.catalog.nodes()
me = c.agent.self()
print(json.dumps({"index": index, "waited": waited, "services": services, "health": health, "nodes": nodes,
                  "dc": me["Config"]["Datacenter"], "leader": c.status.leader()}), flush=True)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_consul_client_reads_the_catalog_and_blocks_until_it_changes() {
    let has_client = Command::new("/usr/bin/python3")
        .args(["-c", "import consul"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_client {
        return cannot_run("python-consul is not installed (apt-get install python3-consul)");
    }
    let mut cluster = Cluster::local_control_plane().await;
    let (ns, _) = cluster.start_dns_member("ns-1", &[]);
    let web = cluster.start_role_member("web-1", "host", &[]);
    let status = cluster.agents[web].url("/v1/status");
    wait_for("web-1 ready", || async {
        let s = get_json(&status).await.ok()?;
        (s["ready"] == true).then_some(())
    })
    .await;
    // The catalog's index moves with every record the dns member takes in: wait until it holds
    // web-1's, or its arrival would end the blocking query below.
    let records = cluster.agents[ns].url("/v1/roles/dns/records");
    wait_for("ns-1 holds web-1's record", || async {
        let r = get_json(&records).await.ok()?;
        r["records"]
            .as_array()?
            .iter()
            .any(|r| r["host"] == "web-1")
            .then_some(())
    })
    .await;
    let catalog = cluster.agents[ns].http_addr();
    let services = format!("http://{catalog}/v1/catalog/services");

    // The catalog's index, then a blocking query that a registration ends.
    let first = client().get(&services).send().await.unwrap();
    let index: u64 = first.headers()["X-Consul-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let blocking = {
        let url = format!("{services}?index={index}&wait=20s");
        tokio::spawn(async move {
            let started = Instant::now();
            let response = client().get(url).send().await.unwrap();
            let after: u64 = response.headers()["X-Consul-Index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let body: Value = response.json().await.unwrap();
            (started.elapsed(), after, body)
        })
    };
    // The query is parked: nothing changed yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if blocking.is_finished() {
        let early = blocking.await;
        panic!("a blocking query answered before any change: {early:?}");
    }
    let service = json!([{"name": "web", "port": 9100, "proto": "tcp", "tags": ["metrics"]}]);
    assert_eq!(put_services(&cluster.agents[web], service).await, 200);
    let (took, after, body) = blocking.await.unwrap();
    assert!(after > index, "the index grew: {index} -> {after}");
    assert!(
        took < Duration::from_secs(20),
        "the change ended the wait ({took:?})"
    );
    assert_eq!(body, json!({"web": ["metrics"]}));
    let health = get_json(&format!("http://{catalog}/v1/health/service/web?passing"))
        .await
        .unwrap();
    assert_eq!(health[0]["Service"]["Port"], 9100, "{health}");
    assert_eq!(health[0]["Node"]["Node"], "web-1");
    assert_eq!(health[0]["Checks"][0]["Status"], "passing");
    let me = get_json(&format!("http://{catalog}/v1/agent/self"))
        .await
        .unwrap();
    assert_eq!(me["Config"]["Datacenter"], "hivemind");
    let leader = get_json(&format!("http://{catalog}/v1/status/leader"))
        .await
        .unwrap();
    assert!(
        leader.as_str().is_some_and(|l| l.starts_with("127.0.0.1:")),
        "{leader}"
    );

    // A real Consul client (python-consul, Debian's python3-consul) reads the same catalog:
    // a blocking query that a change ends, the health of a service, nodes, the agent, the
    // leader.
    let mut script = Command::new("/usr/bin/python3")
        .args(["-c", CONSUL_CLIENT, catalog.rsplit(':').next().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(script.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(first["index"].as_str().is_some(), "{first}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let service = json!([
        {"name": "web", "port": 9100, "proto": "tcp", "tags": ["metrics"]},
        {"name": "api", "port": 9200, "proto": "tcp"}
    ]);
    assert_eq!(put_services(&cluster.agents[web], service).await, 200);
    let line = lines.next().unwrap().unwrap();
    let seen: Value = serde_json::from_str(&line).unwrap();
    let output = script.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        seen["index"].as_str().unwrap().parse::<u64>().unwrap()
            > first["index"].as_str().unwrap().parse().unwrap()
    );
    assert_eq!(
        seen["services"],
        json!({"web": ["metrics"], "api": []}),
        "{seen}"
    );
    let waited = seen["waited"].as_f64().unwrap();
    assert!(
        (0.25..20.0).contains(&waited),
        "the client's blocking query waited for the registration: {waited} s"
    );
    assert_eq!(seen["health"][0]["Service"]["Port"], 9100, "{seen}");
    assert_eq!(seen["health"][0]["Node"]["Node"], "web-1");
    assert!(seen["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["Node"] == "web-1"));
    assert_eq!(seen["dc"], "hivemind");

    // A member without host records (a CP member here) passes service queries on to one that
    // holds them; nodes it answers itself.
    let cp = cluster.agents[0].http_addr();
    let forwarded = client()
        .get(format!("http://{cp}/v1/health/service/web"))
        .send()
        .await
        .unwrap();
    assert!(forwarded.headers().contains_key("X-Consul-Index"));
    let forwarded: Value = forwarded.json().await.unwrap();
    assert_eq!(forwarded[0]["Service"]["Port"], 9100, "{forwarded}");
    let nodes = get_json(&format!("http://{cp}/v1/catalog/nodes"))
        .await
        .unwrap();
    assert!(nodes
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["Node"] == "web-1"));

    // The host dies: once SWIM declared it failed, its service is gone from the catalog.
    cluster.agents[web].kill9();
    let health = format!("http://{catalog}/v1/health/service/web");
    wait_for("the dead host's service gone", || async {
        let list = get_json(&health).await.ok()?;
        list.as_array()?.is_empty().then_some(())
    })
    .await;
}
