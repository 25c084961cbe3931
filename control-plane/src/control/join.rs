//! Who may join, decided by the control plane: a join request presents the join token (when
//! the cluster has one) and the cluster proof (the secret derived from its gossip key, when the
//! cluster has one), both compared in constant time; a refused join proposes nothing, so it
//! leaves no trace. An accepted one commits `Join` and answers with the live members.

use super::ControlPlane;
use crate::error::CpError;
use crate::ops::{JoinAccepted, JoinRequest};
use crate::registry::MemberState;
use crate::registry::{Command, CommandOutput};

/// Why a join request is refused before anything is proposed, if it is (sans IO).
pub fn admission_check(
    request: &JoinRequest,
    join_token: Option<&str>,
    cluster_secret: Option<&str>,
) -> Result<(), CpError> {
    if !hivemind_common::secret::satisfies(join_token, request.token.as_deref()) {
        return Err(CpError::BadToken);
    }
    // A member without our gossip key could not gossip with us.
    if !hivemind_common::secret::same(request.cluster_proof.as_deref(), cluster_secret) {
        return Err(CpError::BadGossipKey);
    }
    Ok(())
}

impl ControlPlane {
    /// Decides a join request ([`admission_check`] against this control plane's join token and
    /// cluster secret), then commits `Join` through the leader.
    pub async fn join(&self, request: JoinRequest) -> Result<JoinAccepted, CpError> {
        admission_check(
            &request,
            self.config.join_token.as_deref(),
            self.config.cluster_secret.as_deref(),
        )?;
        let join = Command::Join {
            member: request.member,
            epoch: request.epoch,
        };
        match self.write(join).await?.output {
            CommandOutput::Joined { epoch, index } => {
                let state = self.state().read();
                let members = state
                    .registry
                    .members()
                    .values()
                    .filter(|m| m.state == MemberState::Alive)
                    .map(|m| m.info.clone())
                    .collect();
                Ok(JoinAccepted {
                    epoch,
                    index,
                    members,
                })
            }
            other => Err(CpError::Fatal(format!("unexpected join outcome {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemberInfo;

    fn request(token: Option<&str>, proof: Option<&str>) -> JoinRequest {
        JoinRequest {
            member: MemberInfo {
                id: hivemind_common::MemberId::new(9).unwrap(),
                name: "web-1".into(),
                node: "web-1".into(),
                roles: vec![],
                http_addr: "10.0.0.9:7700".into(),
                gossip_addr: "10.0.0.9:7701".into(),
                generation: 1,
                control_plane: false,
            },
            token: token.map(str::to_string),
            cluster_proof: proof.map(str::to_string),
            epoch: None,
        }
    }

    #[test]
    fn a_join_needs_the_token_and_the_proof_the_cluster_has() {
        let open = |r: &JoinRequest| admission_check(r, None, None);
        assert_eq!(open(&request(None, None)), Ok(()));
        assert_eq!(open(&request(Some("any"), None)), Ok(()));
        assert_eq!(
            open(&request(None, Some("p"))),
            Err(CpError::BadGossipKey),
            "a joiner with a gossip key cannot gossip with a cluster without one"
        );
        let guarded = |r: &JoinRequest| admission_check(r, Some("t0ken"), Some("proof"));
        assert_eq!(guarded(&request(Some("t0ken"), Some("proof"))), Ok(()));
        assert_eq!(
            guarded(&request(None, Some("proof"))),
            Err(CpError::BadToken)
        );
        assert_eq!(
            guarded(&request(Some("t0ke"), Some("proof"))),
            Err(CpError::BadToken)
        );
        assert_eq!(
            guarded(&request(Some("t0ken"), None)),
            Err(CpError::BadGossipKey)
        );
        assert_eq!(
            guarded(&request(Some("t0ken"), Some("pro0f"))),
            Err(CpError::BadGossipKey)
        );
    }
}
