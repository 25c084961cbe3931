//! Seed inputs for every target: real messages made by the code that sends them (a foca
//! exchange, encoded internal requests, DNS queries for every name of the fuzz zone, the API's
//! documented bodies, the deploy directory's config files, a snapshot of a registry with
//! members, keys and keygroups). The committed corpora start from these.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hivemind_common::backup::BackupOp;
use hivemind_common::records::{self, HostRecord};
use hivemind_common::{encode, MemberId};
use hivemind_control_plane::bootstrap::Candidate;
use hivemind_control_plane::member_requests::{
    AclRequest, KeygroupChanges, MemberCall, MemberRequest,
};
use hivemind_control_plane::network::FramedCall;
use hivemind_control_plane::ops::{FeedRequest, JoinRequest};
use hivemind_control_plane::pre_vote::PreVoteRequest;
use hivemind_control_plane::registry::{
    AclOp, Actor, Command, KeygroupDelta, MemberInfo, Registry,
};
use hivemind_control_plane::store::{encode_snapshot_file, SmData};
use hivemind_control_plane::types::{Entry, TypeConfig};
use hivemind_member::gossip::Sealer;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote};

use crate::{dns, gossip, internal};

/// A member's request as it travels (no client's token).
fn call(request: MemberRequest) -> MemberCall {
    MemberCall {
        request,
        client_token: None,
    }
}

/// The seeds of the target called `name` (empty for an unknown name).
pub fn of(name: &str) -> Vec<Vec<u8>> {
    match name {
        "gossip_packet" => gossip_packets(),
        "internal_request" => internal_requests(),
        "stream_frames" => stream_frames(),
        "dns_udp" => dns_queries(),
        "dns_tcp" => dns_queries()
            .into_iter()
            .map(|q| {
                let mut framed = (q.len() as u16).to_be_bytes().to_vec();
                framed.extend(q);
                framed
            })
            .collect(),
        "http_json" => json_bodies(),
        "config_toml" => config_files(),
        "snapshot_file" => vec![snapshot_file()],
        _ => Vec::new(),
    }
}

/// The packets of an announce and its answer, plain and sealed with [`gossip::KEY`].
fn gossip_packets() -> Vec<Vec<u8>> {
    let mut a = gossip::member(3);
    let mut b = gossip::member(1);
    let mut runtime_a = foca::AccumulatingRuntime::new();
    let mut runtime_b = foca::AccumulatingRuntime::new();
    let mut packets = Vec::new();
    a.announce(gossip::identity(1), &mut runtime_a)
        .expect("announce");
    for _ in 0..3 {
        while let Some((_, data)) = runtime_a.to_send() {
            let _ = b.handle_data(&data, &mut runtime_b);
            packets.push(data.to_vec());
        }
        while let Some((_, data)) = runtime_b.to_send() {
            let _ = a.handle_data(&data, &mut runtime_a);
            packets.push(data.to_vec());
        }
    }
    let sealer = Sealer::new(Some(gossip::KEY));
    let sealed: Vec<Vec<u8>> = packets.iter().map(|p| sealer.seal([1; 12], p)).collect();
    packets.extend(sealed);
    packets
}

fn info(raw: u64, name: &str, roles: &[&str]) -> MemberInfo {
    MemberInfo {
        id: MemberId::new(raw).expect("non-zero"),
        name: name.into(),
        node: format!("node-{raw}"),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        http_addr: format!("10.0.0.{raw}:7700"),
        gossip_addr: format!("10.0.0.{raw}:7701"),
        generation: 1,
        control_plane: raw <= 3,
    }
}

/// A command of every kind, in an order that applies cleanly.
pub fn commands() -> Vec<Command> {
    let kg = "shop/prod/web".to_string();
    vec![
        Command::Join {
            member: info(1, "cp1", &["host"]),
            epoch: None,
        },
        Command::Join {
            member: info(4, "web-1", &["host", "dns"]),
            epoch: Some(1),
        },
        Command::KvPut {
            key: "app/x".into(),
            value: b"1".to_vec(),
            cas: None,
        },
        Command::KvPut {
            key: "app/x".into(),
            value: b"2".to_vec(),
            cas: Some(3),
        },
        Command::KeygroupCreate {
            name: kg.clone(),
            creator: "node-4".into(),
            ttl_secs: 30,
            open: false,
            secret: vec![9; 32],
        },
        Command::KeygroupUpdate {
            name: kg.clone(),
            by: Actor::Admin,
            deltas: vec![KeygroupDelta::AddReplica("node-1".into())],
        },
        Command::Claim {
            node: "node-4".into(),
            keygroup: kg.clone(),
            machine: MemberId::new(4).expect("non-zero"),
        },
        Command::Batch(vec![
            Command::KvDelete {
                key: "app/x".into(),
                cas: None,
            },
            Command::KvPut {
                key: "app/y".into(),
                value: b"3".to_vec(),
                cas: Some(0),
            },
        ]),
        Command::UpdateAddress {
            id: MemberId::new(4).expect("non-zero"),
            generation: 1,
            http_addr: "10.0.0.5:7700".into(),
            gossip_addr: "10.0.0.5:7701".into(),
        },
        Command::Release {
            node: "node-4".into(),
            keygroup: kg.clone(),
            machine: MemberId::new(4).expect("non-zero"),
        },
        Command::Fail {
            id: MemberId::new(4).expect("non-zero"),
            generation: 1,
        },
        Command::KeygroupDelete {
            name: kg,
            by: Actor::Node("node-4".into()),
        },
        Command::Leave {
            id: MemberId::new(1).expect("non-zero"),
        },
        Command::EpochBump {
            reason: "seed".into(),
        },
        Command::TrimFeed { through: 3 },
        Command::Backup {
            member: MemberId::new(4).expect("non-zero"),
            now_ms: 1_000,
            op: BackupOp::Offer {
                capacity: 1 << 30,
                stored: 0,
            },
        },
        Command::Backup {
            member: MemberId::new(1).expect("non-zero"),
            now_ms: 2_000,
            op: BackupOp::Reserve {
                spaces: vec![(MemberId::new(4).expect("non-zero"), 1 << 20)],
                ttl_ms: 60_000,
            },
        },
        Command::Backup {
            member: MemberId::new(4).expect("non-zero"),
            now_ms: 3_000,
            op: BackupOp::Consume {
                reservation: 1,
                bytes: 1 << 19,
            },
        },
        Command::Acl(AclOp::PolicySet {
            name: "app-read".into(),
            rules: "cp = \"read\"\n[kv]\n\"app/\" = \"read\"\n".into(),
        }),
        Command::Acl(AclOp::TokenCreate {
            accessor: "7e2d3939-4686-466a-8853-a0c39d3807db".into(),
            secret_hash: [7; 32],
            policies: vec!["app-read".into()],
            description: "seed".into(),
            expires_at_ms: Some(1_900_000_000_000),
        }),
    ]
}

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

fn append_request() -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 7)),
        entries: commands()
            .into_iter()
            .take(3)
            .enumerate()
            .map(|(i, c)| entry(8 + i as u64, c))
            .collect(),
        leader_commit: Some(LogId::new(CommittedLeaderId::new(2, 1), 7)),
    }
}

fn with_kind(kind: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend(body);
    out
}

fn internal_requests() -> Vec<Vec<u8>> {
    let log_id = Some(LogId::new(CommittedLeaderId::new(2, 1), 7));
    let all_commands: Vec<u8> = commands().iter().flat_map(encode).collect();
    vec![
        with_kind(0, encode(&append_request())),
        with_kind(2, encode(&VoteRequest::new(Vote::new(3, 2), log_id))),
        with_kind(
            6,
            encode(&PreVoteRequest {
                candidate: 2,
                last_log: log_id,
            }),
        ),
        with_kind(8, all_commands),
        with_kind(
            10,
            encode(&FeedRequest {
                after: 12,
                epoch: Some(1),
                wait_ms: 1000,
            }),
        ),
        with_kind(
            12,
            encode(&Some(Candidate {
                id: 2,
                name: "cp2".into(),
                http_addr: "10.0.0.2:7700".into(),
                initialized: false,
            })),
        ),
        with_kind(
            19,
            encode(&call(MemberRequest::UpdateKeygroup {
                name: "app/t/hosts".into(),
                by: Actor::Node("web".into()),
                changes: KeygroupChanges {
                    add_replicas: vec!["ns".into()],
                    ttl: Some(9),
                    rotate_secret: true,
                    ..Default::default()
                },
            })),
        ),
        with_kind(
            19,
            encode(&MemberCall {
                request: MemberRequest::Acl(AclRequest::SetPolicy {
                    name: "app-read".into(),
                    rules: "[kv]\n\"app/\" = \"read\"\n".into(),
                }),
                // A client's token, forwarded by a member outside the control plane.
                client_token: Some("0b6a1c52-6f7e-4d2b-9a3c-1f2e3d4c5b6a".into()),
            }),
        ),
        with_kind(
            19,
            encode(&call(MemberRequest::Claim {
                node: "ns".into(),
                keygroup: "app/t/hosts".into(),
                machine: MemberId::new(4).expect("nonzero"),
                seen: 17,
            })),
        ),
        with_kind(
            21,
            hivemind_backup_role::wire::upload_parts(
                &hivemind_backup_role::wire::UploadHeader {
                    owner: "laptop".into(),
                    reservation: 3,
                    chunks: vec![(hivemind_common::backup::ChunkId([7; 32]), 3)],
                },
                vec![bytes::Bytes::from_static(&[1, 2, 3])],
            )
            .concat(),
        ),
        with_kind(23, {
            let mut leases = hivemind_backup_role::leases::Leases::default();
            leases.add(
                "laptop",
                hivemind_common::backup::ChunkId([7; 32]),
                3,
                1_000,
                60_000,
            );
            encode(&leases)
        }),
        with_kind(
            16,
            encode(&JoinRequest {
                member: info(5, "db-1", &["host"]),
                token: Some("t0ken".into()),
                cluster_proof: None,
                epoch: None,
            }),
        ),
    ]
}

fn stream_frames() -> Vec<Vec<u8>> {
    let length_delimited = |payload: Vec<u8>| {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend(payload);
        out
    };
    let call = FramedCall {
        path: "/internal/v1/write".into(),
        body: encode(&commands()[2]),
    };
    let mut two = length_delimited(encode(&call));
    two.extend(length_delimited(encode(&append_request())));
    let record = HostRecord {
        member: MemberId::new(4).expect("non-zero"),
        host: "web-1".into(),
        keygroup: "shop/prod/web".into(),
        addrs: vec![[10, 0, 0, 4].into()],
        services: vec![],
        seq: 3,
        generation: 1,
        keygroup_version: 2,
    };
    let sealed = records::seal(&internal::RECORD_SECRET, [3; 12], &record).expect("seal");
    let mut record_stream = records::frame(&sealed);
    record_stream.extend(records::frame(&sealed));
    vec![two, record_stream]
}

/// Every (name, type) of the fuzz zone as a plain query, an EDNS query and a mixed-case query,
/// and queries for names the zone does not have.
fn dns_queries() -> Vec<Vec<u8>> {
    let zone = dns::zone();
    let query = |name: Name, rtype: RecordType, edns: bool| {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        let mut q = Query::query(name, rtype);
        q.set_query_class(DNSClass::IN);
        m.add_query(q);
        if edns {
            m.edns = Some(Edns::new());
        }
        m.to_vec().expect("a query encodes")
    };
    let mut out = Vec::new();
    for ((name, rtype), _, _) in zone.entries() {
        let name = Name::from(name);
        out.push(query(name.clone(), rtype, false));
        out.push(query(name.clone(), rtype, true));
        let upper = Name::from_ascii(name.to_ascii().to_uppercase()).expect("name");
        out.push(query(upper, rtype, false));
    }
    for missing in ["nope.hivemind.", "example.org.", "hivemind."] {
        let name = Name::from_ascii(missing).expect("name");
        out.push(query(name.clone(), RecordType::A, false));
        out.push(query(name, RecordType::SOA, true));
    }
    out
}

fn json_bodies() -> Vec<Vec<u8>> {
    let bodies: [(u8, &str); 10] = [
        (0, r#"{"addr": "10.0.0.4:7700", "voter": true}"#),
        (
            0,
            r#"{"addr": "10.0.0.4:7700", "voter": false, "id": "00000000000000a1"}"#,
        ),
        (1, r#"{"reason": "restore from backup"}"#),
        (2, r#"{"ttl": 30, "open": true}"#),
        (
            3,
            r#"{"add_replicas": ["node-2"], "remove_triggers": ["node-3"], "rotate_secret": true}"#,
        ),
        (3, r#"{"ttl": 60, "open": false}"#),
        (
            4,
            r#"[{"name": "http", "port": 8080, "proto": "tcp", "tags": ["v1"]}]"#,
        ),
        (4, r#"[{"name": "dns", "port": 53, "proto": "udp"}]"#),
        (
            4,
            r#"[{"Name": "api", "ID": "api-1", "Port": 8080, "Meta": {"env": "prod"}, "Check": {"HTTP": "http://127.0.0.1:8080/health", "Interval": "1s", "DeregisterCriticalServiceAfter": "1m"}, "Checks": [{"TCP": "127.0.0.1:8080", "Interval": 2000000000}]}]"#,
        ),
        (
            4,
            r#"[{"name": "worker", "port": 9000, "checks": [{"ttl": "30s", "status": "passing", "failures_before_critical": 3}]}]"#,
        ),
    ];
    bodies
        .iter()
        .map(|(route, body)| with_kind(*route, body.as_bytes().to_vec()))
        .collect()
}

fn config_files() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let mut out: Vec<Vec<u8>> = [
        "control-plane.toml",
        "dns.toml",
        "host.toml",
        "trigger.toml",
    ]
    .iter()
    .filter_map(|f| std::fs::read(format!("{dir}/{f}")).ok())
    .collect();
    out.push(
        b"name = \"web-1\"\nroles = [\"host\"]\nhttp_port = 7700\ngossip_profile = \"lan\"\nlog_level = \"debug\"\n"
            .to_vec(),
    );
    out
}

fn snapshot_file() -> Vec<u8> {
    let mut registry = Registry::default();
    for (i, command) in commands().iter().enumerate() {
        let _ = registry.apply(i as u64 + 1, command);
    }
    let last = LogId::new(CommittedLeaderId::new(2, 1), 13);
    let data = SmData {
        last_applied: Some(last),
        last_membership: StoredMembership::default(),
        registry,
    };
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::default(),
        snapshot_id: "2-1-13".into(),
    };
    encode_snapshot_file(meta, &data)
}
