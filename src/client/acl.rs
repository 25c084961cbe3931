//! `hivemind acl`: bootstrap, policies and tokens (DESIGN.md §6e). A secret is printed only
//! when the token is made.

use std::io::{Read, Write};

use anyhow::{Context, Result};
use hivemind_control_plane::member_requests::NewToken;
use hivemind_member::http::acl_api::{Changed, CreateToken, PolicyView, TokenView};
use reqwest::Method;

use super::{outln, Client};
use crate::cli::{AclCommand, AclPolicyCommand, AclTokenCommand};

fn print_token(client: &Client, token: &NewToken) -> Result<()> {
    if client.json {
        client.print(token)?;
    } else {
        outln!("AccessorID: {}", token.accessor)?;
        outln!("SecretID:   {}", token.secret)?;
    }
    Ok(())
}

fn print_changed(client: &Client, changed: &Changed) -> Result<()> {
    if client.json {
        client.print(changed)?;
    } else {
        outln!("OK (index {})", changed.index)?;
    }
    Ok(())
}

/// A path segment: names and accessors are plain, but escape anything else.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn acl(client: &Client, command: AclCommand) -> Result<()> {
    match command {
        AclCommand::Bootstrap => {
            let token: NewToken = client.call(Method::POST, "/v1/acl/bootstrap", None).await?;
            print_token(client, &token)
        }
        AclCommand::Policy { command } => policy(client, command).await,
        AclCommand::Token { command } => token(client, command).await,
    }
}

async fn policy(client: &Client, command: AclPolicyCommand) -> Result<()> {
    match command {
        AclPolicyCommand::Create { name, rules } => {
            let text = if rules == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("--rules -: reading stdin")?;
                text
            } else {
                std::fs::read_to_string(&rules).with_context(|| format!("--rules {rules}"))?
            };
            let path = format!("/v1/acl/policy/{}", segment(&name));
            let changed: Changed = client
                .call(Method::PUT, &path, Some(text.into_bytes()))
                .await?;
            print_changed(client, &changed)
        }
        AclPolicyCommand::List => {
            let list: Vec<PolicyView> = client.get("/v1/acl/policies").await?;
            if client.json {
                client.print(&list)?;
            } else {
                for p in list {
                    outln!("{}", p.name)?;
                    for line in p.rules.lines() {
                        outln!("    {line}")?;
                    }
                }
            }
            Ok(())
        }
        AclPolicyCommand::Delete { name } => {
            let path = format!("/v1/acl/policy/{}", segment(&name));
            let changed: Changed = client.call(Method::DELETE, &path, None).await?;
            print_changed(client, &changed)
        }
    }
}

async fn token(client: &Client, command: AclTokenCommand) -> Result<()> {
    match command {
        AclTokenCommand::Create {
            policy,
            description,
            ttl,
        } => {
            if ttl.is_some_and(|ttl| ttl.is_zero()) {
                anyhow::bail!("--ttl: must be more than 0");
            }
            let body = serde_json::to_vec(&CreateToken {
                policies: policy,
                description,
                ttl: ttl.map(|ttl| format!("{}ms", ttl.as_millis())),
            })?;
            let token: NewToken = client
                .call(Method::POST, "/v1/acl/tokens", Some(body))
                .await?;
            print_token(client, &token)
        }
        AclTokenCommand::List => {
            let list: Vec<TokenView> = client.get("/v1/acl/tokens").await?;
            if client.json {
                client.print(&list)?;
            } else {
                outln!(
                    "{:<38} {:<10} {:<30} DESCRIPTION",
                    "ACCESSOR",
                    "KIND",
                    "POLICIES"
                )?;
                for t in list {
                    let kind = if t.management { "management" } else { "client" };
                    outln!(
                        "{:<38} {:<10} {:<30} {}",
                        t.accessor,
                        kind,
                        t.policies.join(","),
                        t.description
                    )?;
                }
            }
            Ok(())
        }
        AclTokenCommand::Delete { accessor } => {
            let path = format!("/v1/acl/token/{}", segment(&accessor));
            let changed: Changed = client.call(Method::DELETE, &path, None).await?;
            print_changed(client, &changed)
        }
    }
}
