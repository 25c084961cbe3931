//! Service health checks end to end (DESIGN.md §6g) with real processes: a real backend
//! process (Python's `http.server`), a real nginx, python-consul registering through Consul's
//! agent API on a host member, DNS over UDP and the catalog over HTTP. A backend killed with -9
//! leaves DNS, nginx and the catalog while its host stays alive, and comes back when restarted;
//! TTL checks, `deregister_critical_after`, bad input and a host restart behave as in Consul.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use support::dns::{udp, ZONE};
use support::*;

/// python-consul against a host member's agent API: registers what `argv[2]` names.
const REGISTER: &str = r#"
import json, sys
import consul
c = consul.Consul(host="127.0.0.1", port=int(sys.argv[1]))
op = sys.argv[2]
if op == "http":
    ok = c.agent.service.register("api", service_id="api", port=int(sys.argv[3]), tags=["v1"],
        check=consul.Check.http(sys.argv[4], interval="1s", timeout="1s"))
elif op == "ttl":
    ok = c.agent.service.register("worker", port=int(sys.argv[3]), check=consul.Check.ttl("3s"))
    # python-consul 0.7 reports TTLs with GET, which Consul 1.x refuses (405): so does hivemind.
    ok = ok and not c.agent.check.ttl_pass("service:worker")
print(json.dumps({"ok": ok, "services": c.agent.services(), "checks": c.agent.checks()}), flush=True)
"#;

fn python_consul(args: &[&str]) -> Value {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(REGISTER)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    answer
}

fn has_python_consul() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import consul"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A real backend process serving `dir` (with a `health` file) on `port`; killed by PID.
struct Backend {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Backend {
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("health"), "ok\n").unwrap();
        let mut backend = Self {
            child: None,
            port,
            dir,
        };
        backend.restart();
        backend
    }

    fn restart(&mut self) {
        let child = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "http.server",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    async fn wait_up(&self) {
        let url = format!("http://127.0.0.1:{}/health", self.port);
        wait_for("the backend serving", || async {
            let r = client().get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The SRV targets DNS answers for `name` now (empty for NXDOMAIN or no answer).
fn srv(dns_port: u16, name: &str) -> Option<Vec<String>> {
    let answer = udp(dns_port, name, RecordType::SRV)?;
    match answer.code {
        ResponseCode::NoError | ResponseCode::NXDomain => Some(answer.answers),
        _ => None,
    }
}

async fn passing(catalog: &str, service: &str) -> Option<Vec<Value>> {
    let health = get_json(&format!(
        "http://{catalog}/v1/health/service/{service}?passing"
    ))
    .await;
    Some(health.ok()?.as_array()?.clone())
}

async fn put(url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().put(url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The check `id` as the host's agent API shows it.
async fn agent_check(host: &Agent, id: &str) -> Option<Value> {
    let checks = get_json(&host.url("/v1/agent/checks")).await.ok()?;
    checks.get(id).cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_backend_leaves_dns_nginx_and_the_catalog_while_its_host_stays() {
    if !has_python_consul() {
        return cannot_run("python-consul is not installed (apt-get install python3-consul)");
    }
    if !std::path::Path::new("/usr/sbin/nginx").exists() {
        return cannot_run("nginx is not installed (apt-get install nginx-light)");
    }
    let mut guard = NginxGuard(None);
    let mut cluster = Cluster::local_control_plane().await;
    let (ns, dns_port) = cluster.start_dns_member("ns-1", &[]);
    let web = cluster.start_role_member("web-1", "host", &[]);
    let listen = format!("127.0.0.1:{}", free_port());
    let edge = cluster.start_role_member(
        "edge-1",
        "nginx",
        &["--nginx-listen", &listen, "--nginx-bin", "/usr/sbin/nginx"],
    );
    guard.0 = Some(cluster.agents[edge].data_dir.join("nginx"));
    let mut backend = Backend::start(free_port());
    backend.wait_up().await;
    let port = backend.port.to_string();
    let health_url = format!("http://127.0.0.1:{port}/health");

    // python-consul registers the service with an HTTP check on the host member.
    let web_port = cluster.agents[web].http_port.to_string();
    let answer = python_consul(&[&web_port, "http", &port, &health_url]);
    assert_eq!(answer["services"]["api"]["Port"], backend.port);
    assert_eq!(
        answer["checks"]["service:api"]["Name"],
        "Service 'api' check"
    );

    let srv_name = format!("_api._tcp.{ZONE}");
    let target = format!("{port} web-1.{ZONE}");
    let catalog = cluster.agents[ns].http_addr();
    let nginx_config = cluster.agents[edge].url("/v1/roles/nginx/config");
    // Where api is: DNS's SRV answer, the catalog's passing set, and nginx's running render
    // (a dead backend behind a kept upstream would also fail requests: the render tells).
    let in_all_three = || async {
        let in_dns = srv(dns_port, &srv_name)? == [target.clone()];
        let in_catalog = passing(&catalog, "api").await?.len() == 1;
        let config = get_json(&nginx_config).await.ok()?;
        let in_nginx = config["render"]
            .as_str()?
            .contains("hivemind_default_hosts__api");
        Some((in_dns, in_catalog, in_nginx))
    };
    wait_for("api in DNS, the catalog (passing) and nginx", || async {
        (in_all_three().await? == (true, true, true)).then_some(())
    })
    .await;
    wait_for("api served through nginx", || async {
        (through(&listen, "api.hivemind").await?.0 == 200).then_some(())
    })
    .await;
    let entry = passing(&catalog, "api").await.unwrap().remove(0);
    let check = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "service:api")
        .cloned()
        .unwrap_or_else(|| panic!("no service check in {entry}"));
    assert_eq!(check["Status"], "passing");
    assert_eq!(check["ServiceID"], "api");
    assert_eq!(check["Node"], "web-1");
    assert!(
        check["Output"]
            .as_str()
            .unwrap()
            .starts_with(&format!("HTTP GET {health_url}: 200")),
        "{check}"
    );
    assert_eq!(entry["Checks"][0]["CheckID"], "serfHealth");

    // kill -9 of the backend only: out of all three within the interval (1 s) + 3 s.
    backend.kill9();
    let killed = Instant::now();
    let limit = Duration::from_secs(4);
    wait_for_within("api out of DNS, the catalog and nginx", limit, || async {
        (in_all_three().await? == (false, false, false)).then_some(())
    })
    .await;
    eprintln!("backend death -> out of all three: {:?}", killed.elapsed());
    let all = get_json(&format!("http://{catalog}/v1/health/service/api"))
        .await
        .unwrap();
    let statuses: Vec<&Value> = all[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["Status"])
        .collect();
    assert_eq!(statuses, [&json!("passing"), &json!("critical")], "{all}");
    let config = get_json(&cluster.agents[edge].url("/v1/roles/nginx/config"))
        .await
        .unwrap();
    assert!(
        !config["render"].as_str().unwrap_or("").contains("__api"),
        "{config}"
    );
    let members = get_json(&cluster.agents[0].url("/v1/members"))
        .await
        .unwrap();
    let web_state = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "web-1")
        .map(|m| m["state"].clone());
    assert_eq!(
        web_state,
        Some(json!("alive")),
        "the host itself stays alive"
    );
    let a = udp(dns_port, &format!("web-1.{ZONE}"), RecordType::A).unwrap();
    assert_eq!(a.answers, ["127.0.0.1"], "its own A stays");

    // The backend back: in all three again.
    backend.restart();
    wait_for("api back in DNS, the catalog and nginx", || async {
        (in_all_three().await? == (true, true, true)).then_some(())
    })
    .await;
    wait_for("api served through nginx again", || async {
        (through(&listen, "api.hivemind").await?.0 == 200).then_some(())
    })
    .await;
    let metrics = metrics_text(&cluster.agents[web]).await;
    assert!(
        metrics.contains("hivemind_host_checks{status=\"passing\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hivemind_host_check_status_changes_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hivemind_host_check_runs_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_checks_reaping_bad_input_and_a_host_restart_behave_as_in_consul() {
    if !has_python_consul() {
        return cannot_run("python-consul is not installed (apt-get install python3-consul)");
    }
    let mut cluster = Cluster::local_control_plane().await;
    let (ns, _) = cluster.start_dns_member("ns-1", &[]);
    let web = cluster.start_role_member("web-1", "host", &[]);
    let catalog = cluster.agents[ns].http_addr();
    let web_addr = cluster.agents[web].http_addr();
    let host = |path: &str| format!("http://{web_addr}{path}");
    wait_for("web-1 serving", || async {
        get_json(&host("/v1/status")).await.ok()
    })
    .await;

    // hivemind's own route takes the same check fields: a TCP check on a listener of the test.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db_port = listener.local_addr().unwrap().port();
    let db = json!([{"name": "db", "port": db_port,
        "checks": [{"tcp": format!("127.0.0.1:{db_port}"), "interval": "1s"}]}]);
    assert_eq!(put_services(&cluster.agents[web], db).await, 200);
    wait_for("the db tcp check passing", || async {
        let c = agent_check(&cluster.agents[web], "service:db").await?;
        (c["Status"] == "passing").then_some(())
    })
    .await;

    // A TTL check starts critical; python-consul's GET report is refused with 405.
    let web_port = cluster.agents[web].http_port.to_string();
    let answer = python_consul(&[&web_port, "ttl", "7000"]);
    assert_eq!(
        answer["checks"]["service:worker"]["Status"], "critical",
        "{answer}"
    );
    let get = client()
        .get(host("/v1/agent/check/pass/service:worker"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(passing(&catalog, "worker").await, Some(vec![]));

    // A blocking query on the catalog, parked at its index, wakes on the check's change.
    let health_url = format!("http://{catalog}/v1/health/service/worker");
    wait_for("worker (critical) in the catalog", || async {
        let all = get_json(&health_url).await.ok()?;
        (all[0]["Checks"][1]["Status"] == "critical").then_some(())
    })
    .await;
    let index: u64 = client().get(&health_url).send().await.unwrap().headers()["X-Consul-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let blocking = tokio::spawn(async move {
        let started = Instant::now();
        let url = format!("{health_url}?index={index}&wait=30s");
        let answer = client().get(url).send().await.unwrap();
        let after: u64 = answer.headers()["X-Consul-Index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: Value = answer.json().await.unwrap();
        (started.elapsed(), after, body)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !blocking.is_finished(),
        "the blocking query answered before any change"
    );

    // Reported: passing with the note as output, and in the catalog's passing set.
    let (status, _) = put(
        &host("/v1/agent/check/pass/service:worker?note=all%20good"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (took, after, body) = blocking.await.unwrap();
    assert!(
        after > index && took < Duration::from_secs(30),
        "{took:?} {index} -> {after}"
    );
    let statuses: Vec<&Value> = body[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["Status"])
        .collect();
    assert_eq!(statuses, [&json!("passing"), &json!("passing")], "{body}");
    let c = agent_check(&cluster.agents[web], "service:worker")
        .await
        .unwrap();
    assert_eq!(
        (&c["Status"], &c["Output"], &c["Type"]),
        (&json!("passing"), &json!("all good"), &json!("ttl"))
    );
    wait_for("worker passing in the catalog", || async {
        (passing(&catalog, "worker").await?.len() == 1).then_some(())
    })
    .await;
    // Not reported within its 3 s TTL: critical, "TTL expired".
    wait_for("the TTL expired", || async {
        let c = agent_check(&cluster.agents[web], "service:worker").await?;
        (c["Status"] == "critical" && c["Output"] == "TTL expired").then_some(())
    })
    .await;
    wait_for("worker out of the catalog's passing set", || async {
        passing(&catalog, "worker").await?.is_empty().then_some(())
    })
    .await;
    let (status, _) = put(
        &host("/v1/agent/check/update/service:worker"),
        Some(json!({"Status": "warning", "Output": "slow"})),
    )
    .await;
    assert_eq!(status, 200);
    let c = agent_check(&cluster.agents[web], "service:worker")
        .await
        .unwrap();
    assert_eq!(
        (&c["Status"], &c["Output"]),
        (&json!("warning"), &json!("slow"))
    );

    // Bad input: 400 naming the field, and nothing changes.
    let before = (
        get_json(&host("/v1/agent/services")).await.unwrap(),
        get_json(&host("/v1/roles/host/record")).await.unwrap()["seq"].clone(),
    );
    let register = host("/v1/agent/service/register");
    let bad = [
        (
            json!({"Name": "x", "Port": 1, "Check": {"Args": ["/bin/true"], "Interval": "10s"}}),
            "Service.Check.Args",
        ),
        (
            json!({"Name": "x", "Port": 1, "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "500ms"}}),
            "Service.Check.Interval",
        ),
        (
            json!({"Name": "x", "Port": 1, "Check": {"HTTP": "not a url", "Interval": "10s"}}),
            "Service.Check.HTTP",
        ),
        (
            json!({"Name": "x", "Port": 1, "Check": {"TTL": "soon"}}),
            "Service.Check.TTL",
        ),
        (json!({"Port": 1}), "Service.name"),
    ];
    for (body, field) in bad {
        let (status, error) = put(&register, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["error"]["code"], "invalid", "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let (status, error) = put(&host("/v1/agent/check/pass/nope"), None).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (400, &json!("unknown_check"))
    );
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("id:"));
    let (status, error) = put(&host("/v1/agent/check/pass/service:db"), None).await;
    assert_eq!((status, &error["error"]["code"]), (400, &json!("not_ttl")));
    let (status, _) = put(
        &host("/v1/agent/check/update/service:worker"),
        Some(json!({"Status": "fine"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = put(&host("/v1/agent/service/deregister/nope"), None).await;
    assert_eq!(status, 404);
    let after = (
        get_json(&host("/v1/agent/services")).await.unwrap(),
        get_json(&host("/v1/roles/host/record")).await.unwrap()["seq"].clone(),
    );
    assert_eq!(after.0, before.0, "bad input changed the services");

    // deregister_critical_after: a service whose check stays critical is removed.
    let gone = json!({"Name": "gone", "Port": 2, "Check": {"TTL": "1s", "DeregisterCriticalServiceAfter": "2s"}});
    assert_eq!(put(&register, Some(gone)).await.0, 200);
    assert!(get_json(&host("/v1/agent/services"))
        .await
        .unwrap()
        .get("gone")
        .is_some());
    wait_for("gone reaped", || async {
        let services = get_json(&host("/v1/agent/services")).await.ok()?;
        services.get("gone").is_none().then_some(())
    })
    .await;
    wait_metric_line(
        &cluster.agents[web],
        "hivemind_host_reaped_services_total 1",
    )
    .await;

    // Registrations survive a restart of the host member, and so do the checks' statuses.
    let keep = json!({"Name": "keep", "Port": 3, "Check": {"TTL": "10m"}});
    assert_eq!(put(&register, Some(keep)).await.0, 200);
    let (status, _) = put(&host("/v1/agent/check/pass/service:keep?note=kept"), None).await;
    assert_eq!(status, 200);
    assert!(cluster.agents[web].sigterm().success());
    cluster.agents[web].start();
    let services = wait_for("web-1 back", || async {
        get_json(&host("/v1/agent/services")).await.ok()
    })
    .await;
    let mut ids: Vec<&String> = services.as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["db", "keep", "worker"]);
    let checks = get_json(&host("/v1/agent/checks")).await.unwrap();
    assert_eq!(checks["service:worker"]["Type"], "ttl");
    // Each check starts from its status before the restart (Consul starts them critical).
    let keep = &checks["service:keep"];
    assert_eq!(
        (&keep["Status"], &keep["Output"]),
        (&json!("passing"), &json!("kept")),
        "{checks}"
    );
    wait_for("the db check passing again", || async {
        let c = agent_check(&cluster.agents[web], "service:db").await?;
        (c["Status"] == "passing").then_some(())
    })
    .await;
    drop(listener);
}
