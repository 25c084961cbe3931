//! What owners, spaces and the CLI send each other, declared once: the routes and bodies of a
//! space, and [`Spaces`], the client that calls them (an owner over the internal routes with
//! the cluster secret, the CLI over the public role routes with the admin token).
//!
//! Internal routes (under `/internal/v1/roles/backup`): `POST /upload` ([`UploadHeader`] then
//! the sealed chunks back to back, see [`parse_upload`]; the space stores them as packs),
//! `POST /heartbeat` (JSON [`Heartbeat`] → [`HeartbeatAnswer`]). On both the internal and the
//! public prefix: `GET /chunks/{owner}` (the owner's chunk ids held here, the seed's "list of
//! my chunks"), `GET /chunks/{owner}/{id}` (the sealed chunk) and `POST /chunks/{owner}/read`
//! (bincode chunk ids → bincode `(id, sealed)` pairs of those held intact: restore and repair
//! read many chunks per request).

use std::collections::BTreeMap;
use std::time::Duration;

use hivemind_common::backup::ChunkId;
use hivemind_common::tls::{url, ClientTls};
use serde::{Deserialize, Serialize};

pub const INTERNAL_PREFIX: &str = "/internal/v1/roles/backup";
pub const PUBLIC_PREFIX: &str = "/v1/roles/backup";
/// The largest upload body a space takes.
pub const MAX_UPLOAD_BYTES: usize = 48 * 1024 * 1024;

/// What an upload carries before its chunks: whose, under which reservation, and each
/// chunk's id and length in the order the bytes follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadHeader {
    pub owner: String,
    pub reservation: u64,
    pub chunks: Vec<(ChunkId, u32)>,
}

/// An upload's body: the header's length (u32 LE), the header (bincode), then the chunks
/// back to back. Streamed from the batch's buffers: nothing is copied per space.
pub fn upload_parts(header: &UploadHeader, chunks: Vec<bytes::Bytes>) -> Vec<bytes::Bytes> {
    let head = hivemind_common::encode(header);
    let mut parts = Vec::with_capacity(chunks.len() + 2);
    parts.push(bytes::Bytes::from(
        (head.len() as u32).to_le_bytes().to_vec(),
    ));
    parts.push(bytes::Bytes::from(head));
    parts.extend(chunks);
    parts
}

/// Sealed chunks by id.
pub type SealedChunks = Vec<(ChunkId, Vec<u8>)>;

/// An upload's header and chunks from its body (`Err` names what is wrong).
pub fn parse_upload(body: &[u8]) -> Result<(UploadHeader, SealedChunks), String> {
    let (len, rest) = body.split_at_checked(4).ok_or("no header length")?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let (head, mut data) = rest.split_at_checked(len).ok_or("a short header")?;
    let header: UploadHeader = hivemind_common::decode(head).map_err(|e| e.to_string())?;
    let mut chunks = Vec::with_capacity(header.chunks.len());
    for (id, len) in &header.chunks {
        let (chunk, rest) = data
            .split_at_checked(*len as usize)
            .ok_or_else(|| format!("chunk {id} is cut short"))?;
        chunks.push((*id, chunk.to_vec()));
        data = rest;
    }
    if !data.is_empty() {
        return Err(format!("{} bytes after the last chunk", data.len()));
    }
    Ok((header, chunks))
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

    /// Uploads `chunks` (sealed) to the space at `addr` against `reservation`.
    pub async fn upload(
        &self,
        addr: &str,
        owner: &str,
        reservation: u64,
        chunks: Vec<(ChunkId, bytes::Bytes)>,
    ) -> Result<UploadAnswer, CallError> {
        let header = UploadHeader {
            owner: owner.to_string(),
            reservation,
            chunks: chunks.iter().map(|(id, b)| (*id, b.len() as u32)).collect(),
        };
        let parts = upload_parts(&header, chunks.into_iter().map(|(_, b)| b).collect());
        let body = reqwest::Body::wrap_stream(futures::stream::iter(
            parts.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let req = self
            .request(reqwest::Method::POST, addr, "/upload")
            .body(body);
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

    /// Those of `ids` the space holds intact, sealed.
    pub async fn read_many(
        &self,
        addr: &str,
        owner: &str,
        ids: &[ChunkId],
    ) -> Result<Vec<(ChunkId, crate::tree::ByteBuf)>, CallError> {
        let req = self
            .request(
                reqwest::Method::POST,
                addr,
                &format!("/chunks/{owner}/read"),
            )
            .body(hivemind_common::encode(&ids.to_vec()));
        let bytes = self.send_bytes(addr, req).await?;
        hivemind_common::decode(&bytes).map_err(|e| failed(addr, e))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_body_parses_back_and_a_cut_one_is_named() {
        let header = UploadHeader {
            owner: "laptop".into(),
            reservation: 7,
            chunks: vec![(ChunkId([1; 32]), 3), (ChunkId([2; 32]), 2)],
        };
        let parts = upload_parts(
            &header,
            vec![
                bytes::Bytes::from_static(b"abc"),
                bytes::Bytes::from_static(b"de"),
            ],
        );
        let body: Vec<u8> = parts.concat();
        let (back, chunks) = parse_upload(&body).unwrap();
        assert_eq!(back, header);
        assert_eq!(
            chunks,
            [
                (ChunkId([1; 32]), b"abc".to_vec()),
                (ChunkId([2; 32]), b"de".to_vec())
            ]
        );
        assert!(parse_upload(&body[..body.len() - 1])
            .unwrap_err()
            .contains("cut short"));
        let mut longer = body.clone();
        longer.push(0);
        assert!(parse_upload(&longer)
            .unwrap_err()
            .contains("after the last chunk"));
        assert!(parse_upload(&[1, 0]).is_err());
    }
}
