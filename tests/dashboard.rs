//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! opens `GET /` of a running cluster, sees the members and the leader, sees a killed host turn
//! `failed`, and saves a screenshot (`target/dashboard.png`). `.ci/run` installs `chromium` and
//! `chromium-driver`; without them the test says so and passes.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use support::*;

/// chromedriver on a free port, stopped by PID when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> Option<(String, String)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|n| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {n}")])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
    };
    Some((
        find(&["chromedriver"])?,
        find(&["chromium", "chromium-browser", "google-chrome"])?,
    ))
}

async fn browser(driver_bin: &str, chrome: &str) -> (Driver, Client) {
    let port = free_port();
    let driver = Driver(
        Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chrome,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1100"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = wait_for("chromedriver to start a session", || {
        let (url, capabilities) = (url.clone(), capabilities.clone());
        async move {
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url)
                .await
                .ok()
        }
    })
    .await;
    (driver, client)
}

/// The text of every row of one of the dashboard's tables.
async fn rows(client: &Client, table: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rows) = client
        .find_all(Locator::Css(&format!("#{table} tbody tr")))
        .await
    else {
        return out;
    };
    for row in rows {
        if let Ok(text) = row.text().await {
            out.push(text);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_members_and_the_leader_and_a_killed_host_turning_failed() {
    let Some((driver_bin, chrome)) = chromium() else {
        cannot_run("chromium and chromedriver not installed (.ci/run installs them)");
        return;
    };
    let mut cluster = Cluster::local_control_plane().await;
    let web1 = cluster.start_role_member("web-1", "host", &[]);
    cluster.start_dns_member("ns-1", &[]);
    cluster.start_role_member("vault-1", "backup", &["--backup-space", "2GB"]);

    let (_driver, client) = browser(&driver_bin, &chrome).await;
    client.goto(&cluster.agents[0].url("/")).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "hivemind");

    // Every member listed alive, and the leader named in the summary and the CP table.
    wait_for("every member alive on the dashboard", || async {
        let members = rows(&client, "members").await;
        let alive = |name: &str| {
            members
                .iter()
                .any(|r| r.starts_with(&format!("{name} alive")))
        };
        ["cp1", "cp2", "cp3", "web-1", "ns-1", "vault-1"]
            .iter()
            .all(|n| alive(n))
            .then_some(())
    })
    .await;
    // The CP table marks one voter the leader, and the summary names the same one.
    wait_for("the leader on the dashboard", || async {
        let cp = rows(&client, "cp").await;
        let leader = cp.iter().find(|r| r.ends_with(" leader"))?;
        let name = leader.split_whitespace().next()?;
        let summary = client
            .find(Locator::Id("summary"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (cp.len() == 3 && summary.contains(&format!("leader: {name}"))).then_some(())
    })
    .await;
    wait_for("the keygroup and its responsibility", || async {
        let keygroups = rows(&client, "keygroups").await;
        let held = rows(&client, "responsibilities").await;
        (keygroups
            .iter()
            .any(|r| r.contains("hivemind/default/hosts"))
            && held.iter().any(|r| r.contains("ns-1")))
        .then_some(())
    })
    .await;

    // The backup spaces with their numbers.
    wait_for("the backup space on the dashboard", || async {
        rows(&client, "spaces")
            .await
            .iter()
            .any(|r| r.starts_with("vault-1 2.0 GB 0 B 0 B 2.0 GB"))
            .then_some(())
    })
    .await;

    // A service with a TTL check: critical until reported, then passing, on the page.
    let register = cluster.agents[web1].url("/v1/agent/service/register");
    let service = json!({"Name": "api", "Port": 8080, "Check": {"TTL": "10m"}});
    let status = support::client()
        .put(&register)
        .json(&service)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let instance = |status: &'static str| {
        let client = &client;
        move || async move {
            rows(client, "services")
                .await
                .iter()
                .any(|r| {
                    r.starts_with("api api web-1 127.0.0.1:8080 ")
                        && r.contains(&format!(" {status} "))
                })
                .then_some(())
        }
    };
    wait_for("api critical on the dashboard", instance("critical")).await;
    let pass = cluster.agents[web1].url("/v1/agent/check/pass/service:api");
    assert_eq!(
        support::client().put(&pass).send().await.unwrap().status(),
        200
    );
    wait_for("api passing on the dashboard", instance("passing")).await;

    // A lease with a lock key on it, in the leases table.
    let grant = cluster.agents[0].url("/v1/leases");
    let lease: serde_json::Value = support::client()
        .post(&grant)
        .json(&json!({"ttl": "60s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = cluster.agents[0].url(&format!("/v1/kv/_locks/job/1?lease={}", lease["id"]));
    let status = support::client()
        .put(&key)
        .body("x")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    wait_for("the lease and its lock key on the dashboard", || async {
        rows(&client, "leases")
            .await
            .iter()
            .any(|r| r.contains("_locks/job/1"))
            .then_some(())
    })
    .await;

    // kill -9 of the host: the page turns it failed by itself (it refreshes every second).
    cluster.agents[web1].kill9();
    wait_for("web-1 failed on the dashboard", || async {
        rows(&client, "members")
            .await
            .iter()
            .any(|r| r.starts_with("web-1 failed"))
            .then_some(())
    })
    .await;
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
    tokio::time::sleep(Duration::from_millis(10)).await;
    client.close().await.unwrap();
}
