//! A member as the registry knows it: what it tells about itself when it joins ([`MemberInfo`],
//! checked here) and its state ([`MemberState`]).

use std::net::SocketAddr;

use hivemind_common::{names::is_valid_name, MemberId};
use serde::{Deserialize, Serialize};

use super::error::RegistryError;

/// What a member tells about itself when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: MemberId,
    pub name: String,
    pub node: String,
    pub roles: Vec<String>,
    pub http_addr: String,
    pub gossip_addr: String,
    pub generation: u64,
    pub control_plane: bool,
}

impl MemberInfo {
    pub(crate) fn validate(&self) -> Result<(), RegistryError> {
        if !is_valid_name(&self.name) {
            return Err(RegistryError::invalid(
                "name",
                format!("{:?} is not a valid name", self.name),
            ));
        }
        if !is_valid_name(&self.node) {
            return Err(RegistryError::invalid(
                "node",
                format!("{:?} is not a valid name", self.node),
            ));
        }
        if let Some(bad) = self.roles.iter().find(|r| !is_valid_name(r)) {
            return Err(RegistryError::invalid(
                "roles",
                format!("{bad:?} is not a valid role name"),
            ));
        }
        validate_addr("http_addr", &self.http_addr)?;
        validate_addr("gossip_addr", &self.gossip_addr)
    }
}

pub(crate) fn validate_addr(field: &str, addr: &str) -> Result<(), RegistryError> {
    addr.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| RegistryError::invalid(field, format!("{addr:?} is not IP:PORT")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Alive,
    Failed,
    Left,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Failed => "failed",
            MemberState::Left => "left",
        }
    }
}
