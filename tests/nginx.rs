//! End to end with a real nginx (Debian `nginx-light`): the nginx role renders the live hosts'
//! services and keeps a managed nginx serving them. Two hosts register service `web` backed by
//! small HTTP servers of this test; requests with `Host: web.hivemind` through nginx reach both;
//! after a host is killed and declared failed, none reaches it; a new service is served; a
//! broken template (or a render nginx refuses) leaves the old config serving, counted.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback HTTP server answering its name to every request, counting them.
struct Backend {
    name: &'static str,
    port: u16,
    hits: Arc<AtomicU64>,
}

async fn backend(name: &'static str) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::Relaxed);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    Backend { name, port, hits }
}

fn service(name: &str, backend: &Backend) -> Value {
    json!({"name": name, "port": backend.port, "proto": "tcp"})
}

async fn config(agent: &Agent) -> Value {
    get_json(&agent.url("/v1/roles/nginx/config"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_serves_the_live_hosts_services_and_never_applies_a_broken_render() {
    if !std::path::Path::new("/usr/sbin/nginx").exists() {
        return cannot_run("nginx is not installed (apt-get install nginx-light)");
    }
    let (b1, b2, b3) = (
        backend("b1").await,
        backend("b2").await,
        backend("b3").await,
    );
    let mut guard = NginxGuard(None);
    let mut cluster = Cluster::local_control_plane().await;
    cluster.start_dns_member("ns-1", &[]);
    let web1 = cluster.start_role_member("web-1", "host", &[]);
    let web2 = cluster.start_role_member("web-2", "host", &[]);
    let listen = format!("127.0.0.1:{}", free_port());
    let template = cluster.dir.path().join("nginx.j2");
    std::fs::write(&template, hivemind_nginx_role::template::BUILT_IN).unwrap();
    let template_flag = template.display().to_string();
    let nginx = cluster.start_role_member(
        "edge-1",
        "nginx",
        &[
            "--nginx-listen",
            &listen,
            "--nginx-template",
            &template_flag,
            "--nginx-bin",
            "/usr/sbin/nginx",
        ],
    );
    guard.0 = Some(cluster.agents[nginx].data_dir.join("nginx"));
    for (host, b) in [(web1, &b1), (web2, &b2)] {
        wait_ready(&cluster.agents[host]).await;
        assert_eq!(
            put_services(&cluster.agents[host], json!([service("web", b)])).await,
            200
        );
    }

    // Both backends serve `web.hivemind` through nginx.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    wait_for("both backends reached through nginx", || async {
        let (status, body) = through(&listen, "web.hivemind").await?;
        let mut seen = seen.lock().unwrap();
        if status == 200 {
            seen.insert(body);
        }
        (seen.len() == 2).then_some(())
    })
    .await;
    let (status, _) = through(&listen, "nothing.hivemind").await.unwrap();
    assert_eq!(status, 404, "an unknown host name is not routed");

    // kill -9 of a host: once it is declared failed (and 1 s more), no request reaches it.
    cluster.agents[web1].kill9();
    let cp = cluster.agents[0].url("/v1/members");
    wait_for("web-1 declared failed", || async {
        let members = get_json(&cp).await.ok()?;
        members
            .as_array()?
            .iter()
            .any(|m| m["name"] == "web-1" && m["state"] == "failed")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = b1.hits.load(Ordering::Relaxed);
    for _ in 0..40 {
        let (status, body) = through(&listen, "web.hivemind").await.unwrap();
        assert_eq!((status, body.as_str()), (200, b2.name));
    }
    assert_eq!(
        b1.hits.load(Ordering::Relaxed),
        before,
        "a failed host got requests"
    );

    // A newly registered service is served.
    let web2 = &cluster.agents[web2];
    assert_eq!(
        put_services(web2, json!([service("web", &b2), service("api", &b3)])).await,
        200
    );
    wait_for("the new service served", || async {
        let (status, body) = through(&listen, "api.hivemind").await?;
        (status == 200 && body == b3.name).then_some(())
    })
    .await;
    let nginx = &cluster.agents[nginx];
    let applied = config(nginx).await;

    // A burst of 100 registrations within a second renders at most a few times, and a change
    // that does not change the render (a UDP service: not an nginx upstream) reloads nothing.
    let reloads = |c: &Value| c["reloads"].as_u64().unwrap();
    let before = reloads(&applied);
    for port in 0..100u16 {
        let services = json!([
            service("web", &b2),
            service("api", &b3),
            {"name": "burst", "port": 20000 + port, "proto": "tcp"}
        ]);
        assert_eq!(put_services(web2, services).await, 200);
    }
    wait_for("the burst rendered", || async {
        let c = config(nginx).await;
        c["render"].as_str()?.contains(":20099;").then_some(())
    })
    .await;
    let after_burst = reloads(&config(nginx).await);
    assert!(
        after_burst - before <= 3,
        "100 registrations took {} reloads",
        after_burst - before
    );
    let unchanged = |text: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix("hivemind_nginx_unchanged_renders_total ")?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap()
    };
    let quiet_before = unchanged(&metrics_text(nginx).await);
    let services = json!([
        service("web", &b2),
        service("api", &b3),
        {"name": "burst", "port": 20099, "proto": "tcp"},
        {"name": "dns", "port": 53, "proto": "udp"}
    ]);
    assert_eq!(put_services(web2, services).await, 200);
    wait_for("the unchanged render counted", || async {
        (unchanged(&metrics_text(nginx).await) > quiet_before).then_some(())
    })
    .await;
    assert_eq!(
        reloads(&config(nginx).await),
        after_burst,
        "an unchanged render reloaded"
    );
    let applied = config(nginx).await;
    assert!(applied["render"]
        .as_str()
        .unwrap()
        .contains("server_name api.hivemind"));
    assert_eq!(applied["last_reload"]["ok"], true, "{applied}");

    // A template error: never applied, its line reported; the old config keeps serving.
    std::fs::write(
        &template,
        "# fine\n{% for s in services %}\n{{ s.nope }}\n{% endfor %}\n",
    )
    .unwrap();
    let services = json!([
        service("web", &b2),
        service("api", &b3),
        service("extra", &b3)
    ]);
    assert_eq!(put_services(web2, services).await, 200);
    wait_for("the template error reported", || async {
        let c = config(nginx).await;
        c["last_failure"]["error"]
            .as_str()?
            .contains("template line 3")
            .then_some(())
    })
    .await;
    // A render that nginx -t refuses: never applied either.
    std::fs::write(&template, "upstream broken {\n").unwrap();
    let services = json!([service("web", &b2), service("extra", &b3)]);
    assert_eq!(put_services(web2, services).await, 200);
    wait_for("nginx -t's refusal reported", || async {
        let c = config(nginx).await;
        c["last_failure"]["error"]
            .as_str()?
            .contains("nginx -t refused")
            .then_some(())
    })
    .await;
    assert_eq!(
        config(nginx).await["hash"],
        applied["hash"],
        "the running render stayed"
    );
    let (status, body) = through(&listen, "web.hivemind").await.unwrap();
    assert_eq!((status, body.as_str()), (200, b2.name));
    let (status, _) = through(&listen, "extra.hivemind").await.unwrap();
    assert_eq!(status, 404, "the broken renders were not applied");
    // Both failures are in the event feed, as the nginx member's.
    let feed = cluster.agents[0].url("/v1/events?after=0");
    wait_for("nginx_render_failed in the feed", || async {
        let page = get_json(&feed).await.ok()?;
        let reported: Vec<&Value> = page["events"]
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "nginx_render_failed" && e["name"] == "edge-1")
            .collect();
        let said = |what: &str| {
            reported
                .iter()
                .any(|e| e["error"].as_str().is_some_and(|m| m.contains(what)))
        };
        (said("template line 3") && said("nginx -t refused")).then_some(())
    })
    .await;
    let metrics = metrics_text(nginx).await;
    let failures: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("hivemind_nginx_render_failures_total ")?
                .parse()
                .ok()
        })
        .expect("the failure counter");
    assert!(failures >= 2, "{failures}");

    // Stopping the member stops its nginx.
    let pid = config(nginx).await["nginx_pid"]
        .as_u64()
        .expect("a managed nginx");
    let nginx_index = cluster
        .agents
        .iter()
        .position(|a| a.name == "edge-1")
        .unwrap();
    cluster.agents[nginx_index].sigterm();
    wait_for("the managed nginx stopped", || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
}

/// `--nginx-manage false`: the role renders into `--nginx-conf` and reloads the nginx whose
/// master is in `--nginx-pid-file`, one the operator runs (here: this test).
#[tokio::test(flavor = "multi_thread")]
async fn an_unmanaged_nginx_is_rendered_for_and_reloaded_by_its_pid_file() {
    if !std::path::Path::new("/usr/sbin/nginx").exists() {
        return cannot_run("nginx is not installed (apt-get install nginx-light)");
    }
    let b1 = backend("b1").await;
    let mut guard = NginxGuard(None);
    let mut cluster = Cluster::local_control_plane().await;
    let own = cluster.dir.path().join("own-nginx");
    guard.0 = Some(own.clone());
    std::fs::create_dir_all(own.join("tmp")).unwrap();
    let include = own.join("hivemind.conf");
    std::fs::write(&include, "# nothing rendered yet\n").unwrap();
    let d = own.display();
    let main = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/cb;\n  proxy_temp_path {d}/tmp/p;\n\
         \x20 fastcgi_temp_path {d}/tmp/f;\n  uwsgi_temp_path {d}/tmp/u;\n  scgi_temp_path {d}/tmp/s;\n\
         \x20 include {};\n}}\n",
        include.display()
    );
    std::fs::write(own.join("nginx.conf"), main).unwrap();
    let mut operator = std::process::Command::new("/usr/sbin/nginx")
        .arg("-p")
        .arg(&own)
        .arg("-e")
        .arg(own.join("error.log"))
        .arg("-c")
        .arg(own.join("nginx.conf"))
        .spawn()
        .unwrap();
    let pid_file = own.join("nginx.pid");
    wait_for("the operator's nginx started", || async {
        pid_file.exists().then_some(())
    })
    .await;

    cluster.start_dns_member("ns-1", &[]);
    let web = cluster.start_role_member("web-1", "host", &[]);
    let listen = format!("127.0.0.1:{}", free_port());
    let (include_flag, pid_flag) = (
        include.display().to_string(),
        pid_file.display().to_string(),
    );
    let edge = cluster.start_role_member(
        "edge-2",
        "nginx",
        &[
            "--nginx-manage",
            "false",
            "--nginx-conf",
            &include_flag,
            "--nginx-pid-file",
            &pid_flag,
            "--nginx-listen",
            &listen,
            "--nginx-bin",
            "/usr/sbin/nginx",
        ],
    );
    wait_ready(&cluster.agents[web]).await;
    assert_eq!(
        put_services(&cluster.agents[web], json!([service("web", &b1)])).await,
        200
    );
    wait_for("the operator's nginx serves the service", || async {
        let (status, body) = through(&listen, "web.hivemind").await?;
        (status == 200 && body == b1.name).then_some(())
    })
    .await;
    let c = config(&cluster.agents[edge]).await;
    assert_eq!(c["nginx_pid"], Value::Null, "not managed: {c}");
    assert!(std::fs::read_to_string(&include)
        .unwrap()
        .contains("upstream hivemind_default_hosts__web"));
    let _ = std::process::Command::new("kill")
        .args(["-QUIT", &operator.id().to_string()])
        .status();
    let _ = operator.wait();
}

/// Another process holds `--nginx-listen` (here a `python3 -m http.server`, as a leftover nginx
/// of another data directory would): `nginx -t` passes, the reload does not take, and the role
/// says so (config route, counter, event, status) in nginx's words with the holder's pid; once
/// the port is free it recovers by itself, and the reload reports ok with its duration.
#[tokio::test(flavor = "multi_thread")]
async fn a_listen_port_held_by_another_process_is_reported_and_recovers_when_freed() {
    if !std::path::Path::new("/usr/sbin/nginx").exists() {
        return cannot_run("nginx is not installed (apt-get install nginx-light)");
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut squatter = std::process::Command::new("/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let squatter_pid = squatter.id();
    wait_for("the other process listens", || async {
        tokio::net::TcpStream::connect(&listen)
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    let b1 = backend("b1").await;
    let mut guard = NginxGuard(None);
    let mut cluster = Cluster::local_control_plane().await;
    cluster.start_dns_member("ns-1", &[]);
    let web = cluster.start_role_member("web-1", "host", &[]);
    let edge = cluster.start_role_member(
        "edge-3",
        "nginx",
        &["--nginx-listen", &listen, "--nginx-bin", "/usr/sbin/nginx"],
    );
    guard.0 = Some(cluster.agents[edge].data_dir.join("nginx"));
    wait_ready(&cluster.agents[web]).await;
    assert_eq!(
        put_services(&cluster.agents[web], json!([service("web", &b1)])).await,
        200
    );

    // The failure, everywhere an operator looks.
    let edge_agent = &cluster.agents[edge];
    let reload = wait_for("the failed reload in the config route", || async {
        let c = config(edge_agent).await;
        (c["last_reload"]["ok"] == false).then(|| c["last_reload"].clone())
    })
    .await;
    let error = reload["error"].as_str().unwrap();
    assert!(error.contains("Address already in use"), "{error}");
    assert!(error.contains(&format!("bind() to {listen}")), "{error}");
    assert!(
        error.contains(&format!("held by pid {squatter_pid} (python3)")),
        "{error}"
    );
    let c = config(edge_agent).await;
    assert!(c["reload_failures"].as_u64().unwrap() >= 1, "{c}");
    assert!(
        metrics_text(edge_agent)
            .await
            .lines()
            .filter_map(|l| l.strip_prefix("hivemind_nginx_reload_failures_total "))
            .any(|v| v.trim() != "0"),
        "the counter in /metrics"
    );
    let edge_status = edge_agent.url("/v1/status");
    let s = get_json(&edge_status).await.unwrap();
    assert_eq!(s["ready"], false, "{s}");
    assert!(
        s["waiting_for"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "role:nginx:reload_not_served"),
        "{s}"
    );
    let feed = cluster.agents[0].url("/v1/events?after=0");
    wait_for("nginx_render_failed in the feed", || async {
        let page = get_json(&feed).await.ok()?;
        page["events"]
            .as_array()?
            .iter()
            .any(|e| {
                e["kind"] == "nginx_render_failed"
                    && e["name"] == "edge-3"
                    && e["error"]
                        .as_str()
                        .is_some_and(|t| t.contains("Address already in use"))
            })
            .then_some(())
    })
    .await;

    // The port freed: the role tries again by itself and nginx serves the render.
    let _ = std::process::Command::new("kill")
        .args(["-9", &squatter_pid.to_string()])
        .status();
    let _ = squatter.wait();
    let reload = wait_for("the reload served once the port is free", || async {
        let c = config(edge_agent).await;
        (c["last_reload"]["ok"] == true).then(|| c["last_reload"].clone())
    })
    .await;
    assert!(reload["duration_ms"].as_f64().unwrap() > 0.0, "{reload}");
    wait_for("the service through nginx", || async {
        let (status, body) = through(&listen, "web.hivemind").await?;
        (status == 200 && body == b1.name).then_some(())
    })
    .await;
    wait_ready(edge_agent).await;
}
