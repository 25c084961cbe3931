//! Joining through any member: the request and answer on the wire, and the joiner's loop over
//! its `--join` addresses. The rules (epoch, name, generation) are the registry's; the token is
//! checked by the CP member that receives the request, before anything is proposed.

use std::time::Duration;

use hivemind_common::backoff::Backoff;
use hivemind_control_plane::network::InternalClient;
use hivemind_control_plane::ops;
use hivemind_control_plane::registry::{MemberInfo, RegistryError};
use hivemind_control_plane::CpError;
use tokio_util::sync::CancellationToken;

pub use hivemind_control_plane::ops::{JoinAccepted, JoinRequest};

/// The control-plane members' HTTP addresses among `members`.
pub fn cp_endpoints<'a>(members: impl IntoIterator<Item = &'a MemberInfo>) -> Vec<String> {
    members
        .into_iter()
        .filter(|m| m.control_plane)
        .map(|m| m.http_addr.clone())
        .collect()
}

/// The members outside the control plane among `members`: they share the CP members
/// ([`crate::cp::cp_choice::assign`]).
pub fn outside_cp<'a>(
    members: impl IntoIterator<Item = &'a MemberInfo>,
) -> Vec<hivemind_common::MemberId> {
    members
        .into_iter()
        .filter(|m| !m.control_plane)
        .map(|m| m.id)
        .collect()
}

/// What the joiner does with one answer (sans IO).
#[derive(Debug, PartialEq)]
pub enum NextStep {
    Joined,
    /// Our epoch is stale: re-bootstrap, i.e. join again as a fresh member.
    RejoinFresh,
    /// Rejected for good: print the reason, exit nonzero.
    GiveUp {
        code: String,
        message: String,
    },
    /// No quorum, unreachable: try the next address, then again after a backoff.
    Retry,
    /// A member outside the control plane sent us to the control-plane members (with
    /// certificates a member speaks only for itself): ask them.
    AskControlPlane(Vec<String>),
}

pub fn next_step(answer: &Result<JoinAccepted, CpError>) -> NextStep {
    match answer {
        Ok(_) => NextStep::Joined,
        Err(CpError::Rejected(RegistryError::StaleEpoch { .. })) => NextStep::RejoinFresh,
        Err(CpError::JoinElsewhere { control_plane }) => {
            NextStep::AskControlPlane(control_plane.clone())
        }
        Err(
            e @ (CpError::BadToken
            | CpError::BadGossipKey
            | CpError::Rejected(_)
            | CpError::Forbidden(_)),
        ) => NextStep::GiveUp {
            code: e.code().to_string(),
            message: e.to_string(),
        },
        Err(_) => NextStep::Retry,
    }
}

/// Joins through `join` addresses in turn, with backoff, for at most `patience`.
pub async fn join_cluster(
    join: &[String],
    mut request: JoinRequest,
    client: &InternalClient,
    wait: Duration,
    patience: Duration,
    cancel: &CancellationToken,
) -> Result<JoinAccepted, (String, String)> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    let mut last = String::from("no --join address given");
    // The --join addresses, then the control-plane members a member sent us to.
    let mut addrs: Vec<String> = join.to_vec();
    loop {
        let mut index = 0;
        while let Some(addr) = addrs.get(index).cloned() {
            index += 1;
            let addr = &addr;
            let answer = match client.op::<ops::Join>(addr, &request, wait).await {
                Ok(answer) => answer,
                Err(e) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
            };
            match next_step(&answer) {
                NextStep::Joined => return Ok(answer.expect("joined")),
                NextStep::RejoinFresh => {
                    tracing::warn!("our epoch is stale: re-bootstrapping with a fresh join");
                    request.epoch = None;
                }
                NextStep::GiveUp { code, message } => return Err((code, message)),
                NextStep::AskControlPlane(control_plane) => {
                    last = format!("{addr}: join through the control plane");
                    for cp in control_plane {
                        if !addrs.contains(&cp) {
                            addrs.push(cp);
                        }
                    }
                }
                NextStep::Retry => {
                    last = format!(
                        "{addr}: {}",
                        answer.err().map(|e| e.to_string()).unwrap_or_default()
                    )
                }
            }
        }
        if tokio::time::Instant::now() >= deadline || cancel.is_cancelled() {
            return Err((
                "no_quorum".into(),
                format!("no member admitted us within {patience:?}; last: {last}"),
            ));
        }
        tracing::info!(%last, "join not answered yet; retrying");
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::MemberId;

    #[test]
    fn rejections_end_the_join_and_only_a_stale_epoch_rejoins_fresh() {
        let accepted = JoinAccepted {
            epoch: 1,
            index: 5,
            members: vec![],
        };
        assert_eq!(next_step(&Ok(accepted)), NextStep::Joined);
        let stale = CpError::Rejected(RegistryError::StaleEpoch {
            current: 3,
            given: 2,
        });
        assert_eq!(next_step(&Err(stale)), NextStep::RejoinFresh);
        for (e, code) in [
            (CpError::BadToken, "bad_token"),
            (CpError::BadGossipKey, "bad_gossip_key"),
            (
                CpError::Rejected(RegistryError::NameTaken {
                    name: "a".into(),
                    holder: MemberId::new(1).unwrap(),
                }),
                "name_taken",
            ),
        ] {
            assert!(matches!(next_step(&Err(e)), NextStep::GiveUp { code: c, .. } if c == code));
        }
        let no_quorum = CpError::NoQuorum {
            waited_ms: 5000,
            detail: String::new(),
        };
        assert_eq!(next_step(&Err(no_quorum)), NextStep::Retry);
        let elsewhere = CpError::JoinElsewhere {
            control_plane: vec!["127.0.0.1:1".into()],
        };
        assert_eq!(
            next_step(&Err(elsewhere)),
            NextStep::AskControlPlane(vec!["127.0.0.1:1".into()])
        );
        let forged = CpError::Forbidden(hivemind_control_plane::authority::Denied::NoIdentity);
        assert!(
            matches!(next_step(&Err(forged)), NextStep::GiveUp { code, .. } if code == "no_identity")
        );
    }
}
