//! Raft RPC, client side: AppendEntries as bincode frames on one [`crate::stream`] per peer;
//! votes, snapshots and everything else as bincode bodies POSTed to peers' internal HTTP routes
//! over pooled keep-alive connections. The server side lives in [`crate::http::internal`].

use std::error::Error;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ops::{self, Op};
use crate::store::durable::Durable;
use crate::stream::{FramePool, StreamError};
use crate::types::{CpNode, NodeId, TypeConfig};

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
    streams: FramePool,
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

/// Creates one [`Peer`] per Raft target.
pub struct NetworkFactory {
    client: InternalClient,
    durable: std::sync::Arc<Durable>,
}

impl NetworkFactory {
    /// `durable` is how far this member's log is on disk: no AppendEntries tells a follower of
    /// a commit beyond it.
    pub fn new(client: InternalClient, durable: std::sync::Arc<Durable>) -> Self {
        Self { client, durable }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &CpNode) -> Peer {
        Peer {
            target,
            addr: node.http_addr.clone(),
            client: self.client.clone(),
            streams: self.client.streams.clone(),
            append_over_http: false,
            durable: self.durable.clone(),
        }
    }
}

/// The connection to one Raft peer. AppendEntries (every replicated entry and heartbeat) travels
/// on this peer's own stream; votes and snapshots, which are rare, as plain internal requests.
pub struct Peer {
    target: NodeId,
    addr: String,
    client: InternalClient,
    streams: FramePool,
    /// The peer predates the stream route: AppendEntries as plain requests instead.
    append_over_http: bool,
    /// How far this member's log is on disk: the commit index sent never goes beyond it.
    durable: std::sync::Arc<Durable>,
}

impl Peer {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, CpNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .client
            .call(&self.addr, path, request, option.hard_ttl())
            .await
            .map_err(|e| match &e {
                CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Failed { .. } | CallError::Refused { .. } => {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        answer.map_err(|remote| RPCError::RemoteError(RemoteError::new(self.target, remote)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, CpNode, RaftError<NodeId>>> {
        // Rule 2 of `store::durable`: followers hear of no commit that is not on this disk.
        rpc.leader_commit = self.durable.clamp_commit(rpc.leader_commit);
        if rpc.entries.is_empty() {
            // Nothing to replicate, at most news of a commit: let the tasks already woken by
            // that commit run first (the state machine applying it, then the write's answer),
            // rather than queue them behind this send. Followers need the news only to apply
            // it themselves, which no client of the leader waits for. (Traced: the leader's
            // apply started 65-80 µs after the commit without this, 16-32 µs with it.)
            tokio::task::yield_now().await;
        }
        if self.append_over_http {
            return self.rpc(ops::Append::PATH, &rpc, &option).await;
        }
        let frame = hivemind_common::encode(&rpc).into();
        let answer = match self
            .streams
            .call(&self.addr, ops::APPEND_STREAM, frame, option.hard_ttl())
            .await
        {
            Ok(answer) => answer,
            Err(StreamError::Unsupported { .. }) => {
                tracing::info!(peer = %self.addr, "peer has no AppendEntries stream: using plain requests");
                self.append_over_http = true;
                return self.rpc(ops::Append::PATH, &rpc, &option).await;
            }
            Err(e @ StreamError::Unreachable { .. }) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e @ StreamError::Failed { .. }) => {
                return Err(RPCError::Network(NetworkError::new(&e)))
            }
        };
        let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            hivemind_common::decode(&answer)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|remote| RPCError::RemoteError(RemoteError::new(self.target, remote)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, CpNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(ops::Snapshot::PATH, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, CpNode, RaftError<NodeId>>> {
        self.rpc(ops::Vote::PATH, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer soon: a restarted CP member should catch up quickly.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
