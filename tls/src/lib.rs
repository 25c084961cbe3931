//! TLS for every connection a member accepts or makes (DESIGN.md §6e), with rustls and its ring
//! provider. Owns:
//! - the files (`--tls-cert`, `--tls-key`, `--tls-ca`): read, checked at startup (the key
//!   belongs to the certificate; the certificate is from the cluster CA, unexpired and valid for
//!   the member's address) and reloaded in place on SIGHUP ([`Tls`]);
//! - the server side: a listener for axum that accepts TLS and tells routes whether the peer
//!   presented a certificate from the cluster CA ([`listener`]);
//! - the client side: reqwest clients ([`http_client`]), raw connections for the Raft streams
//!   ([`connect`]) and the CLI's configuration ([`cli_client`]);
//! - clients for servers outside the cluster (a host's HTTPS checks: [`outside`]).
//!
//! Without files everything is plain HTTP, as before.

pub mod identity;
pub mod listener;
pub mod outside;
mod reload;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hivemind_common::tls::ClientTls;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_util::either::Either;

pub use identity::{CertIdentity, IdentityError};
pub use listener::{Listener, Peer};

/// The files a member's TLS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This member's certificate (PEM; the chain may follow it).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The cluster CA (PEM): peers' certificates must chain to it.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files `hivemind tls` writes for certificate `name` in `dir`: `name.pem`,
    /// `name-key.pem` and the CA's `ca.pem`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            ca: dir.join("ca.pem"),
        }
    }

    /// The member flags that name these files: `--tls-cert`, `--tls-key`, `--tls-ca`.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for (flag, path) in [
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
            ("--tls-ca", &self.ca),
        ] {
            flags.push(flag.to_string());
            flags.push(path.display().to_string());
        }
        flags
    }
}

/// Why TLS material cannot be used; every variant names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("the {what} file {path} holds no {what}")]
    Empty { what: &'static str, path: String },
    #[error("the key {key} does not belong to the certificate {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("the certificate {cert} is not valid for {name} under the CA {ca}: {reason}")]
    Invalid {
        cert: String,
        ca: String,
        name: String,
        reason: String,
    },
    #[error("TLS setup failed: {0}")]
    Setup(String),
    #[error("the certificate {cert} names {now:?}, not {before:?} as the one it replaces")]
    IdentityChanged {
        cert: String,
        before: Option<CertIdentity>,
        now: Option<CertIdentity>,
    },
}

/// The crypto provider every config here uses (ring: already built for certificate creation).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config on the ring provider and TLS 1.2/1.3, before its verifier is chosen.
fn client_builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
}

/// What the files gave, swapped as a whole on reload.
pub(crate) struct Material {
    /// This member's certificate and key: what it serves and what it presents as a client.
    pub(crate) key: Arc<CertifiedKey>,
    /// Checks a peer's server certificate against the cluster CA.
    pub(crate) verifier: Arc<WebPkiServerVerifier>,
    /// What the listener hands new connections.
    pub(crate) server: Arc<ServerConfig>,
}

impl std::fmt::Debug for Material {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").finish_non_exhaustive()
    }
}

pub(crate) type Shared = Arc<RwLock<Arc<Material>>>;

/// A member's TLS: its material (reloadable) and the client config built on it.
pub struct Tls {
    files: TlsFiles,
    /// The name this member's certificate must be valid for: its advertised address.
    name: ServerName<'static>,
    material: Shared,
    /// Who this member's certificate says it is (a reload must not change it).
    identity: Option<CertIdentity>,
    client: ClientTls,
    /// Reloads that failed their checks (`/metrics`).
    pub reload_failures: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads and checks the files for a member advertising `advertise`.
    pub fn load(files: TlsFiles, advertise: IpAddr) -> Result<Self, TlsError> {
        let name = ServerName::IpAddress(advertise.into());
        let loaded = load(&files, &name)?;
        let identity = CertIdentity::of_der(&loaded.key.cert[0]);
        let material = Arc::new(RwLock::new(Arc::new(loaded)));
        let client = client_builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(reload::PeerVerifier(material.clone())))
            .with_client_cert_resolver(Arc::new(reload::OwnCert(material.clone())));
        Ok(Self {
            files,
            name,
            material,
            identity,
            client: ClientTls {
                config: Arc::new(client),
            },
            reload_failures: Default::default(),
        })
    }

    /// Reads the files again and, when they pass the startup checks, swaps them in: new
    /// connections (both ways) use them; open ones keep theirs. On error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.files, &self.name).and_then(|fresh| {
            let now = CertIdentity::of_der(&fresh.key.cert[0]);
            if now != self.identity {
                return Err(TlsError::IdentityChanged {
                    cert: self.files.cert.display().to_string(),
                    before: self.identity.clone(),
                    now,
                });
            }
            Ok(fresh)
        });
        let fresh = match fresh {
            Ok(fresh) => Arc::new(fresh),
            Err(e) => {
                self.reload_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
        };
        *self.material.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The client side, for every call this member makes to another member.
    pub fn client(&self) -> ClientTls {
        self.client.clone()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Who this member's certificate says it is ([`identity`]); `None` for a certificate
    /// without a hivemind identity.
    pub fn identity(&self) -> Option<&CertIdentity> {
        self.identity.as_ref()
    }

    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.material
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .server
            .clone()
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |reason: String| TlsError::Read {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs("CA certificate", path)? {
        roots.add(ca).map_err(|e| TlsError::Read {
            what: "CA certificate",
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// A certificate with its key, checked to belong together.
fn read_key_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs("certificate", cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
        what: "key",
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Read {
            what: "key",
            path: key.display().to_string(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        key: key.display().to_string(),
        cert: cert.display().to_string(),
    })?;
    Ok(Arc::new(certified))
}

fn load(files: &TlsFiles, name: &ServerName<'static>) -> Result<Material, TlsError> {
    let roots = read_roots(&files.ca)?;
    let key = read_key_pair(&files.cert, &files.key)?;
    let setup = |e: rustls::Error| TlsError::Setup(e.to_string());
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    // The member's own certificate must be one its peers accept: from the cluster CA,
    // unexpired, valid for the address it advertises.
    verifier
        .verify_server_cert(&key.cert[0], &key.cert[1..], name, &[], UnixTime::now())
        .map_err(|e| TlsError::Invalid {
            cert: files.cert.display().to_string(),
            ca: files.ca.display().to_string(),
            name: name.to_str().into_owned(),
            reason: e.to_string(),
        })?;
    // A client certificate is optional on the port (the public API serves plain HTTPS
    // clients); when one is presented it must chain to the cluster CA, and internal routes
    // demand one (`Peer::member_cert`).
    let clients = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(Arc::new(reload::Fixed(key.clone())));
    Ok(Material {
        key,
        verifier,
        server: Arc::new(server),
    })
}

/// The CLI's TLS: peers verified against `ca` (the cluster CA), and a client certificate
/// presented when one is given (`--client-cert`, `--client-key`).
pub fn cli_client(ca: &Path, client: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
    let roots = read_roots(ca)?;
    let builder = client_builder().with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let pair = read_key_pair(cert, key)?;
            builder.with_client_cert_resolver(Arc::new(reload::Fixed(pair)))
        }
        None => builder.with_no_client_auth(),
    };
    Ok(ClientTls {
        config: Arc::new(config),
    })
}

/// A reqwest client builder for calls to members: over `tls` when given, plain HTTP
/// otherwise. Every HTTP client in hivemind starts here (reqwest has no crypto provider of
/// its own in this build).
pub fn http_client(tls: Option<&ClientTls>) -> reqwest::ClientBuilder {
    let config = match tls {
        Some(tls) => (*tls.config).clone(),
        None => client_builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    };
    reqwest::Client::builder().tls_backend_preconfigured(config)
}

/// A connection to another member's HTTP port: plain or TLS.
pub type ClientIo = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// A connection to another member's HTTP port at `addr` (`host:port`), over `tls` when given:
/// what the Raft streams upgrade.
pub async fn connect(tls: Option<&ClientTls>, addr: &str) -> std::io::Result<ClientIo> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Either::Left(tcp));
    };
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    Ok(Either::Right(connector.connect(name, tcp).await?))
}

#[cfg(test)]
mod tests;
