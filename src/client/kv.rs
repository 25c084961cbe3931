//! `hivemind kv`, `events` and `snapshot`: the KV namespace, the event feed and the registry.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use hivemind_control_plane::http::views::{EventsPage, KvDeleted, KvWritten};
use hivemind_control_plane::http::views::{KvView, RegistryView};
use reqwest::Method;
use serde_json::Value;

use super::{key_path, outln, ApiFailure, Client};
use crate::cli::{EventsArgs, KvCommand, SnapshotCommand};

pub async fn kv(client: &Client, command: KvCommand) -> Result<()> {
    match command {
        KvCommand::Get { key, prefix, stale } => {
            let stale = if stale { "stale=true" } else { "" };
            match (key, prefix) {
                (Some(_), Some(_)) => bail!("KEY and --prefix: give one, not both"),
                (None, None) => bail!("KEY: give a key, or --prefix to list keys"),
                (Some(key), None) => {
                    // The value itself (or, with --json, its metadata view) as the server
                    // sent it: a value is bytes, not JSON.
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
                    let path = format!("/v1/kv?prefix={}&{stale}", key_path(&prefix));
                    let list: Vec<KvView> = client.get(&path).await?;
                    if client.json {
                        client.print(&list)?;
                    } else {
                        for entry in list {
                            outln!("{}", entry.key)?;
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
            let path = format!("/v1/kv/{}{cas}", key_path(&key));
            let written: KvWritten = client.call(Method::PUT, &path, Some(body)).await?;
            if client.json {
                client.print(&written)?;
            } else {
                outln!("OK (index {})", written.index)?;
            }
        }
        KvCommand::Watch(args) => return super::coordination::kv_watch(client, args).await,
        KvCommand::Delete { key, cas } => {
            let cas = cas.map(|c| format!("?cas={c}")).unwrap_or_default();
            let path = format!("/v1/kv/{}{cas}", key_path(&key));
            let deleted: KvDeleted = client.call(Method::DELETE, &path, None).await?;
            if client.json {
                client.print(&deleted)?;
            } else if deleted.deleted {
                outln!("deleted (index {})", deleted.index)?;
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
        let page: EventsPage = match client.get(&format!("/v1/events?after={after}{wait}")).await {
            Ok(page) => page,
            Err(e) => match e.downcast_ref::<ApiFailure>() {
                Some(f) if f.code == "gone" && args.follow => {
                    let registry: RegistryView = client.get("/v1/cp/snapshot?stale=true").await?;
                    after = registry.feed_start_index;
                    eprintln!(
                        "the feed no longer holds what followed (a new epoch, or trimmed); \
                         continuing from index {after}"
                    );
                    continue;
                }
                _ => return Err(e),
            },
        };
        for event in page.events {
            // An event is `{index, epoch, kind, ...the kind's own fields}` (EventView).
            if client.json {
                outln!("{}", event.0)?;
            } else {
                let mut details = event.0.as_object().cloned().unwrap_or_default();
                let mut take = |field: &str| match details.remove(field) {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => "-".into(),
                };
                let (index, epoch, kind) = (take("index"), take("epoch"), take("kind"));
                outln!(
                    "{index:>8}  epoch {epoch:<3} {kind:<24} {}",
                    Value::Object(details)
                )?;
            }
        }
        after = page.next_after;
        if !args.follow {
            return Ok(());
        }
    }
}

pub async fn snapshot(client: &Client, command: SnapshotCommand) -> Result<()> {
    let SnapshotCommand::Save { file } = command;
    let registry: RegistryView = client.get("/v1/cp/snapshot").await?;
    let text = serde_json::to_string_pretty(&registry)?;
    std::fs::write(&file, text)
        .with_context(|| format!("FILE: cannot write {}", file.display()))?;
    if client.json {
        client.print(&serde_json::json!({ "file": file, "index": registry.index }))?;
    } else {
        outln!(
            "saved the registry at index {} to {}",
            registry.index,
            file.display()
        )?;
    }
    Ok(())
}
