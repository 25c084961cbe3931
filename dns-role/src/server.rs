//! The DNS server: hickory-server on UDP and TCP, answering from the current [`Zone`] (swapped
//! whole when records change). hickory answers malformed messages with FORMERR itself; every
//! answer here is authoritative; queries are counted by response code without a lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hivemind_common::histogram::LatencyHistogram;

use hickory_proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::zone::{Answer, Zone};

/// The response codes this server gives, in the order of [`QueryCounts`]' slots.
const CODES: [ResponseCode; 5] = [
    ResponseCode::NoError,
    ResponseCode::NXDomain,
    ResponseCode::Refused,
    ResponseCode::FormErr,
    ResponseCode::ServFail,
];

/// `code`'s slot in [`QueryCounts`] and [`LocalCounts`] (`None`: a code this server never gives).
fn slot(code: ResponseCode) -> Option<usize> {
    CODES.iter().position(|c| *c == code)
}

/// Queries answered, by response code, and how long answering took (from the query read to
/// the answer handed to the socket).
#[derive(Debug, Default)]
pub struct QueryCounts {
    codes: [AtomicU64; CODES.len()],
    pub latency: LatencyHistogram,
}

impl QueryCounts {
    pub fn count(&self, code: ResponseCode) {
        if let Some(i) = slot(code) {
            self.codes[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an answer and the time it took since `received`.
    pub fn answered(&self, code: ResponseCode, received: Instant) {
        self.count(code);
        self.latency.observe(received.elapsed());
    }

    /// Adds what one receive loop counted since its last flush, and empties it.
    pub(crate) fn absorb(&self, local: &mut LocalCounts) {
        for (shared, n) in self.codes.iter().zip(&mut local.codes) {
            if *n > 0 {
                shared.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        self.latency.absorb(&mut local.latency);
        local.pending = 0;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        CODES
            .iter()
            .zip(&self.codes)
            .map(|(code, n)| (format!("{code:?}"), n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// One UDP receive loop's counts, without atomics, handed to [`QueryCounts`] every
/// [`LocalCounts::FLUSH_EVERY`] answers and whenever the loop waits: two threads adding to the
/// same counters for every query would pass their cache lines back and forth.
#[derive(Debug, Default)]
pub(crate) struct LocalCounts {
    codes: [u64; CODES.len()],
    latency: hivemind_common::histogram::LocalHistogram,
    pending: u32,
}

impl LocalCounts {
    const FLUSH_EVERY: u32 = 256;

    /// Counts an answer; answers whether it is time to flush.
    pub(crate) fn answered(&mut self, code: ResponseCode, received: Instant) -> bool {
        if let Some(i) = slot(code) {
            self.codes[i] += 1;
        }
        self.latency.observe(received.elapsed());
        self.pending += 1;
        self.pending >= Self::FLUSH_EVERY
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending == 0
    }
}

pub struct Handler {
    pub zone: Arc<RwLock<Arc<Zone>>>,
    pub counts: Arc<QueryCounts>,
}

impl Handler {
    fn current(&self) -> Arc<Zone> {
        self.zone.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let received = Instant::now();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let query = match request.queries.queries() {
            [query] if request.metadata.op_code == OpCode::Query => Some(query),
            _ => None,
        };
        let zone = self.current();
        let answer = query.map(|q| zone.answer(q.name(), q.query_type()));
        let none: &[Record] = &[];
        let (code, answers, soa, additionals): (_, &[Record], Option<&Record>, &[Record]) =
            match &answer {
                None => (ResponseCode::FormErr, none, None, none),
                Some(Answer::Refused) => {
                    metadata.authoritative = false;
                    (ResponseCode::Refused, none, None, none)
                }
                Some(Answer::NxDomain { soa }) => (ResponseCode::NXDomain, none, Some(soa), none),
                Some(Answer::NoData { soa }) => (ResponseCode::NoError, none, Some(soa), none),
                Some(Answer::Records {
                    answers,
                    additionals,
                }) => (ResponseCode::NoError, answers, None, additionals),
            };
        metadata.response_code = code;
        let builder = MessageResponseBuilder::from_message_request(request);
        let message = builder.build(metadata, answers.iter(), [], soa, additionals.iter());
        let sent = response.send_response(message).await;
        self.counts.answered(code, received);
        match sent {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a DNS answer");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

use std::net::SocketAddr;
use std::time::Duration;

use hivemind_common::role::RoleHealth;
use tokio_util::sync::CancellationToken;

use crate::{wire, DnsZone};

/// A UDP socket on `addr` that shares the port with its siblings (`SO_REUSEPORT`), so the
/// kernel spreads queries over several receive loops. Blocking, with a read timeout of
/// [`UDP_SHUTDOWN_CHECK`] so that its loop notices a shutdown.
pub(crate) fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_port(true)?;
    socket.set_read_timeout(Some(UDP_SHUTDOWN_CHECK))?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// How long a UDP loop blocks in a receive before it looks at the shutdown token.
pub(crate) const UDP_SHUTDOWN_CHECK: Duration = Duration::from_millis(200);

/// One UDP receive loop on a thread of its own: each datagram answered from the finished
/// answers (fast path) or built with hickory-proto (everything else). The query path needs no
/// async runtime, so it never waits behind the agent's tasks (the runtime may be one thread)
/// and costs no wake-ups: one blocking receive and one send per query, as in nsd. Nothing
/// shared is written per query: the loop keeps its own copy of the zone and its answers,
/// replaced when the zone's version moves (one load of a counter per query), and its own
/// counts, flushed in batches.
pub(crate) fn udp_loop(
    shared: Arc<DnsZone>,
    socket: std::net::UdpSocket,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 4096];
    let mut current = shared.current();
    let mut counts = LocalCounts::default();
    while !shutdown.is_cancelled() {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                // Idle: what was counted shows in /metrics now.
                if !counts.is_empty() {
                    shared.queries.absorb(&mut counts);
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                // Not a spin on an error that repeats: the socket is polled again shortly.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let received = std::time::Instant::now();
        if current.version != shared.version() {
            current = shared.current();
        }
        if let Some(answer) = current.answers.respond(&current.zone, &buf[..len]) {
            let sent = socket.send_to(&answer, from);
            if counts.answered(wire::rcode_of(&answer), received) {
                shared.queries.absorb(&mut counts);
            }
            if let Err(e) = sent {
                tracing::debug!(error = %e, %from, "DNS answer not sent");
            }
        }
    }
    shared.queries.absorb(&mut counts);
}

/// Binds the DNS sockets (one UDP receive loop per core, each on its own thread) and serves
/// until `shutdown`.
pub(crate) async fn serve_dns(
    shared: Arc<DnsZone>,
    addr: SocketAddr,
    health: RoleHealth,
    shutdown: CancellationToken,
) {
    let loops = std::thread::available_parallelism().map_or(1, |n| n.get());
    let udp: std::io::Result<Vec<_>> = (0..loops).map(|_| reuseport_udp(addr)).collect();
    let tcp = tokio::net::TcpListener::bind(addr).await;
    let (udp, tcp) = match (udp, tcp) {
        (Ok(u), Ok(t)) => (u, t),
        (u, t) => {
            let error = u
                .err()
                .or(t.err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            tracing::error!(%addr, %error, "cannot bind the DNS port; not serving DNS");
            health.waiting_for(vec![format!("dns_port:{error}")]);
            return;
        }
    };
    let mut server = hickory_server::Server::new(Handler {
        zone: shared.zone.clone(),
        counts: shared.queries.clone(),
    });
    for (n, socket) in udp.into_iter().enumerate() {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        let span = tracing::Span::current();
        let started = std::thread::Builder::new()
            .name(format!("hivemind-dns-udp-{n}"))
            .spawn(move || span.in_scope(|| udp_loop(shared, socket, shutdown)));
        if let Err(e) = started {
            tracing::error!(%addr, error = %e, "cannot start a DNS receive thread");
            health.waiting_for(vec![format!("dns_thread:{e}")]);
            return;
        }
    }
    // TCP (rare: truncated answers, zone tooling) goes through hickory-server.
    server.register_listener(tcp, Duration::from_secs(5), 64);
    tracing::info!(%addr, "serving DNS");
    tokio::select! {
        _ = shutdown.cancelled() => {
            let _ = server.shutdown_gracefully().await;
        }
        result = server.block_until_done() => {
            if let Err(e) = result {
                tracing::error!(error = %e, "the DNS server stopped");
            }
        }
    }
}
