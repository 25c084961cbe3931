//! `hivemind keygroup` and `responsibilities`: keygroups and who holds them in each node.

use std::io::Write;

use anyhow::{bail, Result};
use hivemind_control_plane::http::views::{KeygroupView, ResponsibilityView};
use reqwest::Method;

use super::{cell, outln, Client};
use crate::cli::KeygroupCommand;

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

fn print_keygroups(list: &[KeygroupView]) -> Result<()> {
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
    for k in list {
        outln!(
            "{:<32} {:>4}  {:<5} {:>5}  {:<24} {:<16} {}",
            k.name,
            k.version,
            k.open,
            k.ttl,
            k.replicas.join(","),
            k.triggers.join(","),
            if k.tombstoned { "tombstoned" } else { "live" }
        )?;
    }
    Ok(())
}

pub async fn keygroup(client: &Client, command: KeygroupCommand) -> Result<()> {
    let answer: KeygroupView = match command {
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
                .call(Method::PUT, &keygroup_path(&name)?, Some(body))
                .await?
        }
        KeygroupCommand::Get { name } => client.get(&keygroup_path(&name)?).await?,
        KeygroupCommand::List => {
            let list: Vec<KeygroupView> = client.get("/v1/keygroups").await?;
            if client.json {
                return Ok(client.print(&list)?);
            }
            return print_keygroups(&list);
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
            let changes = hivemind_control_plane::member_requests::KeygroupChanges {
                add_replicas,
                remove_replicas,
                add_triggers,
                remove_triggers,
                ttl,
                open,
                rotate_secret,
            };
            let body = Some(serde_json::to_vec(&changes)?);
            client
                .call(Method::PATCH, &keygroup_path(&name)?, body)
                .await?
        }
        KeygroupCommand::Delete { name } => {
            client
                .call(Method::DELETE, &keygroup_path(&name)?, None)
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
    let list: Vec<ResponsibilityView> = client.get("/v1/responsibilities").await?;
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
    for r in list {
        outln!(
            "{:<16} {:<32} {:<18} {:<16} {:>8}",
            r.node,
            r.keygroup,
            r.machine,
            cell(r.machine_name),
            r.fence
        )?;
    }
    Ok(())
}
