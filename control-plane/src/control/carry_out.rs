//! [`ControlPlane::request`]: a member's request ([`crate::member_requests`]) decided and carried out
//! on this CP member: the commands it becomes are written through the leader; create-or-join
//! and claims are decided on this member's applied registry, at least as new as the member's
//! own view.

use crate::error::CpError;
use crate::member_requests::{
    self, claim_step, join_keygroup_step, ClaimStep, JoinStep, MemberAnswer, MemberRequest,
};
use crate::registry::{CommandOutput, RegistryError};

use super::ControlPlane;

/// How often a keygroup join looks again after another member created it meanwhile.
const JOIN_ATTEMPTS: usize = 5;

impl ControlPlane {
    /// Carries out a member's request (see [`MemberRequest`]).
    pub async fn request(&self, request: MemberRequest) -> Result<MemberAnswer, CpError> {
        match request {
            MemberRequest::JoinKeygroup { name, node, seen } => {
                self.join_keygroup(&name, &node, seen).await
            }
            MemberRequest::Claim {
                node,
                keygroup,
                machine,
                seen,
            } => {
                let registry = self.digest_at(seen).await?;
                match claim_step(&registry, &node, &keygroup, machine) {
                    ClaimStep::Held(answer) => Ok(answer),
                    ClaimStep::Propose(claim) => match self.write(claim).await {
                        Ok(applied) => match applied.output {
                            CommandOutput::Claimed { fence } => Ok(MemberAnswer::Claimed { fence }),
                            other => Err(CpError::Fatal(format!("a claim applied as {other:?}"))),
                        },
                        // Another machine claimed it first.
                        Err(CpError::Rejected(RegistryError::Held { holder, .. })) => {
                            Ok(MemberAnswer::HeldBy { machine: holder })
                        }
                        Err(e) => Err(e),
                    },
                }
            }
            MemberRequest::Acl(acl) => {
                let (command, token) = member_requests::acl_step(acl, crate::access::now_ms());
                let applied = self.write(command).await?;
                Ok(match token {
                    Some(token) => MemberAnswer::Token(token),
                    None => MemberAnswer::Applied(applied),
                })
            }
            other => {
                let command = member_requests::command(other, crate::access::now_ms())
                    .expect("every other request is one command");
                Ok(MemberAnswer::Applied(self.write(command).await?))
            }
        }
    }

    async fn join_keygroup(
        &self,
        name: &str,
        node: &str,
        seen: u64,
    ) -> Result<MemberAnswer, CpError> {
        let mut at = seen;
        for _ in 0..JOIN_ATTEMPTS {
            let registry = self.digest_at(at).await?;
            let current = registry.keygroups.iter().find(|k| k.name == name);
            match join_keygroup_step(name, node, current) {
                JoinStep::Joined(config) => return Ok(MemberAnswer::Keygroup(config)),
                JoinStep::Tombstoned => {
                    return Err(CpError::Rejected(RegistryError::Tombstoned {
                        name: name.into(),
                    }))
                }
                JoinStep::Propose(command) => match self.write(command).await {
                    Ok(applied) => at = applied.index,
                    // Created by another member meanwhile: look again.
                    Err(CpError::Rejected(RegistryError::KeygroupExists { .. })) => {}
                    Err(e) => return Err(e),
                },
            }
        }
        Err(CpError::Fatal(format!("could not join keygroup {name}")))
    }
}
