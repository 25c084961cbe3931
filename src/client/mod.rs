//! Client commands: talk to a member's HTTP API the way a user would, print tables or JSON.
//! Answers are read as the view types the server serializes (`hivemind_control_plane::http`
//! views, the member's `StatusView`), never by string keys.
//!
//! Layout: this file is the [`Client`] and its errors; [`status`] (`status`, `members`,
//! `leave`, `cp`), [`kv`] (`kv`, `events`, `snapshot`), [`coordination`] (`kv watch`, `lock`,
//! `elect`), [`keygroups`] (`keygroup`, `responsibilities`), [`backup`] (`backup ...`).

mod acl;
mod backup;
mod coordination;
mod keygroups;
mod kv;
mod status;

pub use acl::acl;
pub use backup::backup;
pub use coordination::{elect, lock, ChildExited};
pub use keygroups::{keygroup, responsibilities};
pub use kv::{events, kv, snapshot};
pub use status::{cp, leave, members, status, verdict, Unhealthy};

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// `println!` that reports a closed stdout as an error instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)
    };
}
pub(crate) use outln;

use crate::cli::ClientArgs;
use hivemind_common::tls::ClientTls;

/// A member's HTTP API.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// The CLI's TLS (`--ca-file`, `--client-cert`, `--client-key`), also for the backup
    /// spaces it reads from.
    pub(crate) tls: Option<ClientTls>,
    pub(crate) token: Option<String>,
    pub json: bool,
}

/// An error answer of the API, printed as `error: CODE: message`.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (HTTP {})",
            self.code,
            self.message,
            self.status.as_u16()
        )
    }
}

impl std::error::Error for ApiFailure {}

/// How the CLI reaches `--http-addr`: `https://` or `--ca-file` means TLS against that CA (with
/// a client certificate when given), `http://` or a bare `HOST:PORT` plain HTTP. Answers the TLS
/// config and the base URL.
fn reach(args: &ClientArgs) -> Result<(Option<ClientTls>, String)> {
    let (scheme, hostport) = match args.http_addr.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (Some(scheme), rest.trim_end_matches('/')),
        Some((other, _)) => {
            anyhow::bail!("--http-addr: {other}:// is neither http:// nor https://")
        }
        None => (None, args.http_addr.as_str()),
    };
    let client = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("--client-key: --client-cert needs its key"),
        (None, Some(_)) => anyhow::bail!("--client-cert: --client-key needs its certificate"),
    };
    let tls = match (scheme, &args.ca_file) {
        (Some("http"), Some(_)) => {
            anyhow::bail!("--ca-file: given for an http:// address; use https://")
        }
        (Some("https"), None) => anyhow::bail!(
            "--ca-file: https:// needs the cluster CA (the ca.pem of `hivemind tls ca create`)"
        ),
        (_, Some(ca)) => Some(
            hivemind_tls::cli_client(ca, client).map_err(|e| anyhow::anyhow!("--ca-file: {e}"))?,
        ),
        (_, None) if client.is_some() => {
            anyhow::bail!("--ca-file: a client certificate is only sent over https://")
        }
        (_, None) => None,
    };
    let base = hivemind_common::tls::url(tls.as_ref(), hostport, "");
    Ok((tls, base))
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Self> {
        let (tls, base) = reach(args)?;
        Ok(Self {
            http: hivemind_tls::http_client(tls.as_ref())
                .timeout(Duration::from_secs(330))
                .build()
                .context("building the HTTP client")?,
            base,
            tls,
            token: args.token.clone(),
            json: args.json,
        })
    }

    /// Sends a request; non-2xx answers become [`ApiFailure`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach hivemind at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v["error"][name].as_str())
                .map(str::to_string)
        };
        Err(ApiFailure {
            status,
            code: field("code").unwrap_or_else(|| "http_error".into()),
            message: field("message").unwrap_or(text),
        }
        .into())
    }

    /// A GET answered as the server's view type `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None).await
    }

    /// A request answered as the server's view type `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let answer = self.send(method, path, body).await?.bytes().await?;
        serde_json::from_slice(&answer)
            .with_context(|| format!("the answer of {path} is not in the form this client knows"))
    }

    /// Prints `value` as the `--json` output.
    pub(crate) fn print(&self, value: &impl Serialize) -> std::io::Result<()> {
        outln!(
            "{}",
            serde_json::to_string_pretty(value).expect("views serialize")
        )
    }
}

/// Keys go into the URL path: escape what would change its meaning.
fn key_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An optional value as a table cell.
pub(crate) fn cell<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}
