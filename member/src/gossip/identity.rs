//! [`GossipId`]: who a member is on the gossip layer: its persistent id, its gossip address and
//! its generation (incarnation of the process).

use std::net::SocketAddr;

use hivemind_common::MemberId;
use serde::{Deserialize, Serialize};

/// A member's gossip identity. Two identities with the same `id` are the same member; the one
/// with the higher generation is the current incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GossipId {
    pub id: MemberId,
    pub addr: SocketAddr,
    pub generation: u64,
}

impl foca::Identity for GossipId {
    /// Conflicts are detected per member id, so a member that moved to a new address or
    /// restarted is recognized as the same member.
    type Addr = MemberId;

    /// A member falsely declared down comes back as a new incarnation (foca rejoins with it).
    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation + 1,
            ..*self
        })
    }

    fn addr(&self) -> MemberId {
        self.id
    }

    /// The newer incarnation wins; on a tie (should not happen), the later address ordering
    /// keeps the choice deterministic on every member.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.addr) > (adversary.generation, adversary.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id(generation: u64, port: u16) -> GossipId {
        GossipId {
            id: MemberId::new(7).unwrap(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
        }
    }

    #[test]
    fn renew_bumps_only_the_generation() {
        let renewed = id(3, 9000).renew().unwrap();
        assert_eq!(renewed, id(4, 9000));
        assert_eq!(renewed.addr(), id(3, 9000).addr());
    }

    #[test]
    fn the_newer_generation_wins_an_address_conflict() {
        assert!(id(5, 9000).win_addr_conflict(&id(4, 9001)));
        assert!(!id(4, 9001).win_addr_conflict(&id(5, 9000)));
        // Deterministic on a tie: exactly one side wins.
        assert!(
            id(5, 9001).win_addr_conflict(&id(5, 9000))
                ^ id(5, 9000).win_addr_conflict(&id(5, 9001))
        );
    }
}
