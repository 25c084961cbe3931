//! What owners, spaces and the CLI send each other, declared once: the routes and bodies of a
//! space, and [`Spaces`], the client that calls them (an owner over the internal routes with
//! the cluster secret, the CLI over the public role routes with the admin token).
//!
//! Internal routes (under `/internal/v1/roles/backup`): `POST /upload` (bincode [`Upload`]),
//! `POST /heartbeat` (JSON [`Heartbeat`] → [`HeartbeatAnswer`]). On both the internal and the
//! public prefix: `GET /chunks/{owner}` (the owner's chunk ids held here, the seed's "list of
//! my chunks") and `GET /chunks/{owner}/{id}` (the sealed chunk).

use std::collections::BTreeMap;
use std::time::Duration;

use hivemind_common::backup::ChunkId;
use hivemind_common::tls::{url, ClientTls};
use serde::{Deserialize, Serialize};

pub const INTERNAL_PREFIX: &str = "/internal/v1/roles/backup";
pub const PUBLIC_PREFIX: &str = "/v1/roles/backup";
/// The largest upload body a space takes.
pub const MAX_UPLOAD_BYTES: usize = 48 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    pub owner: String,
    pub reservation: u64,
    pub chunks: Vec<(ChunkId, crate::tree::ByteBuf)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadAnswer {
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub owner: String,
    /// Hex chunk ids.
    pub chunks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// Listed chunks this space does not hold.
    pub missing: Vec<String>,
    /// How many of the owner's chunks it dropped because they were not listed.
    pub dropped: usize,
}

/// Why a call to a space failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{space}: {message}")]
    Failed { space: String, message: String },
}

/// The chunk ids among a space's hex strings (one that does not parse names no chunk).
fn ids(hexes: &[String]) -> Vec<ChunkId> {
    hexes.iter().filter_map(|h| ChunkId::from_hex(h)).collect()
}

/// Calls spaces by their HTTP address.
#[derive(Clone)]
pub struct Spaces {
    http: reqwest::Client,
    tls: Option<ClientTls>,
    prefix: &'static str,
    /// `(header, value)` sent with every call: the cluster secret or the admin token.
    auth: Option<(&'static str, String)>,
}

fn failed(space: &str, message: impl ToString) -> CallError {
    CallError::Failed {
        space: space.to_string(),
        message: message.to_string(),
    }
}

impl Spaces {
    /// An owner's client: internal routes, the cluster secret.
    pub fn internal(secret: Option<String>, tls: Option<ClientTls>) -> Self {
        Self::new(
            tls,
            INTERNAL_PREFIX,
            secret.map(|s| (hivemind_common::role::CLUSTER_SECRET_HEADER, s)),
        )
    }

    /// The CLI's client: public routes, the admin token.
    pub fn public(token: Option<String>, tls: Option<ClientTls>) -> Self {
        Self::new(
            tls,
            PUBLIC_PREFIX,
            token.map(|t| ("authorization", format!("Bearer {t}"))),
        )
    }

    fn new(
        tls: Option<ClientTls>,
        prefix: &'static str,
        auth: Option<(&'static str, String)>,
    ) -> Self {
        let http = hivemind_tls::http_client(tls.as_ref())
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client builds");
        Self {
            http,
            tls,
            prefix,
            auth,
        }
    }

    fn request(&self, method: reqwest::Method, addr: &str, path: &str) -> reqwest::RequestBuilder {
        let url = url(self.tls.as_ref(), addr, &format!("{}{path}", self.prefix));
        let mut req = self.http.request(method, url);
        if let Some((name, value)) = &self.auth {
            req = req.header(*name, value);
        }
        req
    }

    async fn send(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let resp = req.send().await.map_err(|e| failed(addr, e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Err(failed(addr, format!("{status}: {body}")))
        }
    }

    async fn send_bytes(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, CallError> {
        let resp = self.send(addr, req).await?;
        Ok(resp.bytes().await.map_err(|e| failed(addr, e))?.to_vec())
    }

    async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let resp = self.send(addr, req).await?;
        resp.json().await.map_err(|e| failed(addr, e))
    }

    pub async fn upload(&self, addr: &str, upload: &Upload) -> Result<UploadAnswer, CallError> {
        let req = self
            .request(reqwest::Method::POST, addr, "/upload")
            .body(hivemind_common::encode(upload));
        let bytes = self.send_bytes(addr, req).await?;
        hivemind_common::decode(&bytes).map_err(|e| failed(addr, e))
    }

    pub async fn heartbeat(
        &self,
        addr: &str,
        owner: &str,
        chunks: &[ChunkId],
    ) -> Result<Vec<ChunkId>, CallError> {
        let body = Heartbeat {
            owner: owner.to_string(),
            chunks: chunks.iter().map(ChunkId::hex).collect(),
        };
        let req = self
            .request(reqwest::Method::POST, addr, "/heartbeat")
            .json(&body);
        let answer: HeartbeatAnswer = self.send_json(addr, req).await?;
        Ok(ids(&answer.missing))
    }

    pub async fn list(&self, addr: &str, owner: &str) -> Result<Vec<ChunkId>, CallError> {
        let req = self.request(reqwest::Method::GET, addr, &format!("/chunks/{owner}"));
        let hexes: Vec<String> = self.send_json(addr, req).await?;
        Ok(ids(&hexes))
    }

    pub async fn read(&self, addr: &str, owner: &str, id: &ChunkId) -> Result<Vec<u8>, CallError> {
        let req = self.request(reqwest::Method::GET, addr, &format!("/chunks/{owner}/{id}"));
        self.send_bytes(addr, req).await
    }

    /// Where each of `owner`'s chunks is, asking every space in `addrs` (unreachable ones are
    /// skipped and named in the answer's second half).
    pub async fn locate(
        &self,
        addrs: &[String],
        owner: &str,
    ) -> (BTreeMap<ChunkId, Vec<String>>, Vec<CallError>) {
        let mut at: BTreeMap<ChunkId, Vec<String>> = BTreeMap::new();
        let mut errors = Vec::new();
        for addr in addrs {
            match self.list(addr, owner).await {
                Ok(ids) => {
                    for id in ids {
                        at.entry(id).or_default().push(addr.clone());
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        (at, errors)
    }
}
