//! The reconcile loop: keygroups joined and claimed, subscriptions matching the membership,
//! the subscriber tasks, the sibling snapshot copy on a simple join, records of gone members
//! dropped at once.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hivemind_common::backoff::Backoff;
use hivemind_common::records;
use hivemind_common::role::Claim;
use hivemind_common::role::CpCallError;
use hivemind_common::role::KeygroupInfo;
use hivemind_common::role::Me;
use hivemind_common::role::Membership;
use hivemind_common::role::RoleContext;
use hivemind_common::role::RoleEvent;
use hivemind_common::role::CLUSTER_SECRET_HEADER;
use hivemind_common::tls::url;
use hivemind_common::MemberId;
use tokio_util::sync::CancellationToken;

use crate::intake::ClaimState;
use crate::intake::Intake;
use crate::intake::Position;
use crate::targets;
use crate::targets::Target;
use crate::targets::Via;
use crate::Acquire;
use crate::Change;
use crate::RETRY_EVERY;

/// Simple join: before subscribing, copy `keygroup`'s records from another live member of the
/// same role whose node replicates it (the streams then bring anything newer; seqs make it safe).
/// Answers whether the join is settled: copied, or no sibling exists in a known membership.
pub(crate) async fn copy_from_sibling(shared: &Intake, me: &Me, keygroup: &str) -> bool {
    let membership = shared
        .membership
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if membership.epoch == 0 {
        return false; // the membership view is not bootstrapped yet
    }
    let replicas = shared
        .keygroups
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(keygroup)
        .map(|k| k.replicas.clone())
        .unwrap_or_default();
    for peer in membership
        .performing(shared.role)
        .filter(|p| p.id != me.id && replicas.contains(&p.node))
    {
        let url = url(
            shared.tls.as_ref(),
            &peer.http_addr,
            &format!(
                "/internal/v1/roles/{}/snapshot?keygroup={keygroup}",
                shared.role
            ),
        );
        let mut request = shared.http.get(url).timeout(Duration::from_secs(5));
        if let Some(secret) = &shared.cluster_secret {
            request = request.header(CLUSTER_SECRET_HEADER, secret);
        }
        let Ok(response) = request.send().await else {
            continue;
        };
        if !response.status().is_success() {
            continue;
        }
        let Ok(body) = response.bytes().await else {
            continue;
        };
        let mut buf = body.to_vec();
        let Ok(frames) = records::take_frames(&mut buf) else {
            continue;
        };
        let mut copied = 0;
        for sealed in frames {
            if let Ok(record) = shared.open(keygroup, &sealed).await {
                if record.keygroup == keygroup && shared.apply_record(record) {
                    copied += 1;
                }
            }
        }
        shared.counters.copied.fetch_add(copied, Ordering::Relaxed);
        tracing::info!(%keygroup, from = %peer.name, copied, role = shared.role, "copied records from a sibling");
        return true;
    }
    // No sibling answered: settled only if there is none to ask.
    let siblings = membership
        .performing(shared.role)
        .filter(|p| p.id != me.id && replicas.contains(&p.node))
        .count();
    siblings == 0
}

/// The reconcile loop: keygroups joined and claimed, subscriptions matching the membership,
/// records of gone members dropped at once.
pub(crate) async fn run(shared: Arc<Intake>, mut ctx: RoleContext) {
    let me: Me = ctx.me.borrow().clone();
    let mut active: BTreeMap<Target, CancellationToken> = BTreeMap::new();
    let mut last_inputs = None;
    // The first turn runs at once; later ones on events, on `--reread-every` (DESIGN.md §5
    // event [6]) and sooner while something is pending.
    let mut next_turn = Duration::ZERO;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                for token in active.values() {
                    token.cancel();
                }
                return;
            }
            _ = tokio::time::sleep(next_turn) => {}
            _ = shared.config_behind.notified() => {}
            event = ctx.events.recv() => {
                let Some(event) = event else { return };
                // One reconcile for a burst of events (many joins at once).
                let mut burst = vec![event];
                while let Ok(more) = ctx.events.try_recv() {
                    burst.push(more);
                }
                for event in burst {
                    match event {
                        // A host that failed or left is gone from the answers now.
                        RoleEvent::Gone { id, .. } => drop_member(&shared, &mut active, id),
                        // A tombstone: the keygroup's records go now (the reconcile below
                        // then stops its subscriptions).
                        RoleEvent::KeygroupChanged {
                            name,
                            deleted: true,
                            ..
                        } => {
                            shared.remove_records(|r| r.keygroup == name);
                        }
                        RoleEvent::Reported {
                            index,
                            name,
                            report,
                            ..
                        } => shared.consumer.reported(&shared, index, &name, &report),
                        // Every other change is picked up by the reconcile of this turn.
                        _ => {}
                    }
                }
            }
        }
        *shared.membership.write().unwrap_or_else(|p| p.into_inner()) =
            ctx.membership.borrow().clone();
        let (mut claims, settled) = reconcile_keygroups(&shared, &ctx).await;
        next_turn = if settled {
            ctx.settings.reread_every
        } else {
            RETRY_EVERY
        };
        // Make-before-break for a starting member too: subscribe to hosts only once the
        // keygroup was seeded from a sibling (or there is none).
        {
            let seeded = shared.copied_once.lock().unwrap_or_else(|p| p.into_inner());
            claims.retain(|k, claim| !matches!(claim, Claim::Mine { .. }) || seeded.contains(k));
        }
        let membership = ctx.membership.borrow().clone();
        let keygroups = shared
            .keygroups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let wanted = targets::targets(
            shared.role,
            me.id,
            &me.node,
            &claims,
            &keygroups,
            &membership,
        );
        // Stop what is no longer wanted (make-before-break: new ones start in the same turn).
        active.retain(|target, token| {
            let keep = wanted.contains(target);
            if !keep {
                token.cancel();
            }
            keep
        });
        for target in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = active.entry(target) {
                let token = ctx.shutdown.child_token();
                tokio::spawn(subscribe(shared.clone(), slot.key().clone(), token.clone()));
                slot.insert(token);
            }
        }
        publish_positions(&shared, &claims, &keygroups, &membership, &active);
        // Records of members no longer alive, or of keygroups no longer served, go.
        let live: BTreeSet<MemberId> = membership.live().map(|p| p.id).collect();
        let stale: Vec<MemberId> = shared
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records()
            .map(|r| r.member)
            .filter(|m| !live.contains(m))
            .collect();
        for id in stale {
            drop_member(&shared, &mut active, id);
        }
        // What records are read with (member, node and role names, keygroup TTLs and
        // replicas) moved: the role hears it (record changes it hears on their own).
        let inputs = (
            membership.epoch,
            membership.index,
            keygroups
                .values()
                .map(|k| (k.name.clone(), k.version))
                .collect::<Vec<_>>(),
        );
        if last_inputs.as_ref() != Some(&inputs) {
            shared.notify(Change::Inputs);
            last_inputs = Some(inputs);
        }
    }
}

/// Records where this machine stands per keygroup for `GET /v1/roles/<role>/status`.
pub(crate) fn publish_positions(
    shared: &Intake,
    claims: &BTreeMap<String, Claim>,
    keygroups: &BTreeMap<String, KeygroupInfo>,
    membership: &Membership,
    active: &BTreeMap<Target, CancellationToken>,
) {
    let positions = keygroups
        .values()
        .map(|k| {
            let (claim, fence, holder) = match claims.get(&k.name) {
                Some(Claim::Mine { fence }) => (ClaimState::Mine, Some(*fence), None),
                Some(Claim::HeldBy { machine }) => (
                    ClaimState::HeldBy,
                    None,
                    Some(
                        membership
                            .peers
                            .iter()
                            .find(|p| p.id == *machine)
                            .map_or_else(|| machine.to_string(), |p| p.name.clone()),
                    ),
                ),
                None => (ClaimState::Waiting, None, None),
            };
            let subscriptions = active.keys().filter(|t| t.keygroup == k.name).count();
            let position = Position {
                claim,
                fence,
                holder,
                subscriptions,
                version: k.version,
            };
            (k.name.clone(), position)
        })
        .collect();
    *shared.positions.write().unwrap_or_else(|p| p.into_inner()) = positions;
}

pub(crate) fn drop_member(
    shared: &Intake,
    active: &mut BTreeMap<Target, CancellationToken>,
    id: MemberId,
) {
    active.retain(|target, token| {
        let keep = target.member != id;
        if !keep {
            token.cancel();
        }
        keep
    });
    if shared.remove_records(|r| r.member == id) {
        tracing::info!(member = %id, "host gone: its records are dropped");
    }
}

/// The keygroup's config for this machine: a replica role makes its node a replica (joins);
/// the trigger role only reads it and waits until its node is one of the triggers.
pub(crate) async fn acquire(
    acquire: Acquire,
    ctx: &RoleContext,
    name: &str,
) -> Result<KeygroupInfo, CpCallError> {
    match acquire {
        Acquire::Replica => ctx.cp.join_keygroup(name.to_string()).await,
        Acquire::Trigger => {
            let node = ctx.me.borrow().node.clone();
            match ctx.cp.keygroup(name.to_string()).await? {
                None => Err(CpCallError {
                    code: "unknown_keygroup".into(),
                    message: format!("no keygroup {name}"),
                }),
                Some(info) if info.tombstoned => Err(CpCallError {
                    code: "tombstoned".into(),
                    message: format!("{name} is deleted"),
                }),
                Some(info) if !info.triggers.contains(&node) => Err(CpCallError {
                    code: "not_a_trigger".into(),
                    message: format!("node {node:?} is not a trigger node of {name}"),
                }),
                Some(info) => Ok(info),
            }
        }
    }
}

/// Why a keygroup's config cannot be had that mean this node must not serve it now.
const LET_GO: [&str; 3] = ["not_a_replica", "not_a_trigger", "unknown_keygroup"];

/// Drops keygroup `name`'s records (each removal heard by the consumer) and its config, and
/// forgets that it was seeded; answers whether any record went.
fn let_go(shared: &Intake, name: &str) -> bool {
    let removed = shared.remove_records(|r| r.keygroup == name);
    shared
        .keygroups
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(name);
    shared
        .copied_once
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(name);
    removed
}

/// Joins and claims every served keygroup (re-reading its config: B when it changed); answers
/// the claim outcome per keygroup and whether everything settled. A tombstoned keygroup's
/// records go.
pub(crate) async fn reconcile_keygroups(
    shared: &Intake,
    ctx: &RoleContext,
) -> (BTreeMap<String, Claim>, bool) {
    let mut claims = BTreeMap::new();
    let mut waiting = Vec::new();
    let mut settled = true;
    for name in &ctx.settings.keygroups {
        match acquire(shared.acquire, ctx, name).await {
            Ok(info) => {
                let _newer = shared.set_keygroup(info);
            }
            Err(e) if e.code == "tombstoned" => {
                if let_go(shared, name) {
                    tracing::info!(keygroup = %name, "keygroup tombstoned: its records are dropped");
                }
                continue;
            }
            // This node is no longer one of the keygroup's replicas (or trigger nodes), or the
            // keygroup is gone: its records go at once (DESIGN.md §6), and the member waits
            // until it is added again.
            Err(e) if LET_GO.contains(&e.code.as_str()) => {
                if let_go(shared, name) {
                    tracing::info!(keygroup = %name, reason = %e.code, "no longer serving the keygroup: its records are dropped");
                }
                waiting.push(format!("keygroup:{name}"));
                continue;
            }
            Err(e) => {
                tracing::warn!(keygroup = %name, error = %e, "cannot join the keygroup; retrying");
                waiting.push(format!("keygroup:{name}"));
                continue;
            }
        }
        match ctx.cp.claim(name.clone()).await {
            Ok(Claim::Mine { fence }) => {
                if !shared.holds(name) {
                    shared.counters.claims.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(keygroup = %name, fence, "responsible for the keygroup in this node");
                }
                let seeded = shared
                    .copied_once
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(name);
                // Triggers report changes from now on: nothing to copy first.
                if !seeded && !shared.acquire.seeds_from_sibling() {
                    shared
                        .copied_once
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone());
                } else if !seeded {
                    let me = ctx.me.borrow().clone();
                    if copy_from_sibling(shared, &me, name).await {
                        shared
                            .copied_once
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name.clone());
                    } else {
                        settled = false;
                    }
                }
                claims.insert(name.clone(), Claim::Mine { fence });
            }
            Ok(held @ Claim::HeldBy { machine }) => {
                // Another machine of this node is responsible: stream from it. If this view
                // does not show it alive yet (or any more), try again soon.
                let membership = ctx.membership.borrow().clone();
                if !membership.live().any(|p| p.id == machine) {
                    settled = false;
                }
                claims.insert(name.clone(), held);
            }
            Err(e) => {
                tracing::warn!(keygroup = %name, error = %e, "cannot claim the keygroup; retrying");
                waiting.push(format!("keygroup:{name}"));
            }
        }
    }
    settled &= waiting.is_empty();
    ctx.health.waiting_for(waiting);
    (claims, settled)
}

/// One subscription: streams `target`'s records until cancelled, reconnecting with backoff.
pub(crate) async fn subscribe(shared: Arc<Intake>, target: Target, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let path = match target.via {
            Via::Host => format!(
                "/internal/v1/roles/host/subscribe?keygroup={}&member={}",
                target.keygroup, target.member
            ),
            Via::Holder => format!(
                "/internal/v1/roles/{}/stream?keygroup={}",
                shared.role, target.keygroup
            ),
        };
        let url = url(shared.tls.as_ref(), &target.http_addr, &path);
        let mut request = shared.http.get(url);
        if let Some(secret) = &shared.cluster_secret {
            request = request.header(CLUSTER_SECRET_HEADER, secret);
        }
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = stream(&shared, &target, request) => outcome,
        };
        if let Err(e) = outcome {
            shared
                .counters
                .stream_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(host = %target.member, error = %e, "subscription interrupted; reconnecting");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}

/// Counts a stream as open for as long as it lives.
pub(crate) struct OpenStream<'a>(&'a AtomicU64);

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn stream(
    shared: &Intake,
    target: &Target,
    request: reqwest::RequestBuilder,
) -> Result<(), String> {
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("subscribe answered {}", response.status()));
    }
    shared.counters.streams_open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenStream(&shared.counters.streams_open);
    if target.via == Via::Holder {
        // The holder's stream opens with everything it holds: this machine is seeded, and
        // takes over without a copy if it becomes the holder.
        shared
            .copied_once
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.keygroup.clone());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        buf.extend_from_slice(&chunk);
        let frames =
            records::take_frames(&mut buf).map_err(|len| format!("frame of {len} bytes"))?;
        for sealed in frames {
            match shared.open(&target.keygroup, &sealed).await {
                Ok(record) => {
                    shared.heard_version(&target.keygroup, record.keygroup_version);
                    shared.apply(target, record);
                }
                Err(e) => {
                    // Not interpretable even with the config re-read: dropped and counted.
                    shared
                        .counters
                        .refused_sealed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(host = %target.member, keygroup = %target.keygroup, error = %e, "record refused");
                }
            }
        }
    }
    Err("the stream ended".into())
}
