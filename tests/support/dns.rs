//! A DNS client for end-to-end tests: one query over UDP or TCP, answers rendered as text, and
//! waits until every dns member answers as expected.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::wait_for;

/// The zone of the default keygroup `hivemind/default/hosts` under `hivemind.`.
pub const ZONE: &str = "hosts.default.hivemind.hivemind.";

/// What a DNS server answered: the code, the answers and additionals as text, whether the
/// authority section holds the SOA.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<String>,
    pub additionals: Vec<String>,
    pub soa: bool,
    pub authoritative: bool,
}

pub fn render(data: &RData) -> String {
    match data {
        RData::A(a) => a.0.to_string(),
        RData::SRV(srv) => format!("{} {}", srv.port, srv.target),
        other => other.to_string(),
    }
}

pub fn query_message(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message.to_vec().unwrap()
}

pub fn parse(bytes: &[u8]) -> Answer {
    let message = Message::from_vec(bytes).unwrap();
    let mut answers: Vec<String> = message.answers.iter().map(|r| render(&r.data)).collect();
    answers.sort();
    Answer {
        code: message.metadata.response_code,
        answers,
        additionals: message
            .additionals
            .iter()
            .map(|r| render(&r.data))
            .collect(),
        soa: message
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA),
        authoritative: message.metadata.authoritative,
    }
}

/// One query over UDP (a lost datagram answers `None`).
pub fn udp(port: u16, name: &str, rtype: RecordType) -> Option<Answer> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    socket
        .send_to(&query_message(name, rtype), (Ipv4Addr::LOCALHOST, port))
        .ok()?;
    let mut buf = [0u8; 4096];
    let len = socket.recv(&mut buf).ok()?;
    Some(parse(&buf[..len]))
}

/// One query over TCP (two-byte length prefix).
pub fn tcp(port: u16, name: &str, rtype: RecordType) -> Answer {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let message = query_message(name, rtype);
    stream
        .write_all(&(message.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(&message).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).unwrap();
    parse(&buf)
}

pub async fn answers_on(ports: &[u16], name: &str, rtype: RecordType, want: &[&str]) {
    for port in ports {
        wait_for(&format!("{name} {rtype} = {want:?} on :{port}"), || async {
            let a = udp(*port, name, rtype)?;
            (a.code == ResponseCode::NoError && a.answers == want).then_some(())
        })
        .await;
    }
}

pub async fn nxdomain_on(ports: &[u16], name: &str) {
    for port in ports {
        wait_for(&format!("{name} NXDOMAIN on :{port}"), || async {
            let a = udp(*port, name, RecordType::A)?;
            (a.code == ResponseCode::NXDomain && a.soa).then_some(())
        })
        .await;
    }
}
