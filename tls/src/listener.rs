//! The member's HTTP listener for axum: plain TCP, or TLS when the member has [`Tls`]. The TLS
//! handshake runs on its own task per connection (bounded by [`HANDSHAKE_TIMEOUT`]), so a slow
//! or hostile client never holds up the next accept; a peer that speaks plaintext to a TLS port
//! fails its handshake and is dropped. Each connection carries a [`Peer`] (axum's
//! `ConnectInfo`): its address and whether it presented a certificate from the cluster CA.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::either::Either;

use crate::{CertIdentity, Tls};

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection the listener accepted: plain, or TLS after a completed handshake.
pub type Io = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The peer presented a certificate that chains to the cluster CA (mutual TLS). Always
    /// false on a plain listener.
    pub member_cert: bool,
    /// The member that certificate names ([`crate::identity`]), if it names one.
    pub identity: Option<Arc<CertIdentity>>,
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Counts what the listener refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// TLS handshakes that failed or timed out (plaintext to a TLS port, a certificate from
    /// another CA, an expired one).
    pub handshake_failures: AtomicU64,
    /// Connections handed to the HTTP server and not closed yet.
    pub open: AtomicU64,
}

/// Accepted connections, handed to axum.
pub struct Listener {
    accepted: mpsc::Receiver<(Io, Peer)>,
    local: SocketAddr,
    counters: Arc<ListenerCounters>,
}

impl Listener {
    /// Starts accepting on `tcp`; over TLS when `tls` is given. The accept task ends when the
    /// listener is dropped.
    pub fn start(
        tcp: TcpListener,
        tls: Option<Arc<Tls>>,
        counters: Arc<ListenerCounters>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(256);
        tokio::spawn(accept_loop(tcp, tls, counters.clone(), tx));
        Ok(Self {
            accepted,
            local,
            counters,
        })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Option<Arc<Tls>>,
    counters: Arc<ListenerCounters>,
    tx: mpsc::Sender<(Io, Peer)>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = tx.closed() => return,
        };
        // Without TCP_NODELAY, small answers (Raft acks, forwarded writes) wait for the
        // peer's delayed ACK: ~40 ms per replication round under load.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Some(tls) = &tls else {
            let peer = Peer {
                addr,
                member_cert: false,
                identity: None,
            };
            if tx.send((Either::Left(stream), peer)).await.is_err() {
                return;
            }
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        let (tx, counters) = (tx.clone(), counters.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    // rustls verified the chain to the cluster CA before it got here.
                    let certs = stream.get_ref().1.peer_certificates();
                    let member_cert = certs.is_some_and(|certs| !certs.is_empty());
                    let identity = certs
                        .and_then(|certs| certs.first())
                        .and_then(|cert| CertIdentity::of_der(cert))
                        .map(Arc::new);
                    let peer = Peer {
                        addr,
                        member_cert,
                        identity,
                    };
                    let _ = tx.send((Either::Right(stream), peer)).await;
                }
                Ok(Err(e)) => {
                    counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%addr, "TLS handshake timed out");
                }
            }
        });
    }
}

impl axum::serve::Listener for Listener {
    type Io = Counted;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some((io, peer)) => {
                self.counters.open.fetch_add(1, Ordering::Relaxed);
                let counters = self.counters.clone();
                (Counted { io, counters }, peer)
            }
            // The accept task ended (it only does when the runtime shuts down).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            member_cert: false,
            identity: None,
        })
    }
}

/// A connection counted in [`ListenerCounters::open`] until it is dropped.
pub struct Counted {
    io: Io,
    counters: Arc<ListenerCounters>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
