//! What the catalog answers (sans IO): the service instances of the live hosts' records, and
//! Consul's JSON shapes for nodes, services and health entries. An instance's checks are the
//! node's own `serfHealth` (its SWIM state) and the service's checks as its host reported them
//! (DESIGN.md §6g).

use std::collections::BTreeMap;

use hivemind_common::records::{CheckStatus, Health, HostRecord};
use hivemind_common::role::{Membership, Peer};
use serde_json::{json, Value};

use super::DATACENTER;

/// A service instance: one host publishing one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub member: hivemind_common::MemberId,
    pub node: String,
    pub node_id: String,
    /// The service's address: its own if registered with one, else its host's.
    pub address: String,
    pub service: String,
    /// Consul's ServiceID: unique on its node.
    pub id: String,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub checks: Vec<CheckStatus>,
}

/// The live hosts' service instances: the newest record of every live host, each service
/// instance once per host (a host in several keygroups publishes the same service once).
pub fn instances(records: &[HostRecord], membership: &Membership) -> Vec<Instance> {
    let mut out: BTreeMap<(String, String), Instance> = BTreeMap::new();
    for record in records {
        let Some(peer) = membership.live().find(|p| p.id == record.member) else {
            continue;
        };
        let host_address = record
            .addrs
            .first()
            .map_or_else(|| host_of(&peer.gossip_addr), |a| a.to_string());
        for s in &record.services {
            let key = (peer.name.clone(), s.id().to_string());
            out.entry(key).or_insert_with(|| Instance {
                member: peer.id,
                node: peer.name.clone(),
                node_id: peer.id.to_string(),
                address: s
                    .address
                    .map_or_else(|| host_address.clone(), |a| a.to_string()),
                service: s.name.clone(),
                id: s.id().to_string(),
                tags: s.tags.clone(),
                meta: s.meta.clone(),
                port: s.port,
                checks: s.checks.clone(),
            });
        }
    }
    out.into_values().collect()
}

/// The address part of `host:port`.
pub fn host_of(addr: &str) -> String {
    addr.parse::<std::net::SocketAddr>()
        .map_or_else(|_| addr.to_string(), |a| a.ip().to_string())
}

pub fn node_json(peer: &Peer, index: u64) -> Value {
    let address = host_of(&peer.gossip_addr);
    json!({
        "ID": peer.id.to_string(),
        "Node": peer.name,
        "Address": address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": {"lan": address, "wan": address},
        "Meta": {"hivemind-node": peer.node, "hivemind-roles": peer.roles.join(",")},
        "CreateIndex": index,
        "ModifyIndex": index,
    })
}

pub fn service_json(i: &Instance, index: u64) -> Value {
    json!({
        "ID": i.id,
        "Service": i.service,
        "Tags": i.tags,
        "Address": i.address,
        "Port": i.port,
        "Meta": i.meta,
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": false,
        "CreateIndex": index,
        "ModifyIndex": index,
    })
}

/// `GET /v1/catalog/service/{name}`'s entry for one instance.
pub fn catalog_service_json(i: &Instance, index: u64) -> Value {
    json!({
        "ID": i.node_id,
        "Node": i.node,
        "Address": i.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": {"lan": i.address, "wan": i.address},
        "NodeMeta": {},
        "ServiceKind": "",
        "ServiceID": i.id,
        "ServiceName": i.service,
        "ServiceTags": i.tags,
        "ServiceAddress": i.address,
        "ServicePort": i.port,
        "ServiceMeta": i.meta,
        "ServiceWeights": {"Passing": 1, "Warning": 1},
        "ServiceEnableTagOverride": false,
        "CreateIndex": index,
        "ModifyIndex": index,
    })
}

/// A node's health check from SWIM's view of it: suspected = `warning`, declared down but not
/// yet failed in the registry = `critical`, else `passing`.
pub fn check_status(swim: Option<foca::State>) -> Health {
    match swim {
        Some(foca::State::Suspect) => Health::Warning,
        Some(foca::State::Down) => Health::Critical,
        _ => Health::Passing,
    }
}

/// The instance's checks in Consul's shape: the node's `serfHealth` (SWIM), then the service's.
pub fn checks_json(i: &Instance, node_health: Health, index: u64) -> Vec<Value> {
    let serf_output = if node_health == Health::Passing {
        "Agent alive and reachable"
    } else {
        "Agent not live or unreachable"
    };
    let check = |id: &str, name: &str, status: Health, output: &str, service: bool| {
        json!({
            "Node": i.node,
            "CheckID": id,
            "Name": name,
            "Status": status.as_str(),
            "Notes": "",
            "Output": output,
            "ServiceID": if service { i.id.as_str() } else { "" },
            "ServiceName": if service { i.service.as_str() } else { "" },
            "ServiceTags": if service { i.tags.clone() } else { Vec::new() },
            "Type": "",
            "CreateIndex": index,
            "ModifyIndex": index,
        })
    };
    std::iter::once(check(
        "serfHealth",
        "Serf Health Status",
        node_health,
        serf_output,
        false,
    ))
    .chain(
        i.checks
            .iter()
            .map(|c| check(&c.id, &c.name, c.status, &c.output, true)),
    )
    .collect()
}

/// Whether `?passing` keeps the instance: every check, the node's included, passing.
pub fn all_passing(i: &Instance, node_health: Health) -> bool {
    node_health == Health::Passing && i.checks.iter().all(|c| c.status == Health::Passing)
}

/// `GET /v1/health/service/{name}`'s entry: the node, the service, and its checks.
pub fn health_json(i: &Instance, peer: &Peer, index: u64, node_health: Health) -> Value {
    json!({
        "Node": node_json(peer, index),
        "Service": service_json(i, index),
        "Checks": checks_json(i, node_health, index),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::records::Service;
    use hivemind_common::role::PeerState;
    use hivemind_common::MemberId;

    fn peer(id: u64, name: &str, state: PeerState) -> Peer {
        Peer {
            id: MemberId::new(id).unwrap(),
            name: name.into(),
            node: name.into(),
            roles: vec!["host".into()],
            http_addr: format!("10.0.0.{id}:7700"),
            gossip_addr: format!("10.0.0.{id}:7701"),
            generation: 1,
            state,
        }
    }

    fn record(id: u64, keygroup: &str, services: &[(&str, u16)]) -> HostRecord {
        HostRecord {
            member: MemberId::new(id).unwrap(),
            host: format!("web-{id}"),
            keygroup: keygroup.into(),
            addrs: vec![format!("10.0.0.{id}").parse().unwrap()],
            services: services
                .iter()
                .map(|(name, port)| Service {
                    name: name.to_string(),
                    port: *port,
                    proto: "tcp".into(),
                    tags: vec!["v1".into()],
                    ..Default::default()
                })
                .collect(),
            seq: 1,
            generation: 1,
            keygroup_version: 1,
        }
    }

    fn membership() -> Membership {
        Membership {
            epoch: 1,
            index: 9,
            peers: vec![
                peer(1, "web-1", PeerState::Alive),
                peer(2, "web-2", PeerState::Failed),
            ],
            nodes: vec![],
        }
    }

    #[test]
    fn instances_are_the_live_hosts_services_once_each() {
        let membership = membership();
        let records = [
            record(1, "a/b/c", &[("web", 80), ("api", 90)]),
            record(1, "x/y/z", &[("web", 80)]),
            record(2, "a/b/c", &[("web", 80)]),
        ];
        let list = instances(&records, &membership);
        let got: Vec<(&str, &str, u16)> = list
            .iter()
            .map(|i| (i.node.as_str(), i.service.as_str(), i.port))
            .collect();
        assert_eq!(got, [("web-1", "api", 90), ("web-1", "web", 80)]);
        assert_eq!(list[1].id, "web", "the ServiceID is the service's id");
        assert_eq!(list[1].address, "10.0.0.1");
        let entry = health_json(&list[1], &membership.peers[0], 7, Health::Passing);
        assert_eq!(entry["Service"]["Service"], "web");
        assert_eq!(entry["Node"]["Node"], "web-1");
        assert_eq!(entry["Checks"][0]["Status"], "passing");
        assert_eq!(entry["Checks"][0]["Output"], "Agent alive and reachable");
        let entry = catalog_service_json(&list[1], 7);
        assert_eq!(entry["ServicePort"], 80);
        assert_eq!(entry["ServiceAddress"], "10.0.0.1");
        assert_eq!(check_status(None), Health::Passing);
        assert_eq!(check_status(Some(foca::State::Alive)), Health::Passing);
        assert_eq!(check_status(Some(foca::State::Suspect)), Health::Warning);
        assert_eq!(check_status(Some(foca::State::Down)), Health::Critical);
    }

    #[test]
    fn a_services_checks_follow_serf_health_and_passing_needs_them_all() {
        let membership = membership();
        let mut r = record(1, "a/b/c", &[("api", 90)]);
        r.services[0].id = "api-1".into();
        r.services[0].address = Some("10.9.9.9".parse().unwrap());
        r.services[0].checks = vec![CheckStatus {
            id: "service:api-1".into(),
            name: "Service 'api' check".into(),
            status: Health::Warning,
            output: "HTTP GET http://x/: 429".into(),
        }];
        let list = instances(&[r], &membership);
        let i = &list[0];
        assert_eq!((i.id.as_str(), i.address.as_str()), ("api-1", "10.9.9.9"));
        let checks = checks_json(i, Health::Passing, 3);
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[1]["CheckID"], "service:api-1");
        assert_eq!(checks[1]["Status"], "warning");
        assert_eq!(checks[1]["ServiceID"], "api-1");
        assert_eq!(checks[1]["ServiceName"], "api");
        assert_eq!(checks[1]["Node"], "web-1");
        assert_eq!(checks[1]["Output"], "HTTP GET http://x/: 429");
        assert!(
            !all_passing(i, Health::Passing),
            "a warning check is not passing"
        );
        let mut healthy = i.clone();
        healthy.checks[0].status = Health::Passing;
        assert!(all_passing(&healthy, Health::Passing));
        assert!(
            !all_passing(&healthy, Health::Warning),
            "the node's own check counts"
        );
    }
}
