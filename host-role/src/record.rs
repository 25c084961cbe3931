//! The host record and its seq rules (sans IO): every change gets a seq above every seq this
//! host ever used, including before a restart (the caller persists it before publishing).

use std::net::IpAddr;

use hivemind_common::role::Me;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub proto: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub host: String,
    pub addrs: Vec<IpAddr>,
    pub services: Vec<Service>,
    pub seq: u64,
    pub generation: u64,
}

impl HostRecord {
    /// The record before anything is published: no addresses, the last persisted seq.
    pub fn initial(me: &Me, stored_seq: u64) -> Self {
        Self {
            host: me.name.clone(),
            addrs: Vec::new(),
            services: Vec::new(),
            seq: stored_seq,
            generation: me.generation,
        }
    }

    /// This record for `me`'s current address and generation, with the next seq.
    pub fn next(&self, me: &Me) -> Self {
        Self {
            host: me.name.clone(),
            addrs: vec![me.http_addr.ip()],
            services: self.services.clone(),
            seq: self.seq + 1,
            generation: me.generation,
        }
    }

    /// The next record if `me` differs from what this record says, else `None`.
    pub fn changed_for(&self, me: &Me) -> Option<Self> {
        let next = self.next(me);
        (next.addrs != self.addrs || next.generation != self.generation).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::MemberId;
    use proptest::prelude::*;

    fn me(ip: [u8; 4], generation: u64) -> Me {
        Me {
            id: MemberId::new(1).unwrap(),
            name: "web-1".into(),
            node: "web-1".into(),
            generation,
            http_addr: (ip, 7700).into(),
            gossip_addr: (ip, 7701).into(),
        }
    }

    #[test]
    fn a_restart_continues_above_the_persisted_seq() {
        let record = HostRecord::initial(&me([127, 0, 0, 1], 2), 41).next(&me([127, 0, 0, 1], 2));
        assert_eq!(record.seq, 42);
        assert_eq!(record.addrs, vec![IpAddr::from([127, 0, 0, 1])]);
    }

    #[test]
    fn only_a_real_change_publishes() {
        let record = HostRecord::initial(&me([127, 0, 0, 1], 1), 0).next(&me([127, 0, 0, 1], 1));
        assert_eq!(record.changed_for(&me([127, 0, 0, 1], 1)), None);
        let moved = record.changed_for(&me([127, 0, 0, 2], 2)).unwrap();
        assert_eq!((moved.seq, moved.generation), (2, 2));
    }

    proptest! {
        #[test]
        fn seqs_only_grow(changes in proptest::collection::vec((0u8..3, 1u64..4), 1..30)) {
            let mut record = HostRecord::initial(&me([127, 0, 0, 1], 1), 0);
            for (ip, generation) in changes {
                if let Some(next) = record.changed_for(&me([127, 0, 0, ip], generation)) {
                    prop_assert!(next.seq > record.seq);
                    record = next;
                }
            }
        }
    }
}
