//! A request/answer stream between two members: one HTTP/1.1 upgrade on the member's HTTP port
//! (so the port, the cluster secret check and the access log stay as they are), then
//! length-delimited frames on the bare connection, one request and one answer at a time.
//!
//! Raft's AppendEntries travels this way: the replication task of each follower owns one
//! [`FrameClient`] and writes its frames straight to the socket. Compared with a pooled HTTP
//! client this saves, per RPC, the request and header encoding on both ends and the hop through
//! the HTTP client's connection task, which on a loaded machine is most of an RPC's cost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};
use hivemind_tls::ClientIo;
use hyper_util::rt::TokioIo;
use tokio_util::codec::{Framed, FramedParts, LengthDelimitedCodec};

use hivemind_common::secret::CLUSTER_SECRET_HEADER;
use hivemind_common::tls::ClientTls;

/// The `Upgrade` token both ends must name.
pub const PROTOCOL: &str = "hivemind-frames/1";

/// The client's end: the bare TCP stream taken back from the HTTP client after the upgrade
/// (it must be `Sync` for openraft's network types).
type Connection = Framed<ClientIo, LengthDelimitedCodec>;

/// The stream's framing: 4-byte length prefixes, frames bounded like every other internal body.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(hivemind_common::codec::MAX_DECODE_BYTES)
        .new_codec()
}

/// Why a call on a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The connection could not be opened: the request surely did not arrive.
    #[error("{addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The peer does not serve this stream (an older version): use the plain route instead.
    #[error("{addr} does not serve {path}")]
    Unsupported { addr: String, path: String },
    /// The request may or may not have arrived; the connection was dropped.
    #[error("stream to {addr} failed: {reason}")]
    Failed { addr: String, reason: String },
}

/// The calling end of one stream: connects on first use and again after any failure.
pub struct FrameClient {
    addr: String,
    path: &'static str,
    secret: Option<String>,
    tls: Option<ClientTls>,
    connection: Option<Connection>,
}

impl FrameClient {
    pub fn new(
        addr: String,
        path: &'static str,
        secret: Option<String>,
        tls: Option<ClientTls>,
    ) -> Self {
        Self {
            addr,
            path,
            secret,
            tls,
            connection: None,
        }
    }

    /// Sends one request frame and waits for its answer, all within `timeout`. After a failure
    /// or a timeout the connection is dropped, so a late answer can never be taken for the
    /// answer to the next request.
    pub async fn call(&mut self, request: Bytes, timeout: Duration) -> Result<Bytes, StreamError> {
        let outcome = tokio::time::timeout(timeout, self.exchange(request))
            .await
            .unwrap_or_else(|_| {
                Err(StreamError::Failed {
                    addr: self.addr.clone(),
                    reason: format!("no answer within {timeout:?}"),
                })
            });
        if outcome.is_err() {
            self.connection = None;
        }
        outcome
    }

    async fn exchange(&mut self, request: Bytes) -> Result<Bytes, StreamError> {
        // A stream the peer closed while it sat idle (the peer restarted, say) reads as ended
        // or as holding bytes nobody asked for: nothing was sent on it yet, so open a new one
        // instead of failing a request that never left.
        if let Some(connection) = &mut self.connection {
            if connection.next().now_or_never().is_some() {
                self.connection = None;
            }
        }
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self.connection.insert(self.connect().await?),
        };
        let failed = |reason: String| StreamError::Failed {
            addr: self.addr.clone(),
            reason,
        };
        connection
            .send(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        match connection.next().await {
            Some(Ok(answer)) => Ok(answer.freeze()),
            Some(Err(e)) => Err(failed(e.to_string())),
            None => Err(failed("the peer closed the stream".into())),
        }
    }

    async fn connect(&self) -> Result<Connection, StreamError> {
        let unreachable = |reason: String| StreamError::Unreachable {
            addr: self.addr.clone(),
            reason,
        };
        let io = hivemind_tls::connect(self.tls.as_ref(), &self.addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(io))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        // Drives the HTTP exchange until the connection is handed over (or fails).
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut request = Request::get(self.path)
            .header(header::HOST, &self.addr)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, PROTOCOL);
        if let Some(secret) = &self.secret {
            request = request.header(CLUSTER_SECRET_HEADER, secret);
        }
        let request = request
            .body(Body::empty())
            .map_err(|e| unreachable(e.to_string()))?;
        let failed = |reason: String| StreamError::Failed {
            addr: self.addr.clone(),
            reason,
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        match response.status() {
            StatusCode::SWITCHING_PROTOCOLS => {}
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                return Err(StreamError::Unsupported {
                    addr: self.addr.clone(),
                    path: self.path.to_string(),
                })
            }
            status => return Err(failed(format!("upgrade refused: HTTP {status}"))),
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let parts = upgraded
            .downcast::<TokioIo<ClientIo>>()
            .map_err(|_| failed("the upgraded connection is not the one opened".into()))?;
        let mut framed = FramedParts::new::<Bytes>(parts.io.into_inner(), codec());
        // Bytes the HTTP client read past the upgrade answer belong to the first frame.
        framed.read_buf = BytesMut::from(&parts.read_buf[..]);
        Ok(Framed::from_parts(framed))
    }
}

/// Open streams kept for reuse, per peer address and route: openraft opens a new network client
/// for every leadership check (each linearizable read), so streams must outlive the client that
/// opened them or every read would pay for a new connection.
#[derive(Clone)]
pub struct FramePool {
    idle: Arc<Mutex<IdleStreams>>,
    secret: Option<String>,
    tls: Option<ClientTls>,
}

/// Idle streams by peer address and route.
type IdleStreams = HashMap<(String, &'static str), Vec<FrameClient>>;

/// Idle streams kept per peer and route (more are opened while more calls are concurrent).
const MAX_IDLE: usize = 32;

impl FramePool {
    pub fn new(secret: Option<String>, tls: Option<ClientTls>) -> Self {
        Self {
            idle: Arc::default(),
            secret,
            tls,
        }
    }

    /// One call on an idle stream to `addr`'s `path` (or a new one). The stream goes back to the
    /// pool only after a complete exchange.
    pub async fn call(
        &self,
        addr: &str,
        path: &'static str,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, StreamError> {
        let key = (addr.to_string(), path);
        let reused = self.lock().get_mut(&key).and_then(Vec::pop);
        let mut client = reused.unwrap_or_else(|| {
            FrameClient::new(
                addr.to_string(),
                path,
                self.secret.clone(),
                self.tls.clone(),
            )
        });
        let answer = client.call(request, timeout).await?;
        let mut idle = self.lock();
        let streams = idle.entry(key).or_default();
        if streams.len() < MAX_IDLE {
            streams.push(client);
        }
        Ok(answer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleStreams> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The answering end: accepts the upgrade carried by `request` and serves its frames with
/// `handle` (one at a time, in order) until the peer hangs up or `handle` answers `None`
/// (a request it cannot decode: the stream is closed rather than left out of step).
pub fn accept<H, Fut>(mut request: Request, mut handle: H) -> Response
where
    H: FnMut(Bytes) -> Fut + Send + 'static,
    Fut: Future<Output = Option<Bytes>> + Send,
{
    let asked = request.headers().get(header::UPGRADE);
    if asked != Some(&HeaderValue::from_static(PROTOCOL)) {
        let error = hivemind_common::api::ErrorBody::new(
            "upgrade_required",
            format!("this route is a stream: send `Upgrade: {PROTOCOL}`"),
        );
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "stream upgrade failed");
                return;
            }
        };
        let mut frames = Framed::new(TokioIo::new(io), codec());
        while let Some(Ok(frame)) = frames.next().await {
            let Some(answer) = handle(frame.freeze()).await else {
                break;
            };
            if frames.send(answer).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(Body::empty())
        .expect("static upgrade answer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const PATH: &str = "/stream";
    const WAIT: Duration = Duration::from_secs(10);

    /// Serves `router` on a loopback port; returns its address.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    /// Answers each frame with "re:" + the frame; hangs up on "bye"; counts connections.
    fn echo(connections: Arc<AtomicUsize>) -> Router {
        Router::new().route(
            PATH,
            get(move |request: Request| {
                connections.fetch_add(1, Ordering::SeqCst);
                async move {
                    accept(request, |frame: Bytes| async move {
                        (frame.as_ref() != b"bye").then(|| {
                            let mut answer = b"re:".to_vec();
                            answer.extend_from_slice(&frame);
                            Bytes::from(answer)
                        })
                    })
                }
            }),
        )
    }

    #[tokio::test]
    async fn answers_come_back_in_order_on_one_connection() {
        let connections = Arc::new(AtomicUsize::new(0));
        let addr = serve(echo(connections.clone())).await;
        let mut client = FrameClient::new(addr, PATH, None, None);
        for i in 0..50 {
            let answer = client
                .call(Bytes::from(format!("{i}")), WAIT)
                .await
                .unwrap();
            assert_eq!(answer, Bytes::from(format!("re:{i}")));
        }
        let big = Bytes::from(vec![7u8; 1 << 20]);
        assert_eq!(client.call(big, WAIT).await.unwrap().len(), 3 + (1 << 20));
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_pool_reuses_idle_streams_and_opens_more_only_for_concurrent_calls() {
        let connections = Arc::new(AtomicUsize::new(0));
        let addr = serve(echo(connections.clone())).await;
        let pool = FramePool::new(None, None);
        for i in 0..20 {
            let answer = pool
                .call(&addr, PATH, Bytes::from(format!("{i}")), WAIT)
                .await;
            assert_eq!(answer.unwrap(), Bytes::from(format!("re:{i}")));
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "sequential calls share one stream"
        );
        let calls = (0..4).map(|i| pool.call(&addr, PATH, Bytes::from(format!("{i}")), WAIT));
        for (i, answer) in futures::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(answer.unwrap(), Bytes::from(format!("re:{i}")));
        }
        assert!(connections.load(Ordering::SeqCst) <= 4);
        let before = connections.load(Ordering::SeqCst);
        pool.call(&addr, PATH, Bytes::from_static(b"x"), WAIT)
            .await
            .unwrap();
        assert_eq!(
            connections.load(Ordering::SeqCst),
            before,
            "idle streams were kept"
        );
    }

    #[tokio::test]
    async fn a_dropped_stream_fails_one_call_and_the_next_reconnects() {
        let connections = Arc::new(AtomicUsize::new(0));
        let addr = serve(echo(connections.clone())).await;
        let mut client = FrameClient::new(addr, PATH, None, None);
        client.call(Bytes::from_static(b"a"), WAIT).await.unwrap();
        let hung_up = client.call(Bytes::from_static(b"bye"), WAIT).await;
        assert!(
            matches!(hung_up, Err(StreamError::Failed { .. })),
            "{hung_up:?}"
        );
        let answer = client.call(Bytes::from_static(b"b"), WAIT).await.unwrap();
        assert_eq!(answer, Bytes::from_static(b"re:b"));
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    /// A peer that upgrades by hand, answers one frame per connection and then hangs up
    /// (as a restarted process would have).
    /// Reports each hang-up on the returned channel.
    async fn one_answer_per_connection() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (hung_up, hang_ups) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8];
                    if tcp.read_exact(&mut byte).await.is_err() {
                        break;
                    }
                    head.push(byte[0]);
                }
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {PROTOCOL}\r\n\r\n"
                );
                tcp.write_all(answer.as_bytes()).await.unwrap();
                let mut frames = Framed::new(tcp, codec());
                if let Some(Ok(frame)) = frames.next().await {
                    frames.send(frame.freeze()).await.unwrap();
                }
                drop(frames);
                let _ = hung_up.send(());
            }
        });
        (addr, hang_ups)
    }

    #[tokio::test]
    async fn a_stream_the_peer_closed_while_idle_is_replaced_before_sending() {
        let (addr, mut hang_ups) = one_answer_per_connection().await;
        let mut client = FrameClient::new(addr, PATH, None, None);
        for i in 0..3 {
            let answer = client.call(Bytes::from(format!("{i}")), WAIT).await;
            assert_eq!(answer.unwrap(), Bytes::from(format!("{i}")), "call {i}");
            hang_ups.recv().await.expect("the peer hung up");
        }
    }

    #[tokio::test]
    async fn nobody_listening_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut client = FrameClient::new(addr, PATH, None, None);
        let outcome = client.call(Bytes::from_static(b"a"), WAIT).await;
        assert!(
            matches!(outcome, Err(StreamError::Unreachable { .. })),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_without_the_route_is_unsupported() {
        let addr = serve(Router::new().route("/other", get(|| async { "" }))).await;
        let mut client = FrameClient::new(addr, PATH, None, None);
        let outcome = client.call(Bytes::from_static(b"a"), WAIT).await;
        assert!(
            matches!(outcome, Err(StreamError::Unsupported { .. })),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_plain_request_to_the_route_is_told_to_upgrade() {
        let addr = serve(echo(Arc::default())).await;
        let response = hivemind_tls::http_client(None)
            .build()
            .unwrap()
            .get(format!("http://{addr}{PATH}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "upgrade_required", "{body}");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_the_stream_is_dropped() {
        let router = Router::new().route(
            PATH,
            get(|request: Request| async move {
                accept(request, |_frame: Bytes| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    None
                })
            }),
        );
        let addr = serve(router).await;
        let mut client = FrameClient::new(addr, PATH, None, None);
        let outcome = client
            .call(Bytes::from_static(b"a"), Duration::from_millis(200))
            .await;
        assert!(
            matches!(outcome, Err(StreamError::Failed { .. })),
            "{outcome:?}"
        );
        assert!(client.connection.is_none());
    }
}
