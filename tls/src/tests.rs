//! The startup checks, mutual TLS on the listener, and reload, with certificates made here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::listener::{Listener, ListenerCounters};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A member certificate from `ca` for `ips`, valid from `from_days` to `to_days` around now.
fn leaf(ca: &Ca, ips: &[IpAddr], from_days: i64, to_days: i64) -> (String, String) {
    let mut params = CertificateParams::new(vec!["member".to_string()]).unwrap();
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn files(dir: &Path, prefix: &str, ca: &Ca, pair: &(String, String)) -> TlsFiles {
    TlsFiles {
        cert: write(dir, &format!("{prefix}.pem"), &pair.0),
        key: write(dir, &format!("{prefix}-key.pem"), &pair.1),
        ca: write(dir, &format!("{prefix}-ca.pem"), &ca.cert_pem),
    }
}

#[test]
fn startup_names_what_is_wrong_with_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca();
    let good = leaf(&ca1, &[LOOPBACK], -1, 30);
    Tls::load(files(dir.path(), "good", &ca1, &good), LOOPBACK).expect("good files load");

    let other = ca();
    let foreign = files(dir.path(), "foreign", &other, &good);
    let err = Tls::load(foreign, LOOPBACK).unwrap_err();
    assert!(matches!(err, TlsError::Invalid { .. }), "{err}");

    let err = Tls::load(
        files(dir.path(), "name", &ca1, &good),
        "10.1.2.3".parse().unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("10.1.2.3"), "{err}");

    let expired = leaf(&ca1, &[LOOPBACK], -30, -1);
    let err = Tls::load(files(dir.path(), "expired", &ca1, &expired), LOOPBACK).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");

    let mut mismatched = files(dir.path(), "mismatch", &ca1, &good);
    mismatched.key = write(
        dir.path(),
        "other-key.pem",
        &leaf(&ca1, &[LOOPBACK], -1, 30).1,
    );
    let err = Tls::load(mismatched, LOOPBACK).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

    let mut missing = files(dir.path(), "missing", &ca1, &good);
    missing.ca = dir.path().join("nope.pem");
    let err = Tls::load(missing, LOOPBACK).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let mut empty = files(dir.path(), "empty", &ca1, &good);
    empty.cert = write(dir.path(), "empty.pem", "not pem at all\n");
    let err = Tls::load(empty, LOOPBACK).unwrap_err();
    assert!(matches!(err, TlsError::Empty { .. }), "{err}");
}

/// Serves one line-echo per connection; answers what `Peer` said about the client.
async fn serve(tls: Arc<Tls>, counters: Arc<ListenerCounters>) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let mut listener = Listener::start(tcp, Some(tls), counters).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap().addr;
    tokio::spawn(async move {
        loop {
            let (mut io, peer) = axum::serve::Listener::accept(&mut listener).await;
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                if io.read_exact(&mut byte).await.is_ok() {
                    let _ = io.write_all(&[u8::from(peer.member_cert)]).await;
                    let _ = io.flush().await;
                }
            });
        }
    });
    addr
}

async fn ask(tls: &ClientTls, addr: SocketAddr) -> std::io::Result<bool> {
    let mut io = connect(Some(tls), &addr.to_string()).await?;
    io.write_all(b"?").await?;
    io.flush().await?;
    let mut answer = [0u8; 1];
    io.read_exact(&mut answer).await?;
    Ok(answer[0] == 1)
}

#[tokio::test]
async fn members_authenticate_each_other_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca();
    let server = Arc::new(
        Tls::load(
            files(dir.path(), "server", &ca1, &leaf(&ca1, &[LOOPBACK], -1, 30)),
            LOOPBACK,
        )
        .unwrap(),
    );
    let counters = Arc::new(ListenerCounters::default());
    let addr = serve(server.clone(), counters.clone()).await;

    // Another member of the cluster: verified both ways.
    let member = Tls::load(
        files(dir.path(), "member", &ca1, &leaf(&ca1, &[LOOPBACK], -1, 30)),
        LOOPBACK,
    )
    .unwrap();
    assert!(
        ask(&member.client(), addr).await.unwrap(),
        "member cert seen"
    );

    // A CLI with only the CA: served, but not as a member.
    let cli = cli_client(&dir.path().join("server-ca.pem"), None).unwrap();
    assert!(!ask(&cli, addr).await.unwrap(), "no client cert");

    // A member of another cluster: its CA does not know ours, nor ours its certificate.
    let other = ca();
    let stranger = Tls::load(
        files(
            dir.path(),
            "stranger",
            &other,
            &leaf(&other, &[LOOPBACK], -1, 30),
        ),
        LOOPBACK,
    )
    .unwrap();
    assert!(ask(&stranger.client(), addr).await.is_err());
    // ... even when it trusts our CA, its own certificate is refused by the server.
    let mut half = files(
        dir.path(),
        "half",
        &other,
        &leaf(&other, &[LOOPBACK], -1, 30),
    );
    half.ca = dir.path().join("server-ca.pem");
    let pair = read_key_pair(&half.cert, &half.key).unwrap();
    let config = client_builder()
        .with_root_certificates(read_roots(&half.ca).unwrap())
        .with_client_cert_resolver(Arc::new(reload::Fixed(pair)));
    let half = ClientTls {
        config: Arc::new(config),
    };
    assert!(
        ask(&half, addr).await.is_err(),
        "foreign client cert refused"
    );

    // Plaintext to the TLS port.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
    let failures = counters.handshake_failures.load(Ordering::Relaxed);
    assert!(failures >= 3, "counted: {failures}");
}

#[tokio::test]
async fn reload_swaps_the_certificates_for_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca();
    let server_files = files(dir.path(), "server", &ca1, &leaf(&ca1, &[LOOPBACK], -1, 30));
    let server = Arc::new(Tls::load(server_files.clone(), LOOPBACK).unwrap());
    let addr = serve(server.clone(), Arc::default()).await;
    let cli1 = cli_client(&server_files.ca, None).unwrap();
    ask(&cli1, addr).await.expect("served under the first CA");

    // The cluster moves to a new CA: files replaced, then SIGHUP (here: reload).
    let ca2 = ca();
    let moved = files(dir.path(), "server", &ca2, &leaf(&ca2, &[LOOPBACK], -1, 30));
    assert_eq!(moved, server_files);
    server.reload().unwrap();
    let cli2 = cli_client(&server_files.ca, None).unwrap();
    ask(&cli2, addr).await.expect("served under the new CA");
    assert!(
        ask(&cli1, addr).await.is_err(),
        "the old CA no longer verifies"
    );
    // The member's own client side follows too: it now verifies peers against the new CA.
    assert!(
        ask(&server.client(), addr).await.unwrap(),
        "a member of the new CA"
    );

    // Broken files: the reload is refused and the old material stays.
    std::fs::write(&server_files.key, "garbage").unwrap();
    assert!(server.reload().is_err());
    ask(&cli2, addr).await.expect("still served");
}
