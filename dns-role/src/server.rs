//! The DNS server: hickory-server on UDP and TCP, answering from the current [`Zone`] (swapped
//! whole when records change). hickory answers malformed messages with FORMERR itself; every
//! answer here is authoritative; queries are counted by response code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use hickory_proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::zone::{Answer, Zone};

/// Queries answered, by response code (`NoError`, `NXDomain`, `Refused`, ...).
#[derive(Debug, Default)]
pub struct QueryCounts(Mutex<BTreeMap<String, u64>>);

impl QueryCounts {
    fn count(&self, code: ResponseCode) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(format!("{code:?}"))
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let query = match request.queries.queries() {
            [query] if request.metadata.op_code == OpCode::Query => Some(query),
            _ => None,
        };
        let (code, answers, soa, additionals): (_, Vec<Record>, Vec<Record>, Vec<Record>) =
            match query.map(|q| self.current().answer(q.name(), q.query_type())) {
                None => (ResponseCode::FormErr, vec![], vec![], vec![]),
                Some(Answer::Refused) => {
                    metadata.authoritative = false;
                    (ResponseCode::Refused, vec![], vec![], vec![])
                }
                Some(Answer::NxDomain { soa }) => {
                    (ResponseCode::NXDomain, vec![], vec![soa], vec![])
                }
                Some(Answer::NoData { soa }) => (ResponseCode::NoError, vec![], vec![soa], vec![]),
                Some(Answer::Records {
                    answers,
                    additionals,
                }) => (ResponseCode::NoError, answers, vec![], additionals),
            };
        metadata.response_code = code;
        self.counts.count(code);
        let builder = MessageResponseBuilder::from_message_request(request);
        let message = builder.build(metadata, answers.iter(), [], soa.iter(), additionals.iter());
        match response.send_response(message).await {
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
