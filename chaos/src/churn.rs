//! Membership churn and keygroup claims beside the KV workload (IO): synthetic role members join
//! through the join route every member serves, leave, and claim their node's responsibility for
//! a keygroup through the request route, as members outside the control plane do. Each speaks
//! only for itself: with `--tls` it presents its own certificate (`churn-K`, [`crate::pki`]),
//! and the control plane holds it to that identity. Every operation's outcome is logged for
//! the end-state rules in [`crate::membership`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hivemind_common::MemberId;
use hivemind_control_plane::member_requests::{MemberAnswer, MemberCall, MemberRequest};
use hivemind_control_plane::ops::{self, Op};
use hivemind_control_plane::registry::{Actor, Command, KeygroupDelta, MemberInfo};
use hivemind_control_plane::{Applied, CpError};
use hivemind_member::cp::join::{JoinAccepted, JoinRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::membership::{ChurnKind, ChurnOp, ChurnOutcome};
use crate::pki::{churn_name, Access, CHURN_NAMES, HARNESS};

/// The nodes the synthetic members belong to: two, so that machines of one node contend.
pub const NODES: [&str; 2] = ["churn-a", "churn-b"];
/// The keygroups both nodes replicate and claim.
pub const KEYGROUPS: [&str; 2] = ["chaos/churn/g0", "chaos/churn/g1"];
/// Synthetic members alive (by the client's account) the churn aims for.
const TARGET_ALIVE: usize = 6;
const TIMEOUT: Duration = Duration::from_secs(7);

/// The churn operations of one run.
#[derive(Clone, Default)]
pub struct ChurnLog(Arc<Mutex<Vec<ChurnOp>>>);

impl ChurnLog {
    fn push(&self, op: ChurnOp) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    pub fn ops(&self) -> Vec<ChurnOp> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Calls an internal route with a bincode body whose answer is a `Result<Resp, CpError>`; the
/// outcome the answer means.
async fn call<Resp: DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
    body: Vec<u8>,
) -> ChurnOutcome {
    let sent = http.post(url).body(body).send().await;
    let response = match sent {
        Ok(r) if r.status().is_success() => r,
        Ok(r) if r.status().is_client_error() => return ChurnOutcome::Refused,
        Ok(_) => return ChurnOutcome::Unknown,
        Err(e) if e.is_connect() => return ChurnOutcome::Refused,
        Err(_) => return ChurnOutcome::Unknown,
    };
    let Ok(bytes) = response.bytes().await else {
        return ChurnOutcome::Unknown;
    };
    match hivemind_common::decode::<Result<Resp, CpError>>(&bytes) {
        Ok(Ok(_)) => ChurnOutcome::Ok,
        // The registry's rules refused it, or nothing was proposed: surely not applied.
        Ok(Err(
            CpError::Rejected(_)
            | CpError::BadRequest(_)
            | CpError::BadToken
            | CpError::BadGossipKey
            | CpError::NotLeader { .. },
        )) => ChurnOutcome::Refused,
        _ => ChurnOutcome::Unknown,
    }
}

/// Creates the churn keygroups with both nodes as replicas (before the faults start), as an
/// operator with a control-plane certificate.
pub async fn prepare(member: &str, access: &Access) -> Result<(), String> {
    let http = access.client(Some(HARNESS), TIMEOUT);
    for name in KEYGROUPS {
        let create = Command::KeygroupCreate {
            name: name.into(),
            creator: NODES[0].into(),
            ttl_secs: 30,
            open: false,
            secret: vec![1; 32],
        };
        let add = Command::KeygroupUpdate {
            name: name.into(),
            by: Actor::Admin,
            deltas: vec![KeygroupDelta::AddReplica(NODES[1].into())],
        };
        for command in [create, add] {
            let body = hivemind_common::encode(&command);
            let url = access.url(member, ops::Propose::PATH);
            let outcome = call::<Applied>(&http, url, body).await;
            if outcome != ChurnOutcome::Ok {
                return Err(format!("cannot prepare keygroup {name}: {outcome:?}"));
            }
        }
    }
    Ok(())
}

/// A synthetic member as it would describe itself (its addresses are never dialled): the `n`th
/// to join, under name `k`.
fn info(id: MemberId, n: u64, k: usize, node: &str) -> MemberInfo {
    MemberInfo {
        id,
        name: churn_name(k),
        node: node.into(),
        roles: vec!["dns".into()],
        http_addr: format!("127.77.{}.{}:7700", n / 250, n % 250 + 1),
        gossip_addr: format!("127.77.{}.{}:7701", n / 250, n % 250 + 1),
        generation: 1,
        control_plane: false,
    }
}

/// Runs the churn until `stop`: joins while fewer than [`TARGET_ALIVE`] synthetic members are
/// in, otherwise leaves and claims; each call through a random member, another after a failure.
/// A member joins under a name no live synthetic member may hold, and calls as that name.
pub async fn churn(
    members: Vec<String>,
    seed: u64,
    log: ChurnLog,
    stop: CancellationToken,
    access: Access,
) {
    let clients: Vec<reqwest::Client> = (0..CHURN_NAMES)
        .map(|k| access.client(Some(&churn_name(k)), TIMEOUT))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc4c4);
    // (id, node, name index) of the members in, by the client's account.
    let mut joined: Vec<(MemberId, String, usize)> = Vec::new();
    // The names a live member may hold: joined, or a join or leave of unknown outcome.
    let mut held: BTreeSet<usize> = BTreeSet::new();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let member = &members[rng.gen_range(0..members.len())];
        let roll = rng.gen_range(0..100);
        let free: Vec<usize> = (0..CHURN_NAMES).filter(|k| !held.contains(k)).collect();
        if free.is_empty() && joined.is_empty() {
            // Every name may still be held: nothing to do but wait for the run to end.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let ask = |request: MemberRequest| {
            hivemind_common::encode(&MemberCall {
                request,
                client_token: None,
            })
        };
        let request_url = access.url(member, ops::Request::PATH);
        let join = joined.len() < TARGET_ALIVE && roll < 60 || joined.is_empty();
        let (id, kind, outcome) = if join && !free.is_empty() {
            n += 1;
            let id = MemberId::new(rng.gen_range(1..u64::MAX)).expect("non-zero");
            let node = NODES[rng.gen_range(0..NODES.len())];
            let k = free[rng.gen_range(0..free.len())];
            let request = JoinRequest {
                member: info(id, n, k, node),
                token: None,
                cluster_proof: None,
                epoch: None,
            };
            let body = hivemind_common::encode(&request);
            let url = access.url(member, ops::Join::PATH);
            let outcome = call::<JoinAccepted>(&clients[k], url, body).await;
            if outcome == ChurnOutcome::Ok {
                joined.push((id, node.to_string(), k));
            }
            if outcome != ChurnOutcome::Refused {
                held.insert(k);
            }
            (id, ChurnKind::Join, outcome)
        } else if roll < 25 {
            let (id, _, k) = joined.swap_remove(rng.gen_range(0..joined.len()));
            let body = ask(MemberRequest::Leave { id });
            let outcome = call::<MemberAnswer>(&clients[k], request_url, body).await;
            if outcome == ChurnOutcome::Ok {
                held.remove(&k);
            }
            (id, ChurnKind::Leave, outcome)
        } else {
            let (id, node, k) = joined[rng.gen_range(0..joined.len())].clone();
            let keygroup = KEYGROUPS[rng.gen_range(0..KEYGROUPS.len())].to_string();
            let body = ask(MemberRequest::Claim {
                node: node.clone(),
                keygroup: keygroup.clone(),
                machine: id,
                seen: 0,
            });
            let outcome = call::<MemberAnswer>(&clients[k], request_url, body).await;
            (id, ChurnKind::Claim { node, keygroup }, outcome)
        };
        log.push(ChurnOp {
            member: id.to_string(),
            kind,
            outcome,
        });
        let pause = match outcome {
            ChurnOutcome::Ok => rng.gen_range(30..120),
            _ => 100,
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}
