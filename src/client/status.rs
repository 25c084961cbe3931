//! `hivemind status`, `members`, `leave` and `cp`: the cluster's health verdict, the member
//! list, and the control plane's status and voter changes.

use std::io::Write;

use anyhow::{bail, Result};
use hivemind_control_plane::http::views::EpochStarted;
use hivemind_control_plane::http::views::MemberView;
use hivemind_control_plane::{CpStatus, Health};
use hivemind_member::http::member_api::StatusView;
use reqwest::Method;

use super::{cell, outln, Client};
use crate::cli::{CpCommand, EpochCommand, VotersCommand};

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
pub fn verdict(status: &StatusView, members: Option<&[MemberView]>) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let cp = status.control_plane.as_ref();
    if cp.map(|cp| cp.health) != Some(Health::Healthy) {
        let voters = cp.map_or(0, |cp| cp.voters.len());
        let health = match cp {
            Some(_) => "degraded",
            None => "unknown",
        };
        problems.push(format!(
            "control plane {health}: no leader has heard from a quorum of the {voters} voters recently; writes and linearizable reads answer 503 no_quorum until a majority is back",
        ));
    }
    if !status.ready {
        problems.push(format!(
            "member {} is not ready: waiting for {}",
            status.name,
            status.waiting_for.join(", ")
        ));
    }
    match members {
        None => notes.push("the member list could not be read".into()),
        Some(list) => {
            let named = |state: &str| -> Vec<String> {
                list.iter()
                    .filter(|m| m.state == state)
                    .map(|m| m.name.clone())
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
    let status: StatusView = client.get("/v1/status").await?;
    // Without a control plane the list may be unreadable; the verdict says so.
    let members: Option<Vec<MemberView>> = client.get("/v1/members").await.ok();
    let (problems, notes) = verdict(&status, members.as_deref());
    if client.json {
        let mut json = serde_json::to_value(&status)?;
        json["cluster"] = serde_json::json!({
            "healthy": problems.is_empty(),
            "problems": problems,
            "notes": notes,
        });
        client.print(&json)?;
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
        status.name,
        status.id,
        status.node,
        status.generation,
        cell(status.epoch)
    )?;
    if !status.trust.is_empty() {
        outln!("trust: {}", status.trust)?;
    }
    if status.ready {
        outln!("ready: yes")?;
    } else {
        outln!("ready: no (waiting for: {})", status.waiting_for.join(", "))?;
    }
    print_cp(status.control_plane.as_ref())?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Unhealthy.into())
    }
}

pub async fn members(client: &Client) -> Result<()> {
    let members: Vec<MemberView> = client.get("/v1/members").await?;
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
    let status: CpStatus = match command {
        CpCommand::Status => client.get("/v1/cp/status").await?,
        CpCommand::Voters { command } => match command {
            VotersCommand::Add { addr, learner } => {
                let body = serde_json::json!({ "addr": addr, "voter": !learner });
                let body = Some(body.to_string().into_bytes());
                client.call(Method::POST, "/v1/cp/voters", body).await?
            }
            VotersCommand::Remove { id } => {
                if id.parse::<hivemind_common::MemberId>().is_err() {
                    bail!("ID: {id:?} is not a member id (16 hex digits)");
                }
                let path = format!("/v1/cp/voters?id={id}");
                client.call(Method::DELETE, &path, None).await?
            }
        },
        CpCommand::Epoch {
            command: EpochCommand::Bump { reason },
        } => {
            let body = serde_json::json!({ "reason": reason });
            let started: EpochStarted = client
                .call(
                    Method::POST,
                    "/v1/cp/epoch",
                    Some(body.to_string().into_bytes()),
                )
                .await?;
            if client.json {
                client.print(&started)?;
            } else {
                outln!("epoch {} started at index {}", started.epoch, started.index)?;
            }
            return Ok(());
        }
    };
    if client.json {
        client.print(&status)?;
    } else {
        print_cp(Some(&status))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A `/v1/status` answer of member `name`, with the control plane's health and voters.
    fn status(name: &str, waiting_for: &[&str], cp_health: Option<&str>) -> StatusView {
        let voter = json!({"id": "1", "name": "cp1", "addr": "127.0.0.1:7700"});
        let cp = cp_health.map(|health| {
            json!({"id": "1", "state": "leader", "leader": null, "term": 2,
                "voters": [voter, voter, voter], "learners": [], "commit_index": 9,
                "applied_index": 9, "last_log_index": 9, "health": health, "initialized": true})
        });
        serde_json::from_value(json!({
            "id": "00000000000000aa", "name": name, "node": name, "roles": [], "generation": 1,
            "epoch": 1, "http": "127.0.0.1:7700", "addr": "127.0.0.1:7701", "admitted": true,
            "ready": waiting_for.is_empty(),
            "gossip": {"members": 2, "packets_in": 0, "packets_out": 0, "dropped_unopened": 0},
            "feed": {"epoch": 1, "index": 9, "caught_up": true, "events_applied": 9,
                "errors": 0, "rebootstraps": 0},
            "waiting_for": waiting_for, "control_plane": cp,
        }))
        .expect("a /v1/status answer")
    }

    fn member(name: &str, state: &str) -> MemberView {
        serde_json::from_value(json!({"id": "00000000000000bb", "name": name, "node": name,
            "roles": [], "addr": "127.0.0.1:1", "http": "127.0.0.1:2", "state": state,
            "generation": 1, "control_plane": false, "updated_index": 3}))
        .expect("a /v1/members entry")
    }

    #[test]
    fn a_healthy_cluster_has_no_problems_and_failed_members_are_noted() {
        let members = [member("cp1", "alive"), member("web-2", "failed")];
        let (problems, notes) = verdict(&status("cp1", &[], Some("healthy")), Some(&members));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(notes[0], "members: 1 alive, 1 failed, 0 left");
        assert!(notes[1].ends_with("web-2"));
    }

    #[test]
    fn no_quorum_and_waiting_roles_are_problems_with_their_reasons() {
        let status = status("web-1", &["role:dns"], Some("degraded"));
        let (problems, notes) = verdict(&status, None);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("degraded") && problems[0].contains("no_quorum"));
        assert!(problems[0].contains("3 voters"));
        assert!(problems[1].contains("waiting for role:dns"));
        assert_eq!(notes, ["the member list could not be read"]);
    }

    #[test]
    fn no_control_plane_answering_is_a_problem() {
        let (problems, _) = verdict(&status("web-1", &[], None), Some(&[]));
        assert!(
            problems[0].contains("control plane unknown"),
            "{problems:?}"
        );
    }
}
