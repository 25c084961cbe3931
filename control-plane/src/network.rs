//! Internal calls, client side: bincode bodies POSTed to peers' internal HTTP routes over pooled
//! keep-alive connections, or framed on a pooled [`crate::stream`]. Raft's own RPC is built on
//! it in [`crate::raft_network`]; the server side lives in [`crate::http::internal`].

use std::error::Error;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ops::{self, Op};
use crate::stream::{FramePool, StreamError};

pub use hivemind_common::secret::CLUSTER_SECRET_HEADER;
use hivemind_common::tls::{url, ClientTls};

/// A bincode-over-HTTP client for internal routes, shared by Raft RPC, forwarding and bootstrap.
#[derive(Clone)]
pub struct InternalClient {
    http: reqwest::Client,
    secret: Option<String>,
    /// TLS to the other members (`https://`, mutual), or plain HTTP.
    tls: Option<ClientTls>,
    /// Upgraded connections for the hot paths (AppendEntries), shared by every Raft client.
    pub(crate) streams: FramePool,
}

/// Why an internal call failed. `Unreachable` means the request surely did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("call to {addr} failed: {reason}")]
    Failed { addr: String, reason: String },
    /// 403: the caller may not call this (DESIGN.md §6e-2); asking another member is futile.
    #[error("{addr} refused: {code}: {message}")]
    Refused {
        addr: String,
        code: String,
        message: String,
    },
}

impl CallError {
    fn failed(addr: &str, reason: String) -> Self {
        Self::Failed {
            addr: addr.to_string(),
            reason,
        }
    }
}

impl InternalClient {
    pub fn new(secret: Option<String>, tls: Option<ClientTls>) -> Self {
        let http = hivemind_tls::http_client(tls.as_ref())
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .expect("reqwest client builds with static settings");
        let streams = FramePool::new(secret.clone(), tls.clone());
        Self {
            http,
            secret,
            tls,
            streams,
        }
    }

    /// Calls the internal operation `O` on the member at `addr`.
    pub async fn op<O: Op>(
        &self,
        addr: &str,
        request: &O::Request,
        timeout: Duration,
    ) -> Result<O::Answer, CallError> {
        self.call(addr, O::PATH, request, timeout).await
    }

    /// POSTs `body` (bincode) to `addr{path}` (http or https) and decodes a bincode answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let mut request = self
            .http
            .post(url(self.tls.as_ref(), addr, path))
            .timeout(timeout)
            .header("content-type", "application/octet-stream")
            .body(hivemind_common::encode(body));
        if let Some(secret) = &self.secret {
            request = request.header(CLUSTER_SECRET_HEADER, secret);
        }
        let failed = |reason: String| CallError::failed(addr, reason);
        let response = request.send().await.map_err(|source| {
            if source.is_connect() {
                CallError::Unreachable {
                    addr: addr.to_string(),
                    reason: with_causes(&source),
                }
            } else {
                failed(with_causes(&source))
            }
        })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        decode_answer(addr, status, &bytes)
    }
}

/// An error and its causes in one line: reqwest's own message says only "error sending
/// request", while the cause says why (refused, a certificate from another CA, ...).
pub fn with_causes(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// An internal route's answer, however it travelled: the bincode body of a 2xx, or why not.
fn decode_answer<Resp: DeserializeOwned>(
    addr: &str,
    status: u16,
    body: &[u8],
) -> Result<Resp, CallError> {
    let failed = |reason: String| CallError::failed(addr, reason);
    if status == 403 {
        let error: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |field: &str| {
            error["error"][field]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        return Err(CallError::Refused {
            addr: addr.to_string(),
            code: text("code"),
            message: text("message"),
        });
    }
    if !(200..300).contains(&status) {
        return Err(failed(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(body)
        )));
    }
    hivemind_common::decode(body).map_err(|e| failed(e.to_string()))
}

/// A call on [`ops::CALL_STREAM`]: the route and its bincode body.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct FramedCall {
    pub path: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The answer to a [`FramedCall`]: the route's HTTP status and body.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct FramedAnswer {
    pub status: u16,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl InternalClient {
    /// Like [`InternalClient::call`], on a pooled stream to `addr` (no HTTP request per call):
    /// for the hot paths between CP members. Falls back to a plain request when the peer does
    /// not serve streams.
    pub async fn call_framed<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let call = FramedCall {
            path: path.to_string(),
            body: hivemind_common::encode(body),
        };
        let frame = hivemind_common::encode(&call).into();
        let failed = |reason: String| CallError::failed(addr, reason);
        let answer = match self
            .streams
            .call(addr, ops::CALL_STREAM, frame, timeout)
            .await
        {
            Ok(answer) => answer,
            Err(StreamError::Unsupported { .. }) => {
                return self.call(addr, path, body, timeout).await
            }
            Err(StreamError::Unreachable { reason, .. }) => {
                return Err(CallError::Unreachable {
                    addr: addr.to_string(),
                    reason,
                })
            }
            Err(e @ StreamError::Failed { .. }) => return Err(failed(e.to_string())),
        };
        let answer: FramedAnswer =
            hivemind_common::decode(&answer).map_err(|e| failed(e.to_string()))?;
        decode_answer(addr, answer.status, &answer.body)
    }

    /// GETs a JSON document from another member's internal route (role status pages).
    pub async fn get_json(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        let mut request = self
            .http
            .get(url(self.tls.as_ref(), addr, path))
            .timeout(timeout);
        if let Some(secret) = &self.secret {
            request = request.header(CLUSTER_SECRET_HEADER, secret);
        }
        let failed = |reason: String| CallError::failed(addr, reason);
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        response.json().await.map_err(|e| failed(e.to_string()))
    }
}
