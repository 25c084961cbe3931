//! Coordination primitives end to end (DESIGN.md §6h) on a real 3-member control plane: a
//! prefix watch gets exactly the changes under its prefix; a key on a lease lives while kept
//! alive (across kill -9 of the leader) and goes after the TTL once not; a transaction is all or
//! nothing; three `hivemind lock` processes run their commands one at a time with growing
//! fences; `hivemind elect` hands leadership over when the leader's process is killed.

mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use support::*;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn send(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put_raw(url: &str, value: &str) -> (u16, Value) {
    let response = client()
        .put(url)
        .body(value.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_see_exactly_their_prefix_and_transactions_are_all_or_nothing() {
    let cluster = Cluster::local_control_plane().await;
    let cp = &cluster.agents[1];
    let (_, first) = put_raw(&cp.url("/v1/kv/other/zero"), "0").await;
    let start = first["index"].as_u64().unwrap();

    // A watch parked before the writes wakes on the first change under its prefix.
    let watch_url = cp.url(&format!(
        "/v1/kv?prefix=app/&watch=true&after={start}&wait=30s"
    ));
    let parked = tokio::spawn(async move { get_json(&watch_url).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !parked.is_finished(),
        "the watch answered before any change"
    );
    put_raw(&cp.url("/v1/kv/app/a"), "1").await;
    let woke = parked.await.unwrap();
    assert_eq!(woke["events"][0]["key"], "app/a", "{woke}");
    put_raw(&cp.url("/v1/kv/other/x"), "2").await;
    put_raw(&cp.url("/v1/kv/app/b"), "3").await;
    let (status, _) = send(reqwest::Method::DELETE, &cp.url("/v1/kv/app/a"), None).await;
    assert_eq!(status, 200);
    // A watch answers what this member applied: collect pages until the delete is in (a
    // follower applies the acknowledged delete a moment after the leader).
    let mut events: Vec<Value> = Vec::new();
    let mut next = start;
    while events.len() < 3 {
        let page = get_json(&cp.url(&format!(
            "/v1/kv?prefix=app/&watch=true&after={next}&wait=5s"
        )))
        .await
        .unwrap();
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        next = page["next_after"].as_u64().unwrap();
    }
    let page = json!({"events": events, "next_after": next});
    let seen: Vec<(String, String, String)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = base64::engine::general_purpose::STANDARD
                .decode(e["value_base64"].as_str().unwrap())
                .unwrap();
            (
                e["kind"].as_str().unwrap().into(),
                e["key"].as_str().unwrap().into(),
                String::from_utf8(value).unwrap(),
            )
        })
        .collect();
    let want = [
        ("put", "app/a", "1"),
        ("put", "app/b", "3"),
        ("delete", "app/a", ""),
    ]
    .map(|(k, key, v)| (k.to_string(), key.to_string(), v.to_string()));
    assert_eq!(seen, want, "exactly the changes under app/, in index order");
    let indexes: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["modify_index"].as_u64().unwrap())
        .collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
    // Nothing new after the last: an empty page at the deadline, with where to continue.
    let next = page["next_after"].as_u64().unwrap();
    let empty = get_json(&cp.url(&format!(
        "/v1/kv?prefix=app/&watch=true&after={next}&wait=300ms"
    )))
    .await
    .unwrap();
    assert_eq!(empty["events"], json!([]));

    // The streaming watch answers the same changes as lines, and goes on with new ones.
    let mut stream = client()
        .get(cp.url(&format!(
            "/v1/kv?prefix=app/&watch=true&stream=true&after={start}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "application/x-ndjson");
    let mut streamed: Vec<Value> = Vec::new();
    let mut buf = Vec::new();
    let mut wrote = false;
    while streamed.len() < 4 {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let page: Value = serde_json::from_slice(&line).unwrap();
            streamed.extend(page["events"].as_array().unwrap().iter().cloned());
        }
        if streamed.len() >= 3 && !wrote {
            put_raw(&cp.url("/v1/kv/app/streamed"), "4").await;
            wrote = true;
        }
    }
    let keys: Vec<&str> = streamed
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/a", "app/b", "app/a", "app/streamed"]);
    drop(stream);

    // The CLI's watch prints the same changes.
    let watcher = Command::new(BIN)
        .args([
            "--http-addr",
            &cp.http_addr(),
            "kv",
            "watch",
            "app/",
            "--after",
            &start.to_string(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(watcher);
    wait_for("kv watch printing the three changes", || async {
        (lines.now().len() >= 3).then_some(())
    })
    .await;
    let printed: Vec<Value> = lines
        .now()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed[2]["kind"], "delete");

    // A transaction: compares hold → every success op, in one index.
    let txn = json!({
        "compare": [{"key": "app/b", "value_base64": b64("3")}, {"key": "app/c", "exists": false}],
        "success": [{"put": {"key": "app/c", "value_base64": b64("c")}}, {"delete": {"key": "app/b"}}, {"get": {"key": "app/c"}}],
        "failure": [{"get": {"key": "app/b"}}],
    });
    let (status, answer) = send(reqwest::Method::POST, &cp.url("/v1/txn"), Some(txn.clone())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["succeeded"], true);
    assert_eq!(answer["results"][1]["delete"]["deleted"], true);
    assert_eq!(answer["results"][2]["get"]["value_base64"], b64("c"));
    // Again: the compares fail, only the failure branch runs (a get), nothing changes.
    let (_, again) = send(reqwest::Method::POST, &cp.url("/v1/txn"), Some(txn)).await;
    assert_eq!(
        (&again["succeeded"], &again["results"][0]["get"]),
        (&json!(false), &Value::Null)
    );
    // Malformed or on an unknown lease: refused whole, nothing applied.
    let bad = [
        (
            json!({"success": [{"put": {"key": "app/d", "value_base64": b64("1")}}, {"put": {"key": "app/d"}}]}),
            400,
        ),
        (
            json!({"success": [{"put": {"key": "app/d"}}, {"put": {"key": "app/e", "lease": 999999}}]}),
            404,
        ),
        (json!({"compare": [{"key": "app/d"}], "success": []}), 400),
        (
            json!({"success": [{"put": {"key": "app/d"}, "get": {"key": "app/d"}}]}),
            400,
        ),
        (json!({"success": [{"frobnicate": {"key": "app/d"}}]}), 400),
    ];
    for (body, want) in bad {
        let (status, error) = send(
            reqwest::Method::POST,
            &cp.url("/v1/txn"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, want, "{body}: {error}");
    }
    let (status, _) = send(reqwest::Method::GET, &cp.url("/v1/kv/app/d"), None).await;
    assert_eq!(status, 404, "a refused transaction applied nothing");

    // Bad watches and leases: 4xx naming the field.
    let (status, error) = send(
        reqwest::Method::GET,
        &cp.url("/v1/kv?prefix=app/&watch=true&epoch=99"),
        None,
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (410, Some("gone"))
    );
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("epoch:"));
    for ttl in ["500ms", "2d", "soon", "25h"] {
        let (status, error) = send(
            reqwest::Method::POST,
            &cp.url("/v1/leases"),
            Some(json!({"ttl": ttl})),
        )
        .await;
        assert_eq!(status, 400, "{ttl}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("ttl:"),
            "{error}"
        );
    }
    let (status, error) = send(
        reqwest::Method::PUT,
        &cp.url("/v1/leases/424242/keepalive"),
        None,
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("unknown_lease"))
    );
    let (status, _) = put_raw(&cp.url("/v1/kv/app/z?lease=424242"), "z").await;
    assert_eq!(status, 404);

    // Locks over HTTP: held, busy for a second caller, released, then the next fence is higher.
    let lock = cp.url("/v1/locks/http-job");
    let (status, held) = send(reqwest::Method::POST, &lock, Some(json!({"ttl": "5s"}))).await;
    assert_eq!(status, 200, "{held}");
    let (status, busy) = send(
        reqwest::Method::POST,
        &lock,
        Some(json!({"ttl": "5s", "wait": "1s"})),
    )
    .await;
    assert_eq!(
        (status, busy["error"]["code"].as_str()),
        (409, Some("lock_busy")),
        "{busy}"
    );
    let release = format!("{lock}?lease={}", held["lease"]);
    assert_eq!(send(reqwest::Method::DELETE, &release, None).await.0, 200);
    let (status, next) = send(reqwest::Method::POST, &lock, Some(json!({}))).await;
    assert_eq!(status, 200, "{next}");
    assert!(
        next["fence"].as_u64() > held["fence"].as_u64(),
        "{held} then {next}"
    );
    let (status, _) = send(
        reqwest::Method::POST,
        &cp.url("/v1/locks/a%2Fb"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400);
}

/// A child process and the lines it prints, collected as they come; killed by PID when
/// dropped.
struct Lines {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn of(mut child: Child) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn now(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn any(&self, prefix: &str) -> bool {
        self.now().iter().any(|l| l.starts_with(prefix))
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leased_key_lives_while_kept_alive_across_a_leader_kill_and_goes_after_its_ttl() {
    let mut cluster = Cluster::local_control_plane().await;
    let leader = cluster.wait_healthy().await;
    let follower = (leader + 1) % 3;
    let urls: Vec<String> = cluster.agents.iter().map(|a| a.url("")).collect();
    let at = |i: usize, path: &str| format!("{}{path}", urls[i]);
    let (status, lease) = send(
        reqwest::Method::POST,
        &at(follower, "/v1/leases"),
        Some(json!({"ttl": "3s"})),
    )
    .await;
    assert_eq!(status, 200, "{lease}");
    let id = lease["id"].as_u64().unwrap();
    let (status, written) =
        put_raw(&at(follower, &format!("/v1/kv/job/owner?lease={id}")), "me").await;
    assert_eq!(status, 200, "{written}");
    let put_index = written["index"].as_u64().unwrap();

    // Keep-alives every second through whichever member answers, for 9 s, with the leader
    // killed (-9) after 2 s: the key must be there the whole time.
    let alive = Arc::new(Mutex::new(vec![0usize, 1, 2]));
    let keeper = {
        let (alive, urls) = (alive.clone(), urls.clone());
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(9);
            let mut last_answered = None;
            while Instant::now() < until {
                let members = alive.lock().unwrap().clone();
                for i in members {
                    let url = format!("{}/v1/leases/{id}/keepalive", urls[i]);
                    let sent = Instant::now();
                    let answer = client()
                        .put(&url)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    if answer.is_ok_and(|a| a.status() == 200) {
                        last_answered = Some(sent);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            last_answered.expect("a keep-alive was answered")
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.agents[leader].kill9();
    alive.lock().unwrap().retain(|i| *i != leader);
    while !keeper.is_finished() {
        let (status, _) = send(
            reqwest::Method::GET,
            &at(follower, "/v1/kv/job/owner?stale=true"),
            None,
        )
        .await;
        assert_ne!(status, 404, "the key went while its lease was kept alive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No more keep-alives: gone after the TTL, in one delete the watch sees. The leader restarts
    // the TTL when the keep-alive reaches it, which is after it was sent: the key cannot be seen
    // gone sooner than a TTL after the send of the last answered keep-alive.
    let last_sent = keeper.await.unwrap();
    wait_for("the key gone once its lease expired", || async {
        let (status, _) = send(
            reqwest::Method::GET,
            &at(follower, "/v1/kv/job/owner"),
            None,
        )
        .await;
        (status == 404).then_some(())
    })
    .await;
    assert!(
        last_sent.elapsed() >= Duration::from_secs(3),
        "expired early: {:?} after the last answered keep-alive was sent",
        last_sent.elapsed()
    );
    let page = get_json(&at(
        follower,
        &format!("/v1/kv?prefix=job/&watch=true&after={put_index}&wait=1s"),
    ))
    .await
    .unwrap();
    assert_eq!(page["events"][0]["kind"], "delete", "{page}");
    let (status, _) = send(
        reqwest::Method::PUT,
        &at(follower, &format!("/v1/leases/{id}/keepalive")),
        None,
    )
    .await;
    assert_eq!(status, 404, "an expired lease is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_run_one_at_a_time_with_growing_fences_and_elections_hand_over() {
    let cluster = Cluster::local_control_plane().await;
    let log = cluster.dir.path().join("lock.log");
    let script = format!(
        "echo start $HIVEMIND_LOCK_FENCE $(date +%s%N) >> {0}; sleep 0.5; echo end $HIVEMIND_LOCK_FENCE $(date +%s%N) >> {0}",
        log.display()
    );
    let mut holders: Vec<Child> = (0..3)
        .map(|i| {
            Command::new(BIN)
                .args([
                    "--http-addr",
                    &cluster.agents[i].http_addr(),
                    "lock",
                    "job",
                    "--ttl",
                    "5s",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for holder in &mut holders {
        let status = holder.wait().unwrap();
        assert!(status.success(), "hivemind lock exited with {status}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<(String, u64, u128)> = text
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (
                parts[0].to_string(),
                parts[1].parse().unwrap(),
                parts[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines.len(), 6, "{text}");
    // start/end pairs never interleave, and each holder's fence is above the one before.
    for pair in lines.chunks(2) {
        assert_eq!(
            (pair[0].0.as_str(), pair[1].0.as_str()),
            ("start", "end"),
            "{text}"
        );
        assert_eq!(pair[0].1, pair[1].1, "{text}");
    }
    let fences: Vec<u64> = lines.iter().step_by(2).map(|l| l.1).collect();
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "fences {fences:?}");

    // A lost lease stops the command: the lease revoked under a running `lock` → SIGTERM.
    let started = Instant::now();
    let mut holder = Command::new(BIN)
        .args([
            "--http-addr",
            &cluster.agents[0].http_addr(),
            "lock",
            "lost",
            "--ttl",
            "3s",
            "--",
            "sleep",
            "60",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let leases_url = cluster.agents[0].url("/v1/leases");
    let id = wait_for("the lock's lease and key", || async {
        let leases = get_json(&leases_url).await.ok()?;
        leases.as_array()?.iter().find_map(|l| {
            let keys = l["keys"].as_array()?;
            keys.iter()
                .any(|k| k.as_str().is_some_and(|k| k.starts_with("_locks/lost/")))
                .then(|| l["id"].as_u64())?
        })
    })
    .await;
    let (status, _) = send(
        reqwest::Method::DELETE,
        &cluster.agents[1].url(&format!("/v1/leases/{id}")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let status = holder.wait().unwrap();
    assert!(
        !status.success(),
        "the lock holder went on after losing its lease"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the command was stopped, not run to its end"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(holder.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("lost the lock"), "{stderr}");

    // Elections: a leads, b waits; kill -9 of a's process hands over to b once a's lease
    // expires; an observer sees both.
    let cp = cluster.agents[0].http_addr();
    let elect = |value: &str| {
        Command::new(BIN)
            .args([
                "--http-addr",
                &cp,
                "elect",
                "primary",
                "--value",
                value,
                "--ttl",
                "2s",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut a = Lines::of(elect("a"));
    wait_for("a leads", || async {
        a.any("leader a (fence ").then_some(())
    })
    .await;
    let b = Lines::of(elect("b"));
    let observer = Lines::of(
        Command::new(BIN)
            .args(["--http-addr", &cp, "elect", "primary", "--observe"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for("the observer sees a", || async {
        observer.any("leader a").then_some(())
    })
    .await;
    // kill -9 of a's process: its lease is not revoked, it expires.
    let _ = a.child.kill();
    let _ = a.child.wait();
    wait_for("b leads after a's process died", || async {
        (b.any("leader b (fence ") && observer.any("leader b")).then_some(())
    })
    .await;
    let fence = |lines: &[String], who: &str| -> u64 {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("leader {who} (fence ")))
            .unwrap();
        line.trim_end_matches(')')
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let observed = observer.now();
    assert!(
        fence(&observed, "a") < fence(&observed, "b"),
        "{observed:?}"
    );
}
