//! What the nginx configuration is rendered from (sans IO): the live hosts' services, one entry
//! per (keygroup, service name, proto `tcp`), each with the endpoints of every live host that
//! publishes it, in a stable order so that the same records always render the same text.

use std::collections::BTreeMap;

use hivemind_common::records::HostRecord;
use hivemind_common::role::Membership;
use serde::Serialize;

/// One service as templates see it (`{name, keygroup, tags, endpoints}`; DESIGN.md §6b).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceModel {
    pub name: String,
    pub keygroup: String,
    /// An nginx-safe name for the upstream: `<keygroup with / as _>__<name>`.
    pub upstream: String,
    /// Every tag any endpoint carries, sorted, once.
    pub tags: Vec<String>,
    pub endpoints: Vec<Endpoint>,
}

/// One host serving a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub addr: String,
    pub port: u16,
}

/// The services of `records` whose host is alive in `membership`, grouped per (keygroup,
/// name); UDP services are left out (nginx's `http` upstreams are TCP).
pub fn services<'a>(
    records: impl IntoIterator<Item = &'a HostRecord>,
    membership: &Membership,
) -> Vec<ServiceModel> {
    let mut grouped: BTreeMap<(String, String), ServiceModel> = BTreeMap::new();
    for record in records {
        if !membership.live().any(|p| p.id == record.member) {
            continue;
        }
        let Some(addr) = record.addrs.first() else {
            continue;
        };
        // A critical instance leaves the upstreams (§6g); a service left with none is not
        // rendered at all (nginx refuses an empty upstream).
        for service in record
            .services
            .iter()
            .filter(|s| s.proto == "tcp" && s.serves())
        {
            let key = (record.keygroup.clone(), service.name.clone());
            let entry = grouped.entry(key).or_insert_with(|| ServiceModel {
                name: service.name.clone(),
                keygroup: record.keygroup.clone(),
                upstream: format!("{}__{}", record.keygroup.replace('/', "_"), service.name),
                tags: Vec::new(),
                endpoints: Vec::new(),
            });
            entry.endpoints.push(Endpoint {
                host: record.host.clone(),
                addr: service.address.as_ref().unwrap_or(addr).to_string(),
                port: service.port,
            });
            entry.tags.extend(service.tags.iter().cloned());
        }
    }
    grouped
        .into_values()
        .map(|mut s| {
            s.endpoints.sort();
            s.endpoints.dedup();
            s.tags.sort();
            s.tags.dedup();
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::records::Service;
    use hivemind_common::role::{Peer, PeerState};
    use hivemind_common::MemberId;

    fn record(member: u64, host: &str, ip: &str, services: &[(&str, u16, &str)]) -> HostRecord {
        HostRecord {
            member: MemberId::new(member).unwrap(),
            host: host.into(),
            keygroup: "app/t/hosts".into(),
            addrs: vec![ip.parse().unwrap()],
            services: services
                .iter()
                .map(|(name, port, proto)| Service {
                    name: name.to_string(),
                    port: *port,
                    proto: proto.to_string(),
                    tags: vec![format!("v{port}")],
                    ..Default::default()
                })
                .collect(),
            seq: 1,
            generation: 1,
            keygroup_version: 1,
        }
    }

    fn membership(alive: &[u64], failed: &[u64]) -> Membership {
        let peer = |id: u64, state| Peer {
            id: MemberId::new(id).unwrap(),
            name: format!("m{id}"),
            node: format!("m{id}"),
            roles: vec!["host".into()],
            http_addr: String::new(),
            gossip_addr: String::new(),
            generation: 1,
            state,
        };
        Membership {
            epoch: 1,
            index: 1,
            peers: alive
                .iter()
                .map(|id| peer(*id, PeerState::Alive))
                .chain(failed.iter().map(|id| peer(*id, PeerState::Failed)))
                .collect(),
            nodes: vec![],
        }
    }

    #[test]
    fn services_group_live_hosts_per_keygroup_and_name_in_a_stable_order() {
        let records = [
            record(
                2,
                "web-2",
                "10.0.0.2",
                &[("web", 8080, "tcp"), ("dns", 53, "udp")],
            ),
            record(
                1,
                "web-1",
                "10.0.0.1",
                &[("web", 8080, "tcp"), ("api", 9000, "tcp")],
            ),
            record(3, "web-3", "10.0.0.3", &[("web", 8081, "tcp")]),
        ];
        let model = services(&records, &membership(&[1, 2], &[3]));
        let names: Vec<&str> = model.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web"], "udp left out, sorted by name");
        let web = &model[1];
        assert_eq!(web.upstream, "app_t_hosts__web");
        let hosts: Vec<&str> = web.endpoints.iter().map(|e| e.host.as_str()).collect();
        assert_eq!(
            hosts,
            ["web-1", "web-2"],
            "the failed host is not an endpoint"
        );
        assert_eq!(web.tags, ["v8080"]);
        // The same records in another order give the same model.
        let mut reversed = records.clone();
        reversed.reverse();
        assert_eq!(services(&reversed, &membership(&[1, 2], &[3])), model);
    }

    #[test]
    fn a_service_whose_hosts_all_failed_is_gone() {
        let records = [record(1, "web-1", "10.0.0.1", &[("web", 80, "tcp")])];
        assert!(services(&records, &membership(&[], &[1])).is_empty());
    }

    #[test]
    fn critical_instances_leave_the_upstreams_and_a_service_address_is_used() {
        use hivemind_common::records::{CheckStatus, Health};
        let mut records = [
            record(1, "web-1", "10.0.0.1", &[("web", 80, "tcp")]),
            record(
                2,
                "web-2",
                "10.0.0.2",
                &[("web", 80, "tcp"), ("api", 90, "tcp")],
            ),
        ];
        let critical = CheckStatus {
            id: "service:web".into(),
            name: "c".into(),
            status: Health::Critical,
            output: String::new(),
        };
        records[0].services[0].checks.push(critical.clone());
        records[1].services[1].checks.push(critical);
        records[1].services[0].address = Some("10.9.9.9".parse().unwrap());
        let model = services(&records, &membership(&[1, 2], &[]));
        let names: Vec<&str> = model.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web"], "api has no serving instance: not rendered");
        let endpoints: Vec<(&str, &str)> = model[0]
            .endpoints
            .iter()
            .map(|e| (e.host.as_str(), e.addr.as_str()))
            .collect();
        assert_eq!(endpoints, [("web-2", "10.9.9.9")]);
    }
}
