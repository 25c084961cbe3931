//! `hivemind kv watch`, `lock` and `elect` (DESIGN.md §6h), built on leases, transactions and
//! watches as etcd's recipes are: a waiter's key is `PREFIX/<lease id in hex>` on its lease,
//! created only if absent; the key with the lowest create index holds the lock (leads); every
//! other waiter watches only its predecessor's key until it is deleted (no thundering herd).
//! The holder's create index is its fencing token: it only grows.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use base64::Engine;
use hivemind_control_plane::http::views::KvView;
use hivemind_control_plane::http::views::{LeaseView, WatchPage};
use reqwest::Method;
use serde_json::json;
use tokio::sync::watch;

use super::{key_path, outln, ApiFailure, Client};
use crate::cli::{ElectArgs, LockArgs, WatchArgs};

/// What a lock's command exited with: the CLI exits with it.
#[derive(Debug)]
pub struct ChildExited(pub u8);

impl std::fmt::Display for ChildExited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the command exited with {}", self.0)
    }
}

impl std::error::Error for ChildExited {}

fn api_code(e: &anyhow::Error) -> Option<&str> {
    e.downcast_ref::<ApiFailure>().map(|f| f.code.as_str())
}

/// The keys under `prefix` now and the index the list was read at.
async fn list(client: &Client, prefix: &str) -> Result<(Vec<KvView>, u64)> {
    let response = client
        .send(
            Method::GET,
            &format!("/v1/kv?prefix={}", key_path(prefix)),
            None,
        )
        .await?;
    let at = response
        .headers()
        .get("x-hivemind-index")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    Ok((response.json().await?, at))
}

/// One watch round: the changes under `prefix` after `after` (empty when `wait` passed).
async fn watch_once(client: &Client, prefix: &str, after: u64, wait: &str) -> Result<WatchPage> {
    client
        .get(&format!(
            "/v1/kv?prefix={}&watch=true&after={after}&wait={wait}",
            key_path(prefix)
        ))
        .await
}

pub async fn kv_watch(client: &Client, args: WatchArgs) -> Result<()> {
    let mut after = match args.after {
        Some(after) => after,
        None => list(client, &args.prefix).await?.1,
    };
    loop {
        let page = match watch_once(client, &args.prefix, after, "60s").await {
            Ok(page) => page,
            Err(e) if api_code(&e) == Some("compacted") => {
                let (_, at) = list(client, &args.prefix).await?;
                eprintln!("changes before index {at} are compacted; continuing from the keys as they are now");
                after = at;
                continue;
            }
            Err(e) => return Err(e),
        };
        for event in &page.events {
            if client.json {
                outln!("{}", serde_json::to_string(event)?)?;
            } else {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(&event.value_base64)
                    .unwrap_or_default();
                match event.kind.as_str() {
                    "put" => outln!(
                        "{:>8}  put     {} = {}",
                        event.modify_index,
                        event.key,
                        String::from_utf8_lossy(&value)
                    )?,
                    _ => outln!("{:>8}  delete  {}", event.modify_index, event.key)?,
                }
            }
        }
        after = page.next_after;
    }
}

/// A lease kept alive every TTL/3 until dropped; `lost` turns true once a keep-alive says the
/// lease is gone, or none succeeded for a whole TTL since the last one was sent.
struct HeldLease {
    id: u64,
    lost: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

async fn hold_lease(client: &Client, ttl: &str) -> Result<HeldLease> {
    let asked = Instant::now();
    let lease: LeaseView = client
        .call(
            Method::POST,
            "/v1/leases",
            Some(serde_json::to_vec(&json!({"ttl": ttl}))?),
        )
        .await
        .context("--ttl")?;
    let ttl = hivemind_common::duration::parse(&lease.ttl).map_err(anyhow::Error::msg)?;
    let (tx, lost) = watch::channel(false);
    let id = lease.id;
    let client = client.clone();
    let keeper = tokio::spawn(async move {
        // The lease holds until `valid_until` at least: TTL after the last successful keep-alive
        // was sent (or after the grant was asked for).
        let mut valid_until = asked + ttl;
        loop {
            tokio::time::sleep(ttl / 3).await;
            let sent = Instant::now();
            match client
                .call::<LeaseView>(Method::PUT, &format!("/v1/leases/{id}/keepalive"), None)
                .await
            {
                Ok(_) => valid_until = sent + ttl,
                Err(e) if api_code(&e) == Some("unknown_lease") => {
                    let _ = tx.send(true);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "keep-alive failed; retrying");
                    if Instant::now() >= valid_until {
                        let _ = tx.send(true);
                        return;
                    }
                }
            }
        }
    });
    Ok(HeldLease { id, lost, keeper })
}

impl HeldLease {
    /// Revokes the lease (its key goes with it) and stops keeping it.
    async fn release(self, client: &Client) {
        self.keeper.abort();
        let _ = client
            .send(Method::DELETE, &format!("/v1/leases/{}", self.id), None)
            .await;
    }
}

/// Queues under `prefix` with `value` on `lease`: answers this waiter's key and create index.
async fn enqueue(client: &Client, prefix: &str, lease: u64, value: &str) -> Result<(String, u64)> {
    let key = format!("{prefix}{lease:016x}");
    let value = base64::engine::general_purpose::STANDARD.encode(value);
    let txn = json!({
        "compare": [{"key": key, "exists": false}],
        "success": [{"put": {"key": key, "value_base64": value, "lease": lease}}],
        "failure": [{"get": {"key": key}}],
    });
    let answer: serde_json::Value = client
        .call(Method::POST, "/v1/txn", Some(serde_json::to_vec(&txn)?))
        .await?;
    let created = if answer["succeeded"] == true {
        answer["results"][0]["put"]["modify_index"].as_u64()
    } else {
        answer["results"][0]["get"]["create_index"].as_u64()
    };
    Ok((key, created.context("the transaction answered no index")?))
}

/// Waits until `me` (created at `mine`) has the lowest create index under `prefix`, watching
/// only its predecessor; fails if its own key is gone (the lease ended).
async fn wait_turn(client: &Client, prefix: &str, me: &str, mine: u64) -> Result<()> {
    loop {
        let (keys, at) = list(client, prefix).await?;
        if !keys.iter().any(|k| k.key == me) {
            bail!("the lease ended while waiting: {me} is gone");
        }
        let Some(predecessor) = keys
            .iter()
            .filter(|k| k.create_index < mine)
            .max_by_key(|k| k.create_index)
        else {
            return Ok(());
        };
        let mut after = at;
        loop {
            match watch_once(client, &predecessor.key, after, "60s").await {
                Ok(page) => {
                    if page
                        .events
                        .iter()
                        .any(|e| e.key == predecessor.key && e.kind == "delete")
                    {
                        break;
                    }
                    after = page.next_after;
                }
                Err(e) if api_code(&e) == Some("compacted") => break,
                Err(e) => return Err(e),
            }
        }
    }
}

pub async fn lock(client: &Client, args: LockArgs) -> Result<()> {
    let prefix = format!("_locks/{}/", args.name);
    let lease = hold_lease(client, &args.ttl).await?;
    let (key, fence) = enqueue(
        client,
        &prefix,
        lease.id,
        &format!("pid {}", std::process::id()),
    )
    .await?;
    let mut lost = lease.lost.clone();
    tokio::select! {
        turn = wait_turn(client, &prefix, &key, fence) => turn?,
        _ = lost.wait_for(|l| *l) => bail!("lost the lease while waiting for the lock"),
    }
    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("HIVEMIND_LOCK_FENCE", fence.to_string())
        .env("HIVEMIND_LOCK_KEY", &key)
        .spawn()
        .with_context(|| format!("cannot run {:?}", args.command[0]))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = lost.wait_for(|l| *l) => {
            eprintln!("error: lost the lock's lease; stopping the command (SIGTERM)");
            signal_child(&child, "TERM");
            child.wait().await?;
            lease.release(client).await;
            bail!("lost the lock while the command ran");
        }
        _ = terminate.recv() => {
            signal_child(&child, "TERM");
            child.wait().await?
        }
    };
    lease.release(client).await;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ChildExited(code.clamp(1, 255) as u8).into()),
        None => Err(ChildExited(128 + 15).into()),
    }
}

/// Sends `signal` to the child by its PID.
fn signal_child(child: &tokio::process::Child, signal: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
    }
}

/// The leader under `prefix` now: the value and create index of the lowest create index.
async fn leader(client: &Client, prefix: &str) -> Result<(Option<(String, u64)>, u64)> {
    let (keys, at) = list(client, prefix).await?;
    let first = keys.into_iter().min_by_key(|k| k.create_index).map(|k| {
        let value = base64::engine::general_purpose::STANDARD
            .decode(&k.value_base64)
            .unwrap_or_default();
        (String::from_utf8_lossy(&value).into_owned(), k.create_index)
    });
    Ok((first, at))
}

/// Prints `leader V (fence N)` (or `no leader`) on every change, until an error.
async fn observe(client: &Client, prefix: &str) -> Result<()> {
    let mut shown: Option<Option<(String, u64)>> = None;
    loop {
        let (now, at) = leader(client, prefix).await?;
        if shown.as_ref() != Some(&now) {
            match &now {
                Some((value, fence)) => outln!("leader {value} (fence {fence})")?,
                None => outln!("no leader")?,
            }
            shown = Some(now);
        }
        match watch_once(client, prefix, at, "60s").await {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some("compacted") => {}
            Err(e) => return Err(e),
        }
    }
}

pub async fn elect(client: &Client, args: ElectArgs) -> Result<()> {
    let prefix = format!("_elections/{}/", args.name);
    let Some(value) = args.value.filter(|_| !args.observe) else {
        return observe(client, &prefix).await;
    };
    let lease = hold_lease(client, &args.ttl).await?;
    enqueue(client, &prefix, lease.id, &value).await?;
    let mut lost = lease.lost.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let outcome = tokio::select! {
        result = observe(client, &prefix) => result,
        _ = lost.wait_for(|l| *l) => Err(anyhow::anyhow!("lost the campaign's lease")),
        _ = terminate.recv() => Ok(()),
        _ = interrupt.recv() => Ok(()),
    };
    // Resign: the key goes with the lease, and the next in line leads.
    lease.release(client).await;
    outcome
}
