//! The host record as published (sans IO): every change gets a seq above every seq this host
//! ever used, including before a restart (the caller persists it before publishing). What the
//! services may be is [`crate::registration`]'s.

use std::net::IpAddr;

use hivemind_common::records::Service;
use hivemind_common::role::Me;
use hivemind_common::MemberId;

/// What this host publishes now (the keygroup is added per subscription stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub member: MemberId,
    pub host: String,
    pub addrs: Vec<IpAddr>,
    pub services: Vec<Service>,
    pub seq: u64,
    pub generation: u64,
}

impl Published {
    /// Before anything is published: no addresses, the persisted seq and services.
    pub fn initial(me: &Me, stored_seq: u64, services: Vec<Service>) -> Self {
        Self {
            member: me.id,
            host: me.name.clone(),
            addrs: Vec::new(),
            services,
            seq: stored_seq,
            generation: me.generation,
        }
    }

    /// This record for `me`'s current address and generation, with the next seq.
    pub fn next(&self, me: &Me) -> Self {
        Self {
            member: me.id,
            host: me.name.clone(),
            addrs: vec![me.http_addr.ip()],
            services: self.services.clone(),
            seq: self.seq + 1,
            generation: me.generation,
        }
    }

    /// The next record if `me` differs from what this record says, else `None`.
    pub fn changed_for(&self, me: &Me) -> Option<Self> {
        let next = self.next_seq();
        let moved = Self {
            addrs: vec![me.http_addr.ip()],
            generation: me.generation,
            ..next
        };
        (moved.addrs != self.addrs || moved.generation != self.generation).then_some(moved)
    }

    /// The next record with `services`, if they differ.
    pub fn with_services(&self, services: Vec<Service>) -> Option<Self> {
        (services != self.services).then(|| Self {
            services,
            ..self.next_seq()
        })
    }

    fn next_seq(&self) -> Self {
        Self {
            seq: self.seq + 1,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn service(name: &str, port: u16) -> Service {
        Service {
            name: name.into(),
            port,
            proto: "tcp".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_restart_continues_above_the_persisted_seq_with_its_services() {
        let record = Published::initial(&me([127, 0, 0, 1], 2), 41, vec![service("http", 80)])
            .next(&me([127, 0, 0, 1], 2));
        assert_eq!(record.seq, 42);
        assert_eq!(record.addrs, vec![IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(record.services, vec![service("http", 80)]);
    }

    #[test]
    fn only_a_real_change_publishes() {
        let record =
            Published::initial(&me([127, 0, 0, 1], 1), 0, vec![]).next(&me([127, 0, 0, 1], 1));
        assert_eq!(record.changed_for(&me([127, 0, 0, 1], 1)), None);
        assert_eq!(record.with_services(vec![]), None);
        let moved = record.changed_for(&me([127, 0, 0, 2], 2)).unwrap();
        assert_eq!((moved.seq, moved.generation), (2, 2));
        let with = moved.with_services(vec![service("http", 80)]).unwrap();
        assert_eq!(with.seq, 3);
    }

    proptest! {
        #[test]
        fn seqs_only_grow(changes in proptest::collection::vec((0u8..3, 1u64..4, 0u16..3), 1..30)) {
            let mut record = Published::initial(&me([127, 0, 0, 1], 1), 0, vec![]);
            for (ip, generation, port) in changes {
                let services = if port == 0 { vec![] } else { vec![service("http", port)] };
                if let Some(next) = record.changed_for(&me([127, 0, 0, ip], generation)) {
                    prop_assert!(next.seq > record.seq);
                    record = next;
                }
                if let Some(next) = record.with_services(services) {
                    prop_assert!(next.seq > record.seq);
                    record = next;
                }
            }
        }
    }
}
