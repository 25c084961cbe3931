//! The answers the dns role gives, computed when records change rather than when queries
//! arrive (DESIGN.md §6a): [`Zone::build`] turns the held host records and the membership into
//! a map from (name, type) to ready records; [`Zone::answer`] is a lookup. Sans IO.
//!
//! Names (DESIGN.md §6), under `--domain`:
//! - `<host>.<group>.<tenant>.<app>.` — A/AAAA of the host's record in that keygroup;
//! - `<host>.host.` — the same host, whichever keygroup holds it;
//! - `_<service>._<proto>.<group>.<tenant>.<app>.` — SRV per live host publishing the
//!   service, its A/AAAA in the additional section;
//! - `<member>.member.`, `<node>.node.`, `<role>.role.` — live members' advertised addresses;
//! - the apex NS: `<member>.ns.` for each live dns member, with glue A/AAAA, so a parent zone
//!   can delegate to them (AXFR and IXFR are refused).
//!
//! Unknown names inside the domain: NXDOMAIN with the SOA; known names without the asked type:
//! NOERROR, no answers, the SOA; names outside the domain: REFUSED.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hivemind_common::records::HostRecord;
use hivemind_common::role::Membership;

/// TTL of the member, node and role names (they follow the membership, not a keygroup).
pub const MEMBERSHIP_TTL: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Refused,
    NxDomain {
        soa: Record,
    },
    NoData {
        soa: Record,
    },
    Records {
        answers: Arc<[Record]>,
        additionals: Arc<[Record]>,
    },
}

#[derive(Debug, Clone)]
pub struct Zone {
    origin: LowerName,
    soa: Record,
    records: HashMap<(LowerName, RecordType), Arc<[Record]>>,
    additionals: HashMap<LowerName, Arc<[Record]>>,
    names: HashSet<LowerName>,
    empty: Arc<[Record]>,
}

/// `label` as one DNS label under `parent`, if it is one.
fn child(label: &str, parent: &Name) -> Option<Name> {
    if label.is_empty() || label.contains('.') {
        return None;
    }
    parent.prepend_label(label).ok()
}

fn addr_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

#[derive(Default)]
struct Builder {
    records: HashMap<(LowerName, RecordType), Vec<Record>>,
    additionals: HashMap<LowerName, Vec<Record>>,
    names: HashSet<LowerName>,
}

impl Builder {
    fn add(&mut self, record: Record) {
        let name = LowerName::from(&record.name);
        // Every ancestor up to the origin exists too (empty non-terminals answer NODATA).
        let mut ancestor = record.name.clone();
        while ancestor.num_labels() > 0 {
            if !self.names.insert(LowerName::from(&ancestor)) {
                break;
            }
            ancestor = ancestor.base_name();
        }
        let list = self
            .records
            .entry((name, record.record_type()))
            .or_default();
        if !list.contains(&record) {
            list.push(record);
        }
    }

    fn addrs(&mut self, name: &Name, ttl: u32, addrs: &[IpAddr]) {
        for ip in addrs {
            self.add(addr_record(name, ttl, *ip));
        }
    }
}

impl Zone {
    /// The zone for `origin` (e.g. `hivemind.`) from the held `records` (with each keygroup's
    /// TTL in `ttls`) and the live `membership`; `serial` versions the SOA.
    pub fn build(
        origin: &Name,
        records: &[&HostRecord],
        ttls: &BTreeMap<String, u32>,
        membership: &Membership,
        serial: u32,
    ) -> Self {
        let mut b = Builder::default();
        // Delegation (§6i): the apex NS names every live dns member as `<name>.ns.<domain>`,
        // with its advertised address as glue; the SOA's MNAME is the first of them by name.
        let ns_label = child("ns", origin);
        let mut servers: Vec<(Name, IpAddr)> = membership
            .performing("dns")
            .filter_map(|peer| {
                let addr = peer.http_addr.parse::<std::net::SocketAddr>().ok()?;
                let name = ns_label.as_ref().and_then(|l| child(&peer.name, l))?;
                Some((name, addr.ip()))
            })
            .collect();
        servers.sort();
        let ns = servers
            .first()
            .map(|(name, _)| name.clone())
            .or_else(|| ns_label.clone())
            .unwrap_or_else(|| origin.clone());
        for (name, ip) in &servers {
            b.add(Record::from_rdata(
                origin.clone(),
                MEMBERSHIP_TTL,
                RData::NS(NS(name.clone())),
            ));
            b.addrs(name, MEMBERSHIP_TTL, &[*ip]);
            let glue = b.additionals.entry(LowerName::from(origin)).or_default();
            glue.push(addr_record(name, MEMBERSHIP_TTL, *ip));
        }
        let hostmaster = child("hostmaster", origin).unwrap_or_else(|| origin.clone());
        let soa = Record::from_rdata(
            origin.clone(),
            MEMBERSHIP_TTL,
            RData::SOA(SOA::new(
                ns,
                hostmaster,
                serial,
                60,
                30,
                600,
                MEMBERSHIP_TTL,
            )),
        );
        b.names.insert(LowerName::from(origin));
        let host_label = child("host", origin);
        for record in records {
            let ttl = ttls
                .get(&record.keygroup)
                .copied()
                .unwrap_or(MEMBERSHIP_TTL);
            let mut parts = record.keygroup.split('/');
            let (Some(app), Some(tenant), Some(group)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(group_name) = child(app, origin)
                .and_then(|n| child(tenant, &n))
                .and_then(|n| child(group, &n))
            else {
                continue;
            };
            let Some(host_name) = child(&record.host, &group_name) else {
                continue;
            };
            b.addrs(&host_name, ttl, &record.addrs);
            if let Some(short) = host_label.as_ref().and_then(|h| child(&record.host, h)) {
                b.addrs(&short, ttl, &record.addrs);
            }
            // A critical instance leaves SRV answers; the host's own A/AAAA stay (§6g).
            for service in record.services.iter().filter(|s| s.serves()) {
                let srv_name = child(&format!("_{}", service.proto), &group_name)
                    .and_then(|n| child(&format!("_{}", service.name), &n));
                let Some(srv_name) = srv_name else { continue };
                b.add(Record::from_rdata(
                    srv_name.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, 0, service.port, host_name.clone())),
                ));
                let extra = b.additionals.entry(LowerName::from(&srv_name)).or_default();
                for ip in &record.addrs {
                    let r = addr_record(&host_name, ttl, *ip);
                    if !extra.contains(&r) {
                        extra.push(r);
                    }
                }
            }
        }
        let member_label = child("member", origin);
        let node_label = child("node", origin);
        let role_label = child("role", origin);
        for peer in membership.live() {
            let Ok(addr) = peer.http_addr.parse::<std::net::SocketAddr>() else {
                continue;
            };
            let ip = [addr.ip()];
            if let Some(n) = member_label.as_ref().and_then(|l| child(&peer.name, l)) {
                b.addrs(&n, MEMBERSHIP_TTL, &ip);
            }
            if let Some(n) = node_label.as_ref().and_then(|l| child(&peer.node, l)) {
                b.addrs(&n, MEMBERSHIP_TTL, &ip);
            }
            for role in &peer.roles {
                if let Some(n) = role_label.as_ref().and_then(|l| child(role, l)) {
                    b.addrs(&n, MEMBERSHIP_TTL, &ip);
                }
            }
        }
        Self {
            origin: LowerName::from(origin),
            soa,
            records: b
                .records
                .into_iter()
                .map(|(k, v)| (k, Arc::from(v)))
                .collect(),
            additionals: b
                .additionals
                .into_iter()
                .map(|(k, v)| (k, Arc::from(v)))
                .collect(),
            names: b.names,
            empty: Arc::from(Vec::new()),
        }
    }

    pub fn answer(&self, name: &LowerName, qtype: RecordType) -> Answer {
        // Zone transfers are not offered: the zone is computed from the membership and records,
        // and secondaries would only serve it stale.
        if !self.origin.zone_of(name) || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Answer::Refused;
        }
        if qtype == RecordType::SOA && *name == self.origin {
            return Answer::Records {
                answers: Arc::from(vec![self.soa.clone()]),
                additionals: self.empty.clone(),
            };
        }
        let answers: Arc<[Record]> = if qtype == RecordType::ANY {
            self.records
                .iter()
                .filter(|((n, _), _)| n == name)
                .flat_map(|(_, r)| r.iter().cloned())
                .collect::<Vec<_>>()
                .into()
        } else {
            // The hot path: one hash lookup and a reference count, no copies.
            self.records
                .get(&(name.clone(), qtype))
                .cloned()
                .unwrap_or_else(|| self.empty.clone())
        };
        if !answers.is_empty() {
            let additionals = self
                .additionals
                .get(name)
                .cloned()
                .unwrap_or_else(|| self.empty.clone());
            return Answer::Records {
                answers,
                additionals,
            };
        }
        if self.names.contains(name) {
            Answer::NoData {
                soa: self.soa.clone(),
            }
        } else {
            Answer::NxDomain {
                soa: self.soa.clone(),
            }
        }
    }

    /// Every (name, type) with records, with the additional records of that name.
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = ((LowerName, RecordType), &[Record], &[Record])> + '_ {
        self.records.iter().map(|((name, rtype), records)| {
            let additionals = self.additionals.get(name).map_or(&[][..], |a| &a[..]);
            ((name.clone(), *rtype), &records[..], additionals)
        })
    }

    /// Every name with its records, for `GET /v1/roles/dns/records` and debugging.
    pub fn len(&self) -> usize {
        self.records.values().map(|r| r.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::records::Service;
    use hivemind_common::role::{Peer, PeerState};
    use hivemind_common::MemberId;

    fn origin() -> Name {
        Name::from_ascii("hivemind.").unwrap()
    }

    fn lower(name: &str) -> LowerName {
        LowerName::from(&Name::from_ascii(name).unwrap())
    }

    fn record(host: &str, ip: [u8; 4], services: Vec<Service>) -> HostRecord {
        HostRecord {
            member: MemberId::new(7).unwrap(),
            host: host.into(),
            keygroup: "shop/eu/hosts".into(),
            addrs: vec![IpAddr::from(ip)],
            services,
            seq: 1,
            generation: 1,
            keygroup_version: 1,
        }
    }

    fn membership() -> Membership {
        Membership {
            epoch: 1,
            index: 9,
            peers: vec![Peer {
                id: MemberId::new(3).unwrap(),
                name: "ns-1".into(),
                node: "dns-a".into(),
                roles: vec!["dns".into()],
                http_addr: "127.0.0.3:7700".into(),
                gossip_addr: "127.0.0.3:7701".into(),
                generation: 1,
                state: PeerState::Alive,
            }],
            nodes: vec![],
        }
    }

    fn zone(records: &[HostRecord]) -> Zone {
        let ttls = BTreeMap::from([("shop/eu/hosts".to_string(), 30)]);
        let refs: Vec<&HostRecord> = records.iter().collect();
        Zone::build(&origin(), &refs, &ttls, &membership(), 1)
    }

    fn addrs(answer: Answer) -> Vec<String> {
        match answer {
            Answer::Records { answers, .. } => answers
                .iter()
                .map(|r| format!("{} {}", r.ttl, r.data))
                .collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    #[test]
    fn both_host_name_forms_resolve_with_the_keygroup_ttl() {
        let z = zone(&[record("web-1", [10, 0, 0, 1], vec![])]);
        assert_eq!(
            addrs(z.answer(&lower("web-1.hosts.eu.shop.hivemind."), RecordType::A)),
            ["30 10.0.0.1"]
        );
        assert_eq!(
            addrs(z.answer(&lower("WEB-1.host.hivemind."), RecordType::A)),
            ["30 10.0.0.1"]
        );
    }

    #[test]
    fn a_critical_instance_leaves_srv_answers_and_its_host_stays() {
        use hivemind_common::records::{CheckStatus, Health};
        let service = |host: &str, status| Service {
            name: "http".into(),
            port: 8080,
            proto: "tcp".into(),
            checks: vec![CheckStatus {
                id: "service:http".into(),
                name: format!("{host} check"),
                status,
                output: String::new(),
            }],
            ..Default::default()
        };
        let z = zone(&[
            record(
                "web-1",
                [10, 0, 0, 1],
                vec![service("web-1", Health::Critical)],
            ),
            record(
                "web-2",
                [10, 0, 0, 2],
                vec![service("web-2", Health::Warning)],
            ),
        ]);
        match z.answer(
            &lower("_http._tcp.hosts.eu.shop.hivemind."),
            RecordType::SRV,
        ) {
            Answer::Records { answers, .. } => {
                let targets: Vec<String> = answers.iter().map(|a| a.data.to_string()).collect();
                assert_eq!(targets.len(), 1, "{targets:?}");
                assert!(
                    targets[0].contains("web-2"),
                    "a warning instance still serves"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            addrs(z.answer(&lower("web-1.hosts.eu.shop.hivemind."), RecordType::A)),
            ["30 10.0.0.1"],
            "the host's own address stays"
        );
    }

    #[test]
    fn srv_answers_carry_the_targets_addresses() {
        let http = Service {
            name: "http".into(),
            port: 8080,
            proto: "tcp".into(),
            tags: vec![],
            ..Default::default()
        };
        let z = zone(&[record("web-1", [10, 0, 0, 1], vec![http])]);
        match z.answer(
            &lower("_http._tcp.hosts.eu.shop.hivemind."),
            RecordType::SRV,
        ) {
            Answer::Records {
                answers,
                additionals,
            } => {
                assert_eq!(answers.len(), 1);
                assert!(answers[0]
                    .data
                    .to_string()
                    .contains("8080 web-1.hosts.eu.shop.hivemind."));
                assert_eq!(additionals.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_names_are_nxdomain_and_foreign_names_refused() {
        let z = zone(&[record("web-1", [10, 0, 0, 1], vec![])]);
        assert!(matches!(
            z.answer(&lower("web-2.host.hivemind."), RecordType::A),
            Answer::NxDomain { .. }
        ));
        assert!(matches!(
            z.answer(&lower("web-1.host.hivemind."), RecordType::AAAA),
            Answer::NoData { .. }
        ));
        assert!(matches!(
            z.answer(&lower("hosts.eu.shop.hivemind."), RecordType::A),
            Answer::NoData { .. }
        ));
        assert_eq!(
            z.answer(&lower("example.com."), RecordType::A),
            Answer::Refused
        );
    }

    #[test]
    fn membership_names_follow_live_members() {
        let z = zone(&[]);
        assert_eq!(
            addrs(z.answer(&lower("ns-1.member.hivemind."), RecordType::A)),
            ["5 127.0.0.3"]
        );
        assert_eq!(
            addrs(z.answer(&lower("dns-a.node.hivemind."), RecordType::A)),
            ["5 127.0.0.3"]
        );
        assert_eq!(
            addrs(z.answer(&lower("dns.role.hivemind."), RecordType::A)),
            ["5 127.0.0.3"]
        );
    }

    #[test]
    fn the_apex_names_each_live_dns_member_with_glue_and_refuses_transfers() {
        let mut members = membership();
        let mut second = members.peers[0].clone();
        second.id = MemberId::new(4).unwrap();
        second.name = "ns-0".into();
        second.http_addr = "[::1]:7700".into();
        let mut host = second.clone();
        host.id = MemberId::new(5).unwrap();
        host.name = "web".into();
        host.roles = vec!["host".into()];
        let mut dead = second.clone();
        dead.id = MemberId::new(6).unwrap();
        dead.name = "ns-9".into();
        dead.state = PeerState::Failed;
        members.peers.extend([second, host, dead]);
        let z = Zone::build(&origin(), &[], &BTreeMap::new(), &members, 1);
        match z.answer(&lower("hivemind."), RecordType::NS) {
            Answer::Records {
                answers,
                additionals,
            } => {
                let names: Vec<String> = answers.iter().map(|a| a.data.to_string()).collect();
                assert_eq!(names, ["ns-0.ns.hivemind.", "ns-1.ns.hivemind."]);
                let glue: Vec<String> = additionals
                    .iter()
                    .map(|a| format!("{} {}", a.name, a.data))
                    .collect();
                assert_eq!(
                    glue,
                    ["ns-0.ns.hivemind. ::1", "ns-1.ns.hivemind. 127.0.0.3"]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            addrs(z.answer(&lower("ns-1.ns.hivemind."), RecordType::A)),
            ["5 127.0.0.3"]
        );
        match z.answer(&lower("hivemind."), RecordType::SOA) {
            Answer::Records { answers, .. } => {
                assert!(answers[0]
                    .data
                    .to_string()
                    .starts_with("ns-0.ns.hivemind. "))
            }
            other => panic!("{other:?}"),
        }
        for transfer in [RecordType::AXFR, RecordType::IXFR] {
            assert_eq!(z.answer(&lower("hivemind."), transfer), Answer::Refused);
        }
    }
}
