//! DNS from the network: a UDP datagram through the dns role's answer path ([`WireAnswers`]), and
//! a TCP stream cut into length-prefixed messages, each answered by the handler hickory-server
//! calls for TCP ([`Handler`]), over a zone with hosts, services and members.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use hivemind_common::records::{HostRecord, Service};
use hivemind_common::role::{Membership, Peer, PeerState};
use hivemind_common::MemberId;
use hivemind_dns_role::server::{Handler, QueryCounts};
use hivemind_dns_role::wire::WireAnswers;
use hivemind_dns_role::zone::Zone;

/// The zone every DNS target answers from: two hosts in two keygroups with addresses of both
/// families and services, and their members.
pub fn zone() -> Zone {
    let record = |raw: u64, host: &str, keygroup: &str, addrs: Vec<IpAddr>| HostRecord {
        member: MemberId::new(raw).expect("non-zero"),
        host: host.into(),
        keygroup: keygroup.into(),
        addrs,
        services: vec![
            Service {
                name: "http".into(),
                port: 8080,
                proto: "tcp".into(),
                tags: vec!["v1".into()],
                ..Default::default()
            },
            Service {
                name: "dns".into(),
                port: 53,
                proto: "udp".into(),
                tags: vec![],
                ..Default::default()
            },
        ],
        seq: 1,
        generation: 1,
        keygroup_version: 1,
    };
    let web = record(
        1,
        "web-1",
        "shop/prod/web",
        vec![IpAddr::from([10, 0, 0, 1])],
    );
    let db = record(
        2,
        "db-1",
        "shop/prod/db",
        vec![IpAddr::from([10, 0, 0, 2]), "fd00::2".parse().expect("ip")],
    );
    let peer = |raw: u64, name: &str| Peer {
        id: MemberId::new(raw).expect("non-zero"),
        name: name.into(),
        node: format!("node-{raw}"),
        roles: vec!["host".into()],
        http_addr: format!("10.0.0.{raw}:7700"),
        gossip_addr: format!("10.0.0.{raw}:7946"),
        generation: 1,
        state: PeerState::Alive,
    };
    let membership = Membership {
        epoch: 1,
        index: 9,
        peers: vec![peer(1, "web-1"), peer(2, "db-1")],
        nodes: vec![],
    };
    let ttls = BTreeMap::from([("shop/prod/web".to_string(), 30)]);
    Zone::build(
        &Name::from_ascii("hivemind.").expect("origin"),
        &[&web, &db],
        &ttls,
        &membership,
        1,
    )
}

/// One datagram: an answer, if any, is a response to the query's id that a resolver can parse
/// and that fits the largest UDP payload we honour.
pub fn udp(data: &[u8]) {
    let zone = zone();
    let wire = WireAnswers::build(&zone);
    let Some(answer) = wire.respond(&zone, data) else {
        return;
    };
    assert!(
        answer.len() <= 1232,
        "a UDP answer of {} bytes",
        answer.len()
    );
    assert_eq!(answer[..2], data[..2], "the answer's id is not the query's");
    assert!(answer[2] & 0x80 != 0, "the answer is not a response");
    if answer.len() > 12 {
        let parsed = Message::from_vec(&answer).expect("our answers parse");
        assert_eq!(parsed.metadata.message_type, MessageType::Response);
    }
}

/// Collects the answer hickory-server would write to the TCP stream.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Collector {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::new();
        let info = response.destructive_emit(&mut BinEncoder::new(&mut bytes))?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = bytes;
        Ok(info)
    }
}

/// A TCP stream: 2-byte big-endian lengths, each message answered in turn; every answer parses
/// and carries its query's id.
pub fn tcp(data: &[u8]) {
    let handler = Handler {
        zone: Arc::new(RwLock::new(Arc::new(zone()))),
        counts: Arc::new(QueryCounts::default()),
    };
    let src = SocketAddr::from(([127, 0, 0, 1], 5353));
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(message) = rest.get(2..2 + len) else {
            return; // a partial message: the stream waits for more
        };
        rest = &rest[2 + len..];
        let Ok(request) = Request::from_bytes(message.to_vec(), src, Protocol::Tcp) else {
            continue; // hickory-server answers FORMERR itself before our handler
        };
        let collector = Collector::default();
        futures::executor::block_on(
            handler.handle_request::<_, TokioTime>(&request, collector.clone()),
        );
        let answer = collector
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let parsed = Message::from_vec(&answer).expect("our TCP answers parse");
        assert_eq!(parsed.metadata.id, request.metadata.id);
    }
}
