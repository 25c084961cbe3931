//! The UDP answer path (DESIGN.md §6a): answers are built when records change, as finished
//! DNS messages keyed by (lower-case wire name, type); a query then costs a header check, a
//! name scan, one hash lookup and an id patch. Anything the fast path does not cover (EDNS,
//! several questions, names without records, garbage) takes the general path, which parses and
//! builds messages with hickory-proto. TCP is served by hickory-server from the same zone.
//! Sans IO: bytes in, bytes out.

use std::collections::HashMap;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Record};

use crate::zone::{Answer, Zone};

/// Largest UDP answer without EDNS (RFC 1035); larger ones are sent truncated (TC).
const PLAIN_UDP_LIMIT: usize = 512;
/// What we advertise and honour with EDNS.
const EDNS_UDP_LIMIT: u16 = 1232;

/// Finished answers, id 0, ready to be patched.
#[derive(Debug, Default)]
pub struct WireAnswers {
    answers: HashMap<(Vec<u8>, u16), Vec<u8>>,
}

/// The response code of a finished message (for counting).
pub fn rcode_of(message: &[u8]) -> ResponseCode {
    message
        .get(3)
        .map_or(ResponseCode::ServFail, |b| ResponseCode::from(0, b & 0x0f))
}

fn response(query: &Query, id: u16, code: ResponseCode) -> Message {
    let mut message = Message::new(id, MessageType::Response, OpCode::Query);
    message.metadata.authoritative = code != ResponseCode::Refused;
    message.metadata.response_code = code;
    message.add_query(query.clone());
    message
}

/// Encodes `message`; over `limit` bytes it is sent with the TC bit and no records instead.
fn encode(mut message: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = message.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    message.answers.clear();
    message.authorities.clear();
    message.additionals.clear();
    message.metadata.truncation = true;
    message.to_vec().ok()
}

/// The lower-case wire form of the question name at `buf[12..]`, and where the question ends
/// (after type and class); `None` for compression or anything unusual (general path).
fn question(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut at = 12;
    let mut name = Vec::with_capacity(32);
    loop {
        let len = *buf.get(at)? as usize;
        if len & 0xc0 != 0 {
            return None;
        }
        name.push(len as u8);
        at += 1;
        if len == 0 {
            break;
        }
        let label = buf.get(at..at + len)?;
        name.extend(label.iter().map(u8::to_ascii_lowercase));
        at += len;
        if name.len() > 255 {
            return None;
        }
    }
    buf.get(at..at + 4)?;
    Some((name, at + 4))
}

impl WireAnswers {
    /// Every (name, type) of `zone` with records, as a finished answer.
    pub fn build(zone: &Zone) -> Self {
        let mut answers = HashMap::new();
        for ((name, rtype), records, additionals) in zone.entries() {
            let query = Query::query(name.into(), rtype);
            let mut message = response(&query, 0, ResponseCode::NoError);
            message.answers = records.to_vec();
            message.additionals = additionals.to_vec();
            if let Some(bytes) = encode(message, PLAIN_UDP_LIMIT) {
                let Some((key, _)) = question(&bytes) else {
                    continue;
                };
                answers.insert((key, u16::from(rtype)), bytes);
            }
        }
        Self { answers }
    }

    /// The fast path: a plain query (one question, class IN, no EDNS) for a name with records.
    fn fast(&self, query: &[u8]) -> Option<Vec<u8>> {
        let header = query.get(..12)?;
        let flags = header[2];
        let plain = flags & 0x80 == 0 // a query
            && flags & 0x78 == 0 // opcode QUERY
            && header[4..6] == [0, 1]
            && header[6..12] == [0; 6];
        if !plain {
            return None;
        }
        let (name, end) = question(query)?;
        let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
        let qclass = u16::from_be_bytes([query[end - 2], query[end - 1]]);
        if qclass != u16::from(DNSClass::IN) {
            return None;
        }
        let mut answer = self.answers.get(&(name, qtype))?.clone();
        answer[..2].copy_from_slice(&query[..2]);
        answer[2] |= flags & 0x01; // echo RD
                                   // Echo the question as asked (same length, so compression pointers stay valid).
        answer[12..end].copy_from_slice(&query[12..end]);
        Some(answer)
    }

    /// The answer to one UDP datagram, or `None` to stay silent (responses, runts).
    pub fn respond(&self, zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
        if let Some(answer) = self.fast(query) {
            return Some(answer);
        }
        let message = match Message::from_vec(query) {
            Ok(message) => message,
            Err(_) => return formerr(query),
        };
        if message.metadata.message_type != MessageType::Query {
            return None;
        }
        let id = message.metadata.id;
        let [question] = message.queries.as_slice() else {
            let mut reply = Message::new(id, MessageType::Response, message.metadata.op_code);
            reply.metadata.response_code = ResponseCode::FormErr;
            return reply.to_vec().ok();
        };
        if message.metadata.op_code != OpCode::Query {
            let mut reply = response(question, id, ResponseCode::NotImp);
            reply.metadata.authoritative = false;
            return reply.to_vec().ok();
        }
        let mut reply = match zone.answer(&LowerName::from(question.name()), question.query_type())
        {
            Answer::Refused => response(question, id, ResponseCode::Refused),
            Answer::NxDomain { soa } => {
                let mut r = response(question, id, ResponseCode::NXDomain);
                r.authorities = vec![soa];
                r
            }
            Answer::NoData { soa } => {
                let mut r = response(question, id, ResponseCode::NoError);
                r.authorities = vec![soa];
                r
            }
            Answer::Records {
                answers,
                additionals,
            } => {
                let mut r = response(question, id, ResponseCode::NoError);
                r.answers = answers.to_vec();
                r.additionals = additionals.iter().cloned().collect::<Vec<Record>>();
                r
            }
        };
        reply.metadata.recursion_desired = message.metadata.recursion_desired;
        let limit = match &message.edns {
            Some(edns) => {
                let mut ours = Edns::new();
                ours.set_max_payload(EDNS_UDP_LIMIT);
                reply.edns = Some(ours);
                usize::from(edns.max_payload().clamp(512, EDNS_UDP_LIMIT))
            }
            None => PLAIN_UDP_LIMIT,
        };
        encode(reply, limit)
    }
}

/// FORMERR for a datagram whose header can be read; silence for anything shorter.
fn formerr(query: &[u8]) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    if header[2] & 0x80 != 0 {
        return None; // never answer a response
    }
    let mut reply = vec![0u8; 12];
    reply[..2].copy_from_slice(&header[..2]);
    reply[2] = 0x80 | (header[2] & 0x79); // QR, echo opcode and RD
    reply[3] = ResponseCode::FormErr.low();
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};
    use hivemind_common::records::HostRecord;
    use hivemind_common::role::Membership;
    use hivemind_common::MemberId;
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    fn zone() -> Zone {
        let record = HostRecord {
            member: MemberId::new(1).unwrap(),
            host: "web-1".into(),
            keygroup: "a/b/c".into(),
            addrs: vec![IpAddr::from([10, 0, 0, 1])],
            services: vec![],
            seq: 1,
            generation: 1,
            keygroup_version: 1,
        };
        Zone::build(
            &Name::from_ascii("hivemind.").unwrap(),
            &[&record],
            &BTreeMap::new(),
            &Membership::default(),
            1,
        )
    }

    fn query(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if edns {
            m.edns = Some(Edns::new());
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn the_fast_and_the_general_path_answer_alike() {
        let zone = zone();
        let wire = WireAnswers::build(&zone);
        let q = query("Web-1.Host.Hivemind.", RecordType::A, false);
        let fast = wire
            .fast(&q)
            .expect("a plain query for a known name is fast");
        let general = wire
            .respond(&zone, &query("Web-1.Host.Hivemind.", RecordType::A, true))
            .unwrap();
        let (fast, general) = (
            Message::from_vec(&fast).unwrap(),
            Message::from_vec(&general).unwrap(),
        );
        assert_eq!(fast.metadata.id, 0xbeef);
        assert!(fast.metadata.recursion_desired && fast.metadata.authoritative);
        assert_eq!(fast.queries[0].name().to_ascii(), "Web-1.Host.Hivemind.");
        assert_eq!(fast.answers, general.answers);
        assert_eq!(general.metadata.response_code, ResponseCode::NoError);
    }

    #[test]
    fn misses_refusals_and_garbage() {
        let zone = zone();
        let wire = WireAnswers::build(&zone);
        let nx = wire
            .respond(&zone, &query("nope.host.hivemind.", RecordType::A, false))
            .unwrap();
        let nx = Message::from_vec(&nx).unwrap();
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(nx.authorities.len(), 1);
        let refused = wire
            .respond(&zone, &query("example.com.", RecordType::A, false))
            .unwrap();
        assert_eq!(rcode_of(&refused), ResponseCode::Refused);
        let mut garbage = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        garbage.extend_from_slice(&[0xff; 9]);
        let formerr = wire.respond(&zone, &garbage).unwrap();
        assert_eq!(rcode_of(&formerr), ResponseCode::FormErr);
        assert_eq!(&formerr[..2], &[0x12, 0x34]);
        assert_eq!(wire.respond(&zone, &[1, 2, 3]), None);
    }
}
