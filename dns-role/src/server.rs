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

/// Queries answered, by response code, and how long answering took (from the query read to
/// the answer handed to the socket).
#[derive(Debug, Default)]
pub struct QueryCounts {
    codes: [AtomicU64; CODES.len()],
    pub latency: LatencyHistogram,
}

impl QueryCounts {
    pub fn count(&self, code: ResponseCode) {
        if let Some(i) = CODES.iter().position(|c| *c == code) {
            self.codes[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an answer and the time it took since `received`.
    pub fn answered(&self, code: ResponseCode, received: Instant) {
        self.count(code);
        self.latency.observe(received.elapsed());
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        CODES
            .iter()
            .zip(&self.codes)
            .map(|(code, n)| (format!("{code:?}"), n.load(Ordering::Relaxed)))
            .collect()
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
