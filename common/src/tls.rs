//! How a member reaches other members' HTTP ports: plain HTTP, or TLS with the cluster CA and
//! this member's certificate (DESIGN.md §6e). Plain data handed to roles; `hivemind-tls` loads
//! the files, reloads them and builds clients from it.

use std::sync::Arc;

/// A member's client side of TLS: verifies peers against the cluster CA and presents this
/// member's certificate (mutual TLS on internal routes). Reloads in place on SIGHUP.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
}

/// The same TLS when it is the same configuration (there is one per member).
impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for ClientTls {}

/// The URL scheme of every member's HTTP port under `tls`.
pub fn scheme(tls: Option<&ClientTls>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// `scheme://addr{path}`: a URL on another member's HTTP port (`addr` is `host:port`).
pub fn url(tls: Option<&ClientTls>, addr: &str, path: &str) -> String {
    format!("{}://{addr}{path}", scheme(tls))
}
