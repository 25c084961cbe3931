//! Client commands: talk to a member's HTTP API the way a user would, print tables or JSON.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hivemind_control_plane::http::views::MemberView;
use hivemind_control_plane::{CpStatus, Health};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// `println!` that reports a closed stdout as an error instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)
    };
}

use crate::cli::{
    ClientArgs, CpCommand, EpochCommand, EventsArgs, KeygroupCommand, KvCommand, SnapshotCommand,
    VotersCommand,
};

/// A member's HTTP API.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    pub json: bool,
}

/// An error answer of the API, printed as `error: CODE: message`.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (HTTP {})",
            self.code,
            self.message,
            self.status.as_u16()
        )
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    pub fn new(args: &ClientArgs) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(330))
                .build()
                .expect("static client settings"),
            base: format!("http://{}", args.http_addr),
            token: args.token.clone(),
            json: args.json,
        }
    }

    /// Sends a request; non-2xx answers become [`ApiFailure`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach hivemind at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v["error"][name].as_str())
                .map(str::to_string)
        };
        Err(ApiFailure {
            status,
            code: field("code").unwrap_or_else(|| "http_error".into()),
            message: field("message").unwrap_or(text),
        }
        .into())
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        Ok(self.send(Method::GET, path, None).await?.json().await?)
    }

    fn print(&self, value: &Value) -> std::io::Result<()> {
        outln!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON values print")
        )
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The items of a JSON array as text (none if `v` is not an array).
fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(s).collect()
}

/// A control plane's status read as the server's own view type (`GET /v1/cp/status`, and
/// `control_plane` in `/v1/status`, null when no control-plane member answered).
fn cp_status(value: &Value) -> Result<Option<CpStatus>> {
    if value.is_null() {
        return Ok(None);
    }
    serde_json::from_value(value.clone())
        .map(Some)
        .context("the control plane's status is not in the form this client knows")
}

fn print_cp(cp: Option<&CpStatus>) -> std::io::Result<()> {
    let Some(cp) = cp else {
        return outln!("control plane: unknown (no control-plane member answered)");
    };
    let leader = cp
        .leader
        .as_ref()
        .map_or_else(|| "none".into(), |l| format!("{} ({})", l.name, l.id));
    let health = match cp.health {
        Health::Healthy => "healthy",
        Health::Degraded => "degraded",
    };
    outln!(
        "control plane: {health}   leader: {leader}   term: {}   commit: {}   applied: {}",
        cp.term,
        cp.commit_index,
        cp.applied_index
    )?;
    outln!("{:<18} {:<16} {:<22} {}", "ID", "NAME", "ADDR", "ROLE")?;
    let leader_id = cp.leader.as_ref().map_or("", |l| l.id.as_str());
    for (kind, list) in [("voter", &cp.voters), ("learner", &cp.learners)] {
        for v in list {
            let role = if v.id == leader_id {
                "voter (leader)"
            } else {
                kind
            };
            outln!("{:<18} {:<16} {:<22} {}", v.id, v.name, v.addr, role)?;
        }
    }
    Ok(())
}

/// `hivemind status` found the cluster unhealthy; the reasons are printed already. Exit 3.
#[derive(Debug)]
pub struct Unhealthy;

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the cluster is not healthy")
    }
}

impl std::error::Error for Unhealthy {}

/// The one-screen verdict of `hivemind status`: what makes the cluster unhealthy (`problems`)
/// and what an operator should know (`notes`), from `/v1/status` and `/v1/members` (`None`
/// when the member list could not be read).
pub fn verdict(status: &Value, members: Option<&Value>) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let cp = &status["control_plane"];
    if cp["health"] != "healthy" {
        let voters = cp["voters"].as_array().map_or(0, Vec::len);
        problems.push(format!(
            "control plane {}: no leader has heard from a quorum of the {voters} voters recently; writes and linearizable reads answer 503 no_quorum until a majority is back",
            s(&cp["health"])
        ));
    }
    if status["ready"] != true {
        let waiting = strings(&status["waiting_for"]);
        problems.push(format!(
            "member {} is not ready: waiting for {}",
            s(&status["name"]),
            waiting.join(", ")
        ));
    }
    match members.and_then(Value::as_array) {
        None => notes.push("the member list could not be read".into()),
        Some(list) => {
            let named = |state: &str| -> Vec<String> {
                list.iter()
                    .filter(|m| m["state"] == state)
                    .map(|m| s(&m["name"]))
                    .collect()
            };
            let (alive, failed, left) = (named("alive"), named("failed"), named("left"));
            notes.push(format!(
                "members: {} alive, {} failed, {} left",
                alive.len(),
                failed.len(),
                left.len()
            ));
            if !failed.is_empty() {
                notes.push(format!(
                    "failed (declared down by SWIM; they rejoin when they come back): {}",
                    failed.join(", ")
                ));
            }
        }
    }
    (problems, notes)
}

pub async fn status(client: &Client) -> Result<()> {
    let status = client.get_json("/v1/status").await?;
    // Without a control plane the list may be unreadable; the verdict says so.
    let members = client.get_json("/v1/members").await.ok();
    let (problems, notes) = verdict(&status, members.as_ref());
    if client.json {
        let mut status = status;
        status["cluster"] = serde_json::json!({
            "healthy": problems.is_empty(),
            "problems": problems,
            "notes": notes,
        });
        client.print(&status)?;
        return if problems.is_empty() {
            Ok(())
        } else {
            Err(Unhealthy.into())
        };
    }
    if problems.is_empty() {
        outln!("cluster: healthy")?;
    } else {
        outln!("cluster: NOT HEALTHY")?;
        for p in &problems {
            outln!("  - {p}")?;
        }
    }
    for n in &notes {
        outln!("  {n}")?;
    }
    outln!()?;
    outln!(
        "member {} ({})   node {}   generation {}   epoch {}",
        s(&status["name"]),
        s(&status["id"]),
        s(&status["node"]),
        s(&status["generation"]),
        s(&status["epoch"])
    )?;
    let waiting = strings(&status["waiting_for"]);
    if status["ready"].as_bool() == Some(true) {
        outln!("ready: yes")?;
    } else {
        outln!("ready: no (waiting for: {})", waiting.join(", "))?;
    }
    print_cp(cp_status(&status["control_plane"])?.as_ref())?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Unhealthy.into())
    }
}

pub async fn members(client: &Client) -> Result<()> {
    let members = client.get_json("/v1/members").await?;
    if client.json {
        return Ok(client.print(&members)?);
    }
    outln!(
        "{:<18} {:<16} {:<12} {:<8} {:>4}  {:<22} {}",
        "ID",
        "NAME",
        "NODE",
        "STATE",
        "GEN",
        "GOSSIP",
        "ROLES"
    )?;
    let members: Vec<MemberView> = serde_json::from_value(members)
        .context("the member list is not in the form this client knows")?;
    for m in members {
        let mut roles = m.roles.clone();
        if m.control_plane {
            roles.insert(0, "control-plane".into());
        }
        outln!(
            "{:<18} {:<16} {:<12} {:<8} {:>4}  {:<22} {}",
            m.id,
            m.name,
            m.node,
            m.state,
            m.generation,
            m.addr,
            roles.join(",")
        )?;
    }
    Ok(())
}

pub async fn leave(client: &Client) -> Result<()> {
    client.send(Method::POST, "/v1/leave", None).await?;
    if client.json {
        client.print(&serde_json::json!({ "leaving": true }))?;
    } else {
        outln!("leaving: the member commits its Leave, leaves the gossip and stops")?;
    }
    Ok(())
}

pub async fn cp(client: &Client, command: CpCommand) -> Result<()> {
    let value = match command {
        CpCommand::Status => client.get_json("/v1/cp/status").await?,
        CpCommand::Voters { command } => match command {
            VotersCommand::Add { addr, learner } => {
                let body = serde_json::json!({ "addr": addr, "voter": !learner });
                client
                    .send(
                        Method::POST,
                        "/v1/cp/voters",
                        Some(body.to_string().into_bytes()),
                    )
                    .await?
                    .json()
                    .await?
            }
            VotersCommand::Remove { id } => {
                if id.parse::<hivemind_common::MemberId>().is_err() {
                    bail!("ID: {id:?} is not a member id (16 hex digits)");
                }
                client
                    .send(Method::DELETE, &format!("/v1/cp/voters?id={id}"), None)
                    .await?
                    .json()
                    .await?
            }
        },
        CpCommand::Epoch {
            command: EpochCommand::Bump { reason },
        } => {
            let body = serde_json::json!({ "reason": reason });
            let answer: Value = client
                .send(
                    Method::POST,
                    "/v1/cp/epoch",
                    Some(body.to_string().into_bytes()),
                )
                .await?
                .json()
                .await?;
            if !client.json {
                outln!(
                    "epoch {} started at index {}",
                    s(&answer["epoch"]),
                    s(&answer["index"])
                )?;
                return Ok(());
            }
            answer
        }
    };
    if client.json {
        client.print(&value)?;
    } else {
        print_cp(cp_status(&value)?.as_ref())?;
    }
    Ok(())
}

/// Keys go into the URL path: escape what would change its meaning.
fn key_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub async fn kv(client: &Client, command: KvCommand) -> Result<()> {
    match command {
        KvCommand::Get { key, prefix, stale } => {
            let stale = if stale { "stale=true" } else { "" };
            match (key, prefix) {
                (Some(_), Some(_)) => bail!("KEY and --prefix: give one, not both"),
                (None, None) => bail!("KEY: give a key, or --prefix to list keys"),
                (Some(key), None) => {
                    let meta = if client.json { "meta=true&" } else { "" };
                    let response = client
                        .send(
                            Method::GET,
                            &format!("/v1/kv/{}?{meta}{stale}", key_path(&key)),
                            None,
                        )
                        .await?;
                    let bytes = response.bytes().await?;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes)?;
                    out.write_all(b"\n")?;
                }
                (None, Some(prefix)) => {
                    let list = client
                        .get_json(&format!("/v1/kv?prefix={}&{stale}", key_path(&prefix)))
                        .await?;
                    if client.json {
                        client.print(&list)?;
                    } else {
                        for entry in list.as_array().into_iter().flatten() {
                            outln!("{}", s(&entry["key"]))?;
                        }
                    }
                }
            }
        }
        KvCommand::Put { key, value, cas } => {
            let body = if value == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf)?;
                buf
            } else {
                value.into_bytes()
            };
            let cas = cas.map(|c| format!("?cas={c}")).unwrap_or_default();
            let answer: Value = client
                .send(
                    Method::PUT,
                    &format!("/v1/kv/{}{cas}", key_path(&key)),
                    Some(body),
                )
                .await?
                .json()
                .await?;
            if client.json {
                client.print(&answer)?;
            } else {
                outln!("OK (index {})", s(&answer["index"]))?;
            }
        }
        KvCommand::Delete { key, cas } => {
            let cas = cas.map(|c| format!("?cas={c}")).unwrap_or_default();
            let answer: Value = client
                .send(
                    Method::DELETE,
                    &format!("/v1/kv/{}{cas}", key_path(&key)),
                    None,
                )
                .await?
                .json()
                .await?;
            if client.json {
                client.print(&answer)?;
            } else if answer["deleted"] == true {
                outln!("deleted (index {})", s(&answer["index"]))?;
            } else {
                outln!("no such key")?;
            }
        }
    }
    Ok(())
}

pub async fn events(client: &Client, args: EventsArgs) -> Result<()> {
    let mut after = args.after;
    loop {
        let wait = if args.follow { "&wait=30s" } else { "" };
        let page = match client
            .get_json(&format!("/v1/events?after={after}{wait}"))
            .await
        {
            Ok(page) => page,
            Err(e) => match e.downcast_ref::<ApiFailure>() {
                Some(f) if f.code == "gone" && args.follow => {
                    let status = client.get_json("/v1/cp/snapshot?stale=true").await?;
                    after = status["epoch_start_index"].as_u64().unwrap_or(0);
                    eprintln!("epoch changed; continuing from index {after}");
                    continue;
                }
                _ => return Err(e),
            },
        };
        for event in page["events"].as_array().into_iter().flatten() {
            if client.json {
                outln!("{event}")?;
            } else {
                let mut details = event.as_object().cloned().unwrap_or_default();
                let (index, epoch, kind) = (
                    details.remove("index"),
                    details.remove("epoch"),
                    details.remove("kind"),
                );
                outln!(
                    "{:>8}  epoch {:<3} {:<24} {}",
                    s(index.as_ref().unwrap_or(&Value::Null)),
                    s(epoch.as_ref().unwrap_or(&Value::Null)),
                    s(kind.as_ref().unwrap_or(&Value::Null)),
                    Value::Object(details)
                )?;
            }
        }
        after = page["next_after"]
            .as_u64()
            .ok_or_else(|| anyhow!("feed answer without next_after"))?;
        if !args.follow {
            return Ok(());
        }
    }
}

pub async fn snapshot(client: &Client, command: SnapshotCommand) -> Result<()> {
    let SnapshotCommand::Save { file } = command;
    let snapshot = client.get_json("/v1/cp/snapshot").await?;
    let text = serde_json::to_string_pretty(&snapshot)?;
    std::fs::write(&file, text)
        .with_context(|| format!("FILE: cannot write {}", file.display()))?;
    if client.json {
        client.print(&serde_json::json!({ "file": file, "index": snapshot["index"] }))?;
    } else {
        outln!(
            "saved the registry at index {} to {}",
            s(&snapshot["index"]),
            file.display()
        )?;
    }
    Ok(())
}

/// `APP/TENANT/GROUP` checked before it is put in a URL path.
fn keygroup_path(name: &str) -> Result<String> {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() != 3
        || !parts
            .iter()
            .all(|p| hivemind_common::names::is_valid_name(p))
    {
        bail!("NAME: {name:?} is not app/tenant/group");
    }
    Ok(format!("/v1/keygroups/{name}"))
}

fn print_keygroups(list: &[Value]) -> Result<()> {
    outln!(
        "{:<32} {:>4}  {:<5} {:>5}  {:<24} {:<16} {}",
        "NAME",
        "VER",
        "OPEN",
        "TTL",
        "REPLICAS",
        "TRIGGERS",
        "STATE"
    )?;
    let join = |v: &Value| strings(v).join(",");
    for k in list {
        outln!(
            "{:<32} {:>4}  {:<5} {:>5}  {:<24} {:<16} {}",
            s(&k["name"]),
            s(&k["version"]),
            s(&k["open"]),
            s(&k["ttl"]),
            join(&k["replicas"]),
            join(&k["triggers"]),
            if k["tombstoned"] == true {
                "tombstoned"
            } else {
                "live"
            }
        )?;
    }
    Ok(())
}

pub async fn keygroup(client: &Client, command: KeygroupCommand) -> Result<()> {
    let answer = match command {
        KeygroupCommand::Create { name, ttl, open } => {
            let mut body = serde_json::Map::new();
            if let Some(ttl) = ttl {
                body.insert("ttl".into(), ttl.into());
            }
            if open {
                body.insert("open".into(), true.into());
            }
            let body = serde_json::to_vec(&body)?;
            client
                .send(Method::PUT, &keygroup_path(&name)?, Some(body))
                .await?
                .json::<Value>()
                .await?
        }
        KeygroupCommand::Get { name } => client.get_json(&keygroup_path(&name)?).await?,
        KeygroupCommand::List => {
            let list = client.get_json("/v1/keygroups").await?;
            if client.json {
                return Ok(client.print(&list)?);
            }
            return print_keygroups(list.as_array().map_or(&[][..], Vec::as_slice));
        }
        KeygroupCommand::Update {
            name,
            add_replicas,
            remove_replicas,
            add_triggers,
            remove_triggers,
            ttl,
            open,
            rotate_secret,
        } => {
            let body = serde_json::json!({
                "add_replicas": add_replicas,
                "remove_replicas": remove_replicas,
                "add_triggers": add_triggers,
                "remove_triggers": remove_triggers,
                "ttl": ttl,
                "open": open,
                "rotate_secret": rotate_secret,
            });
            client
                .send(
                    Method::PATCH,
                    &keygroup_path(&name)?,
                    Some(serde_json::to_vec(&body)?),
                )
                .await?
                .json::<Value>()
                .await?
        }
        KeygroupCommand::Delete { name } => {
            client
                .send(Method::DELETE, &keygroup_path(&name)?, None)
                .await?
                .json::<Value>()
                .await?
        }
    };
    if client.json {
        Ok(client.print(&answer)?)
    } else {
        print_keygroups(std::slice::from_ref(&answer))
    }
}

pub async fn responsibilities(client: &Client) -> Result<()> {
    let list = client.get_json("/v1/responsibilities").await?;
    if client.json {
        return Ok(client.print(&list)?);
    }
    outln!(
        "{:<16} {:<32} {:<18} {:<16} {:>8}",
        "NODE",
        "KEYGROUP",
        "MACHINE",
        "NAME",
        "FENCE"
    )?;
    for r in list.as_array().into_iter().flatten() {
        outln!(
            "{:<16} {:<32} {:<18} {:<16} {:>8}",
            s(&r["node"]),
            s(&r["keygroup"]),
            s(&r["machine"]),
            s(&r["machine_name"]),
            s(&r["fence"])
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::verdict;
    use serde_json::json;

    #[test]
    fn a_healthy_cluster_has_no_problems_and_failed_members_are_noted() {
        let status = json!({"name": "cp1", "ready": true, "waiting_for": [],
            "control_plane": {"health": "healthy", "voters": [{}, {}, {}]}});
        let members =
            json!([{"name": "cp1", "state": "alive"}, {"name": "web-2", "state": "failed"}]);
        let (problems, notes) = verdict(&status, Some(&members));
        assert!(problems.is_empty());
        assert_eq!(notes[0], "members: 1 alive, 1 failed, 0 left");
        assert!(notes[1].ends_with("web-2"));
    }

    #[test]
    fn no_quorum_and_waiting_roles_are_problems_with_their_reasons() {
        let status = json!({"name": "web-1", "ready": false, "waiting_for": ["role:dns"],
            "control_plane": {"health": "degraded", "voters": [{}, {}, {}]}});
        let (problems, notes) = verdict(&status, None);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("degraded") && problems[0].contains("no_quorum"));
        assert!(problems[1].contains("waiting for role:dns"));
        assert_eq!(notes, ["the member list could not be read"]);
    }
}
