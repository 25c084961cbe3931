//! The dashboard in a real browser (DESIGN.md §6i): headless Chromium driven through
//! chromedriver (WebDriver) opens `GET /` of a running cluster and goes through every view as a
//! user does, by the links: services with their health, members and the leader, keygroups,
//! responsibilities, backup, KV (a key written through the API appears without a reload; a key
//! created and edited in the page is what `hivemind kv get` reads; an edit that lost a race
//! shows the conflict and overwrites nothing), events with a filter, nginx; a killed host turns
//! `failed` by itself. Under ACLs the page asks for a token; a read-only token browses but
//! cannot edit; a management token sees policies and tokens. Each view's screenshot goes to
//! `$HIVEMIND_SCREENSHOTS` (the ones in docs/ were made so) or the target directory.
//! `.ci/run` installs `chromium` and `chromium-driver`; without them the test fails in CI.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use support::*;

/// chromedriver on a free port in a process group of its own, which is stopped when dropped:
/// the browsers it started go with it even when a failed test never closed its session.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-9", "--", &group]).status();
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
            .process_group(0)
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

/// Waits until a row of `table` satisfies `matches`.
async fn row_appears(client: &Client, table: &str, what: &str, matches: impl Fn(&str) -> bool) {
    wait_for(what, || async {
        let all = rows(client, table).await;
        all.iter().any(|r| matches(r)).then_some(())
    })
    .await;
}

/// The text of an element (empty when it is not there).
async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Follows the navigation link to `view` (no reload).
async fn open(client: &Client, view: &str) {
    client
        .find(Locator::Css(&format!("nav a[href='#{view}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn click(client: &Client, css: &str) {
    let what = format!("{css} to click");
    wait_for(&what, || async {
        client
            .find(Locator::Css(css))
            .await
            .ok()?
            .click()
            .await
            .ok()
    })
    .await;
}

async fn type_into(client: &Client, css: &str, value: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

async fn shot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = std::env::var_os("HIVEMIND_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("dashboard-{name}.png")), &png).unwrap();
}

async fn put_key(url: &str, value: &str, token: Option<&str>) -> u16 {
    let mut request = support::client().put(url).body(value.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn read_key(url: &str, token: Option<&str>) -> String {
    let mut request = support::client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().text().await.unwrap()
}

/// The page never reloaded since [`mark`].
async fn still_same_page(client: &Client) -> bool {
    client
        .execute("return window.hivemindTestMark === 1", vec![])
        .await
        .unwrap()
        == json!(true)
}

async fn mark(client: &Client) {
    client
        .execute("window.hivemindTestMark = 1", vec![])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_view_shows_the_cluster_live_and_the_kv_editor_keeps_to_cas() {
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
    mark(&client).await;

    // Services (the first view): a TTL check is critical until reported, then passing.
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
                        && r.split_whitespace().any(|w| w == status)
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
    // A lease with a lock key on it (the table is read with the view).
    let lease: serde_json::Value = support::client()
        .post(cluster.agents[0].url("/v1/leases"))
        .json(&json!({"ttl": "60s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lock_key = format!("/v1/kv/_locks/job/1?lease={}", lease["id"]);
    assert_eq!(
        put_key(&cluster.agents[0].url(&lock_key), "x", None).await,
        200
    );
    wait_for("the lease and its lock key", || async {
        open(&client, "members").await;
        open(&client, "services").await;
        let leases = rows(&client, "leases").await;
        leases
            .iter()
            .any(|r| r.contains("_locks/job/1"))
            .then_some(())
    })
    .await;
    shot(&client, "services").await;

    // Members: every member alive, one the leader, named in the summary too.
    open(&client, "members").await;
    wait_for("every member alive, and the leader", || async {
        let members = rows(&client, "members").await;
        let alive = |name: &str| {
            members
                .iter()
                .any(|r| r.starts_with(&format!("{name} alive")))
        };
        let all = ["cp1", "cp2", "cp3", "web-1", "ns-1", "vault-1"]
            .iter()
            .all(|n| alive(n));
        let leader = members.iter().find(|r| r.contains(" leader "))?;
        let name = leader.split_whitespace().next()?;
        let summary = text(&client, "#summary").await;
        (all && summary.contains(&format!("leader: {name}"))).then_some(())
    })
    .await;
    shot(&client, "members").await;

    open(&client, "keygroups").await;
    row_appears(&client, "keygroups", "the default keygroup", |r| {
        r.contains("hivemind/default/hosts")
    })
    .await;
    shot(&client, "keygroups").await;
    open(&client, "responsibilities").await;
    row_appears(
        &client,
        "responsibilities",
        "ns-1 holding the keygroup",
        |r| r.contains("ns-1"),
    )
    .await;
    shot(&client, "responsibilities").await;
    open(&client, "backup").await;
    row_appears(
        &client,
        "spaces",
        "the backup space with its numbers",
        |r| r.starts_with("vault-1 alive 2.0 GB 0 B 0 B 0%"),
    )
    .await;
    shot(&client, "backup").await;

    // KV: a key written through the API appears in the open view by itself.
    open(&client, "kv").await;
    let color = cluster.agents[1].url("/v1/kv/app/color");
    assert_eq!(put_key(&color, "red", None).await, 200);
    click(&client, "#kv-list button[data-prefix='app/']").await;
    click(&client, "#kv-list button[data-key='app/color']").await;
    wait_for("app/color's value in the editor", || async {
        let editor = client.find(Locator::Id("kv-value")).await.ok()?;
        (editor.prop("value").await.ok()?? == "red").then_some(())
    })
    .await;
    // A key created in the page, then edited there, is what the CLI reads.
    let http_addr = cluster.agents[2].http_addr();
    let cli_get = |key: &str| {
        stdout(&cli(&["kv", "get", key, "--http-addr", &http_addr]))
            .trim()
            .to_string()
    };
    type_into(&client, "#kv-new-key", "app/size").await;
    type_into(&client, "#kv-new-value", "large").await;
    click(&client, "#kv-create button[type='submit']").await;
    wait_for("app/size created", || async {
        (cli_get("app/size") == "large").then_some(())
    })
    .await;
    click(&client, "#kv-list button[data-key='app/size']").await;
    type_into(&client, "#kv-value", "small").await;
    click(&client, "#kv-save").await;
    wait_for("the edit saved", || async {
        let saved = text(&client, "#kv-message")
            .await
            .starts_with("Saved app/size");
        (saved && cli_get("app/size") == "small").then_some(())
    })
    .await;
    // An edit that lost a race: the conflict shows and the other write stays.
    click(&client, "#kv-list button[data-key='app/color']").await;
    type_into(&client, "#kv-value", "green").await;
    assert_eq!(put_key(&color, "blue", None).await, 200);
    click(&client, "#kv-save").await;
    wait_for("the conflict shown", || async {
        text(&client, "#kv-message")
            .await
            .starts_with("Conflict: app/color changed")
            .then_some(())
    })
    .await;
    assert_eq!(read_key(&color, None).await, "blue");
    assert!(still_same_page(&client).await, "the page reloaded");
    shot(&client, "kv").await;

    // Events: readable rows, filtered by kind.
    open(&client, "events").await;
    wait_for("member_joined events listed", || async {
        let events = rows(&client, "events").await;
        events
            .iter()
            .any(|r| r.contains("member_joined"))
            .then_some(())
    })
    .await;
    let filter = client.find(Locator::Id("event-kind")).await.unwrap();
    filter
        .select_by_value("member_joined")
        .await
        .expect("member_joined offered in the filter");
    let events = rows(&client, "events").await;
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|r| r.split_whitespace().nth(1) == Some("member_joined")),
        "{events:?}"
    );
    shot(&client, "events").await;
    open(&client, "nginx").await;
    wait_for("the nginx view", || async {
        (!text(&client, "#nginx").await.is_empty()).then_some(())
    })
    .await;
    shot(&client, "nginx").await;

    // On a phone's width the navigation wraps and the tables scroll inside their box.
    client.set_window_size(400, 860).await.unwrap();
    open(&client, "members").await;
    let overflow = client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    let widest = client
        .execute(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).join(', ')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        json!(true),
        "the page is wider than a phone: {widest}"
    );
    shot(&client, "phone").await;
    client.set_window_size(1280, 1100).await.unwrap();

    // kill -9 of the host: the members view turns it failed by itself.
    cluster.agents[web1].kill9();
    wait_for("web-1 failed on the dashboard", || async {
        rows(&client, "members")
            .await
            .iter()
            .any(|r| r.starts_with("web-1 failed"))
            .then_some(())
    })
    .await;
    assert!(still_same_page(&client).await, "the page reloaded");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn under_acls_the_page_asks_for_a_token_and_a_read_only_one_cannot_edit() {
    let Some((driver_bin, chrome)) = chromium() else {
        cannot_run("chromium and chromedriver not installed (.ci/run installs them)");
        return;
    };
    let cluster = Cluster::local_control_plane().await;
    let http = support::client();
    let boot: serde_json::Value = http
        .post(cluster.agents[0].url("/v1/acl/bootstrap"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let root = boot["secret"]
        .as_str()
        .expect("a management secret")
        .to_string();
    let rules = "cp = \"read\"\n[kv]\n\"app/\" = \"read\"\n";
    let status = http
        .put(cluster.agents[0].url("/v1/acl/policy/app-read"))
        .bearer_auth(&root)
        .body(rules)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let reader: serde_json::Value = http
        .post(cluster.agents[0].url("/v1/acl/tokens"))
        .bearer_auth(&root)
        .json(&json!({"policies": ["app-read"], "description": "dashboard reader"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reader = reader["secret"].as_str().unwrap().to_string();
    let key = cluster.agents[0].url("/v1/kv/app/motd");
    assert_eq!(put_key(&key, "hello", Some(&root)).await, 200);

    let (_driver, client) = browser(&driver_bin, &chrome).await;
    client.goto(&cluster.agents[0].url("/")).await.unwrap();
    wait_for("the page to ask for a token", || async {
        let asked = text(&client, "#login-reason").await == "This cluster needs a token.";
        let shown = client
            .find(Locator::Id("token"))
            .await
            .ok()?
            .is_displayed()
            .await
            .ok()?;
        (asked && shown).then_some(())
    })
    .await;
    shot(&client, "login").await;

    // The read-only token browses KV, and its edit is refused: the value stays.
    type_into(&client, "#token", &reader).await;
    click(&client, "#login button[type='submit']").await;
    client
        .goto(&cluster.agents[0].url("/#kv/app%2F"))
        .await
        .unwrap();
    click(&client, "#kv-list button[data-key='app/motd']").await;
    wait_for("app/motd in the editor", || async {
        let editor = client.find(Locator::Id("kv-value")).await.ok()?;
        (editor.prop("value").await.ok()?? == "hello").then_some(())
    })
    .await;
    type_into(&client, "#kv-value", "defaced").await;
    click(&client, "#kv-save").await;
    wait_for("the refusal shown", || async {
        text(&client, "#kv-message")
            .await
            .starts_with("Not saved:")
            .then_some(())
    })
    .await;
    assert_eq!(read_key(&key, Some(&root)).await, "hello");
    open(&client, "acl").await;
    wait_for(
        "the ACL view to say it needs a management token",
        || async {
            text(&client, "#login-reason")
                .await
                .contains("need a management token")
                .then_some(())
        },
    )
    .await;

    // The management token sees policies and tokens.
    type_into(&client, "#token", &root).await;
    click(&client, "#login button[type='submit']").await;
    wait_for("policies and tokens listed", || async {
        let policies = rows(&client, "policies").await;
        let tokens = rows(&client, "tokens").await;
        (policies.iter().any(|r| r.starts_with("app-read"))
            && tokens.iter().any(|r| r.contains("dashboard reader")))
        .then_some(())
    })
    .await;
    shot(&client, "acl").await;
    client.close().await.unwrap();
}

/// `hivemind dev`, stopped with SIGINT (it then removes its data) when dropped.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_dev_starts_the_services_view_lists_the_sample_service_with_its_health() {
    let Some((driver_bin, chrome)) = chromium() else {
        cannot_run("chromium and chromedriver not installed (.ci/run installs them)");
        return;
    };
    let base = dev_base_port();
    let _dev = Dev(Command::new(BIN)
        .args(["dev", "--base-port", &base.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let url = format!("http://127.0.0.1:{base}/");
    wait_for("dev to serve its dashboard", || async {
        let answer = support::client().get(&url).send().await.ok()?;
        answer.status().is_success().then_some(())
    })
    .await;
    let (_driver, client) = browser(&driver_bin, &chrome).await;
    client.goto(&url).await.unwrap();
    wait_for("web-1's sample service, passing", || async {
        let services = rows(&client, "services").await;
        services
            .iter()
            .any(|r| {
                r.starts_with("http http web-1 127.0.0.1:8080 ")
                    && r.split_whitespace().any(|w| w == "passing")
            })
            .then_some(())
    })
    .await;
    client.close().await.unwrap();
}
