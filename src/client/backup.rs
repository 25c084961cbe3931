//! `hivemind backup ...` (DESIGN.md §6d): against the owner member's role routes, or, with
//! `--key FILE --owner NAME`, from any machine through any member: the snapshot records come
//! from the ledger (`/v1/backup/snapshots`), the chunks straight from the spaces, and the key
//! never leaves this machine.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use hivemind_backup_role::crypto::OwnerKey;
use hivemind_backup_role::owner::Owner;
use hivemind_backup_role::progress::Progress;
use hivemind_backup_role::restore::{self, rfc3339, RestoreView, Source};
use hivemind_backup_role::wire::Spaces;
use hivemind_backup_role::{BackupStatusView, CheckView, RunView, SnapshotView, SpaceView};
use hivemind_common::backup::{ChunkId, SnapshotRecord};
use hivemind_control_plane::http::views::MemberView;
use reqwest::Method;
use serde::Deserialize;

use super::{outln, Client};
use crate::cli::{BackupCommand, BackupKeyCommand, OwnerArgs};

const ROLE: &str = "/v1/roles/backup";

/// A record as `/v1/backup/snapshots` serves it.
#[derive(Debug, Deserialize)]
struct RecordView {
    id: String,
    owner: String,
    time_ms: u64,
    files: u64,
    bytes: u64,
    manifest: Vec<String>,
    sealed_paths: String,
}

impl RecordView {
    fn record(self) -> Result<SnapshotRecord> {
        let manifest = self
            .manifest
            .iter()
            .map(|h| ChunkId::from_hex(h).context("a manifest chunk id is not hex"))
            .collect::<Result<_>>()?;
        Ok(SnapshotRecord {
            id: self.id,
            owner: self.owner,
            time_ms: self.time_ms,
            files: self.files,
            bytes: self.bytes,
            manifest,
            sealed_paths: base64::engine::general_purpose::STANDARD.decode(self.sealed_paths)?,
        })
    }
}

fn read_key(path: &PathBuf) -> Result<OwnerKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--key: cannot read {}", path.display()))?;
    OwnerKey::parse(&text).with_context(|| format!("--key: {}", path.display()))
}

/// The owner's records from the ledger, through any member.
async fn records(client: &Client, owner: &str) -> Result<Vec<SnapshotRecord>> {
    let list: Vec<RecordView> = client
        .get(&format!("/v1/backup/snapshots?owner={owner}"))
        .await?;
    list.into_iter().map(RecordView::record).collect()
}

fn snapshot_view(key: &OwnerKey, r: &SnapshotRecord) -> SnapshotView {
    SnapshotView {
        id: r.id.clone(),
        time: rfc3339(r.time_ms),
        paths: Owner::paths_of(key, r).unwrap_or_default(),
        files: r.files,
        bytes: r.bytes,
    }
}

pub async fn backup(client: &Client, command: BackupCommand) -> Result<()> {
    match command {
        BackupCommand::Key {
            command: BackupKeyCommand::Create,
        } => {
            outln!("{}", OwnerKey::generate())?;
            Ok(())
        }
        BackupCommand::Run { path } => run(client, path).await,
        BackupCommand::Snapshots { owner } => {
            let list: Vec<SnapshotView> = match owner_of(&owner)? {
                Some((key, name)) => records(client, &name)
                    .await?
                    .iter()
                    .map(|r| snapshot_view(&key, r))
                    .collect(),
                None => client.get(&format!("{ROLE}/snapshots")).await?,
            };
            if client.json {
                return Ok(client.print(&list)?);
            }
            outln!(
                "{:<16}  {:<20}  {:>7}  {:>14}  PATHS",
                "ID",
                "TIME",
                "FILES",
                "BYTES"
            )?;
            for s in list {
                outln!(
                    "{:<16}  {:<20}  {:>7}  {:>14}  {}",
                    s.id,
                    s.time,
                    s.files,
                    s.bytes,
                    s.paths.join(",")
                )?;
            }
            Ok(())
        }
        BackupCommand::Restore {
            snapshot,
            to,
            path,
            owner,
        } => {
            let to = std::path::absolute(&to).context("--to")?;
            let view: RestoreView = match owner_of(&owner)? {
                Some((key, name)) => {
                    restore_here(client, &key, &name, &snapshot, &to, path).await?
                }
                None => {
                    let body = serde_json::json!({"snapshot": snapshot, "to": to, "path": path});
                    let route = format!("{ROLE}/restore");
                    let request =
                        client.call(Method::POST, &route, Some(serde_json::to_vec(&body)?));
                    with_progress(client, request, || owner_progress(client, false)).await?
                }
            };
            if client.json {
                return Ok(client.print(&view)?);
            }
            outln!(
                "restored snapshot {}: {} files, {} bytes under {}",
                view.snapshot,
                view.files,
                view.bytes,
                to.display()
            )?;
            Ok(())
        }
        BackupCommand::Spaces => {
            let list: Vec<SpaceView> = client.get("/v1/backup/spaces").await?;
            if client.json {
                return Ok(client.print(&list)?);
            }
            outln!(
                "{:<16}  {:<16}  {:<7}  {:>14}  {:>14}  {:>14}",
                "MEMBER",
                "NAME",
                "STATE",
                "CAPACITY",
                "STORED",
                "RESERVED"
            )?;
            for s in list {
                outln!(
                    "{:<16}  {:<16}  {:<7}  {:>14}  {:>14}  {:>14}",
                    s.member,
                    s.name,
                    s.state,
                    s.capacity,
                    s.stored,
                    s.reserved
                )?;
            }
            Ok(())
        }
        BackupCommand::Check { read_data } => {
            let body = serde_json::json!({ "read_data": read_data });
            let view: CheckView = client
                .call(
                    Method::POST,
                    &format!("{ROLE}/check"),
                    Some(serde_json::to_vec(&body)?),
                )
                .await?;
            if client.json {
                client.print(&view)?;
            } else {
                outln!(
                    "{} snapshots, {} chunks: {} copied, {} dropped, {} under-replicated, {} lost, {} read back, {} damaged",
                    view.maintain.snapshots,
                    view.maintain.chunks,
                    view.maintain.copied,
                    view.maintain.dropped,
                    view.maintain.under_replicated,
                    view.maintain.lost.len(),
                    view.read,
                    view.damaged.len()
                )?;
            }
            if !view.ok {
                bail!("the check found chunks short of copies, lost or damaged");
            }
            Ok(())
        }
        BackupCommand::Forget { snapshot } => {
            if snapshot.len() != 16 || !snapshot.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("SNAPSHOT: {snapshot:?} is not a snapshot id (16 hex digits)");
            }
            client
                .send(
                    Method::DELETE,
                    &format!("{ROLE}/snapshots/{snapshot}"),
                    None,
                )
                .await?;
            if !client.json {
                outln!("forgot snapshot {snapshot}")?;
            }
            Ok(())
        }
    }
}

fn owner_of(args: &OwnerArgs) -> Result<Option<(OwnerKey, String)>> {
    match (&args.key, &args.owner) {
        (Some(key), Some(owner)) => {
            if !hivemind_common::names::is_valid_name(owner) {
                bail!("--owner: {owner:?} is not a member name");
            }
            Ok(Some((read_key(key)?, owner.clone())))
        }
        _ => Ok(None),
    }
}

/// Awaits `request`; on a terminal, shows meanwhile the progress line `line` reads (files,
/// bytes, rate, ETA, as restic shows them).
async fn with_progress<T, L, F>(
    client: &Client,
    request: impl std::future::Future<Output = Result<T>>,
    line: L,
) -> Result<T>
where
    L: Fn() -> F,
    F: std::future::Future<Output = Option<String>>,
{
    if !std::io::stderr().is_terminal() || client.json {
        return request.await;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    tokio::pin!(request);
    let out = loop {
        tokio::select! {
            out = &mut request => break out,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(line) = line().await {
                    bar.set_message(line);
                }
            }
        }
    };
    bar.finish_and_clear();
    out
}

/// The owner member's progress of a run (`run`) or a restore, from its status route.
async fn owner_progress(client: &Client, run: bool) -> Option<String> {
    let status: BackupStatusView = client.get(&format!("{ROLE}/status")).await.ok()?;
    let view = if run {
        status.run_progress
    } else {
        status.restore_progress
    }?;
    view.active.then(|| view.line())
}

/// A snapshot now; on a terminal, its progress.
async fn run(client: &Client, paths: Vec<PathBuf>) -> Result<()> {
    let paths = paths
        .iter()
        .map(std::path::absolute)
        .collect::<std::io::Result<Vec<_>>>()
        .context("--path")?;
    let body = serde_json::to_vec(&serde_json::json!({ "paths": paths }))?;
    let route = format!("{ROLE}/run");
    let request = client.call::<RunView>(Method::POST, &route, Some(body));
    let view = with_progress(client, request, || owner_progress(client, true)).await?;
    if client.json {
        return Ok(client.print(&view)?);
    }
    outln!(
        "snapshot {}: {} files, {} bytes; {} new chunks, {} bytes sent",
        view.snapshot,
        view.files,
        view.bytes,
        view.chunks_new,
        view.bytes_sent
    )?;
    Ok(())
}

/// Restores on this machine: the record from the ledger, the chunks from every live member
/// with the backup role, opened with the key here.
async fn restore_here(
    client: &Client,
    key: &OwnerKey,
    owner: &str,
    snapshot: &str,
    to: &std::path::Path,
    sub: Option<PathBuf>,
) -> Result<RestoreView> {
    let record = records(client, owner)
        .await?
        .into_iter()
        .find(|r| r.id == snapshot)
        .with_context(|| format!("unknown_snapshot: {owner} has no snapshot {snapshot}"))?;
    let members: Vec<MemberView> = client.get("/v1/members").await?;
    let offering: Vec<SpaceView> = client.get("/v1/backup/spaces").await?;
    let addrs: Vec<String> = members
        .iter()
        .filter(|m| m.state == "alive" && offering.iter().any(|s| s.name == m.name))
        .map(|m| m.http.clone())
        .collect();
    let spaces = Spaces::public(client.token.clone(), client.tls.clone());
    let (at, errors) = spaces.locate(&addrs, owner).await;
    for e in &errors {
        eprintln!("warning: {e}");
    }
    let source = Source {
        spaces,
        owner: owner.to_string(),
        at,
    };
    let progress = std::sync::Arc::new(Progress::default());
    let request =
        async { Ok(restore::restore(key, &record, &source, to, sub.as_deref(), &progress).await?) };
    with_progress(client, request, || async { Some(progress.view().line()) }).await
}
