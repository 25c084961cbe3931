//! The owner key and what it does to chunks (DESIGN.md §6d): chunk ids are BLAKE3 keyed with a
//! key derived from the owner key (equal data dedups within an owner, nothing is learnt across
//! owners), and chunks are sealed with XChaCha20-Poly1305 under another derived key before they
//! leave the owner, with the chunk id as associated data, so a space cannot swap one chunk for
//! another. Sans IO apart from the random nonce.
//!
//! Formats (DESIGN.md §6d-2): a v2 envelope is zstd-compressed before sealing, or stored raw
//! when it does not shrink, flagged inside the sealed bytes: `[2, codec, plain length (u32 LE)]`
//! then the body, sealed with `id || 2` as associated data. A v1 chunk (written before
//! compression) is the plaintext sealed with `id` alone; [`OwnerKey::open`] reads both, so
//! every snapshot written before stays restorable.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hivemind_common::backup::ChunkId;

const NONCE_LEN: usize = 24;
/// The envelope format this build writes.
pub const FORMAT: u8 = 2;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const HEADER_LEN: usize = 6;
/// zstd's level: its default, restic's `auto`.
const ZSTD_LEVEL: i32 = 3;
/// The largest plaintext a chunk or tree blob may unpack to (a bound on what a damaged or
/// hostile envelope can make the owner allocate).
pub const MAX_PLAIN: usize = 64 << 20;

/// Why a key or a chunk is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the backup key must be 32 bytes in base64 (hivemind backup key create): {0}")]
    Malformed(String),
    #[error("chunk {0} does not open with this key (a wrong key, or a damaged chunk)")]
    DoesNotOpen(ChunkId),
}

/// An owner key, with its derived id and sealing keys. Never logged (no `Debug`).
#[derive(Clone)]
pub struct OwnerKey {
    id_key: [u8; 32],
    cipher: XChaCha20Poly1305,
}

impl OwnerKey {
    pub fn from_bytes(master: &[u8; 32]) -> Self {
        let id_key = blake3::derive_key("hivemind backup 2026 chunk id", master);
        let seal_key = blake3::derive_key("hivemind backup 2026 chunk seal", master);
        Self {
            id_key,
            cipher: XChaCha20Poly1305::new((&seal_key).into()),
        }
    }

    /// Parses the key file's text (base64 of 32 bytes, whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        let master: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| KeyError::Malformed(format!("{} bytes", b.len())))?;
        Ok(Self::from_bytes(&master))
    }

    /// A new random key as the key file holds it.
    pub fn generate() -> String {
        let master: [u8; 32] = rand::random();
        base64::engine::general_purpose::STANDARD.encode(master)
    }

    pub fn chunk_id(&self, plain: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, plain).as_bytes())
    }

    /// `nonce (24 bytes) || ciphertext+tag` of the v2 envelope (compressed when that shrinks
    /// it), bound to `id`.
    pub fn seal(&self, id: &ChunkId, plain: &[u8]) -> Vec<u8> {
        let compressed = zstd::bulk::compress(plain, ZSTD_LEVEL)
            .ok()
            .filter(|c| c.len() < plain.len());
        let (codec, body) = match &compressed {
            Some(c) => (CODEC_ZSTD, c.as_slice()),
            None => (CODEC_RAW, plain),
        };
        let mut envelope = Vec::with_capacity(HEADER_LEN + body.len());
        envelope.extend([FORMAT, codec]);
        envelope.extend((plain.len() as u32).to_le_bytes());
        envelope.extend(body);
        self.seal_raw(&aad(id, Some(FORMAT)), &envelope)
    }

    /// Seals `msg` as a v1 chunk: the plaintext itself under `id` (what builds before
    /// compression wrote; kept so the tests can prove those still restore).
    pub fn seal_v1(&self, id: &ChunkId, plain: &[u8]) -> Vec<u8> {
        self.seal_raw(&aad(id, None), plain)
    }

    fn seal_raw(&self, aad: &[u8], msg: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::with_capacity(NONCE_LEN + msg.len() + 16);
        out.extend(nonce);
        out.extend(
            self.cipher
                .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
                .expect("in-memory encryption cannot fail"),
        );
        out
    }

    fn open_raw(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
            .ok()
    }

    /// Opens a sealed chunk of either format and checks that its plaintext is the one `id`
    /// names.
    pub fn open(&self, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let refused = || KeyError::DoesNotOpen(*id);
        let plain = match self.open_raw(&aad(id, Some(FORMAT)), sealed) {
            Some(envelope) => unpack(&envelope).ok_or_else(refused)?,
            None => self.open_raw(&aad(id, None), sealed).ok_or_else(refused)?,
        };
        if self.chunk_id(&plain) != *id {
            return Err(refused());
        }
        Ok(plain)
    }
}

/// The associated data: the chunk id, and the envelope format from v2 on.
fn aad(id: &ChunkId, format: Option<u8>) -> Vec<u8> {
    let mut aad = id.0.to_vec();
    aad.extend(format);
    aad
}

/// A v2 envelope's plaintext (`None`: not a v2 envelope this build reads).
fn unpack(envelope: &[u8]) -> Option<Vec<u8>> {
    let (header, body) = envelope.split_at_checked(HEADER_LEN)?;
    let len = u32::from_le_bytes(header[2..6].try_into().ok()?) as usize;
    if header[0] != FORMAT || len > MAX_PLAIN {
        return None;
    }
    let plain = match header[1] {
        CODEC_RAW => body.to_vec(),
        CODEC_ZSTD => zstd::bulk::decompress(body, len).ok()?,
        _ => return None,
    };
    (plain.len() == len).then_some(plain)
}

/// Bytes sealing adds to an envelope that stays raw.
pub const SEAL_OVERHEAD: u64 = NONCE_LEN as u64 + 16 + HEADER_LEN as u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_keyed_and_sealed_chunks_open_only_with_their_key_and_id() {
        let a = OwnerKey::from_bytes(&[1; 32]);
        let b = OwnerKey::from_bytes(&[2; 32]);
        assert_eq!(
            a.chunk_id(b"data"),
            a.chunk_id(b"data"),
            "dedup within an owner"
        );
        assert_ne!(
            a.chunk_id(b"data"),
            b.chunk_id(b"data"),
            "nothing across owners"
        );
        let id = a.chunk_id(b"data");
        let sealed = a.seal(&id, b"data");
        assert_eq!(
            sealed.len() as u64,
            4 + SEAL_OVERHEAD,
            "too small to shrink: raw"
        );
        assert_ne!(a.seal(&id, b"data"), sealed, "a fresh nonce each time");
        assert_eq!(a.open(&id, &sealed).unwrap(), b"data");
        assert!(b.open(&id, &sealed).is_err(), "a wrong key");
        let other = a.chunk_id(b"else");
        assert!(
            a.open(&other, &sealed).is_err(),
            "a chunk swapped for another"
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(a.open(&id, &flipped).is_err());
        assert!(a.open(&id, &sealed[..10]).is_err());
    }

    #[test]
    fn chunks_that_shrink_are_compressed_others_stay_raw_and_v1_chunks_still_open() {
        let key = OwnerKey::from_bytes(&[3; 32]);
        let text = b"hivemind ".repeat(10_000);
        let id = key.chunk_id(&text);
        let sealed = key.seal(&id, &text);
        assert!(sealed.len() < text.len() / 10, "{} bytes", sealed.len());
        assert_eq!(key.open(&id, &sealed).unwrap(), text);

        let noise: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let noise_id = key.chunk_id(&noise);
        let sealed = key.seal(&noise_id, &noise);
        assert!(sealed.len() as u64 <= noise.len() as u64 + SEAL_OVERHEAD);
        assert_eq!(key.open(&noise_id, &sealed).unwrap(), noise);

        // A chunk sealed before compression existed (v1) opens, and is checked the same way.
        let v1 = key.seal_v1(&id, &text);
        assert_eq!(key.open(&id, &v1).unwrap(), text);
        assert!(key.open(&noise_id, &v1).is_err());
        // A v2 envelope that claims more than it holds, or an unknown codec, does not open.
        assert_eq!(unpack(&[FORMAT, CODEC_RAW, 9, 0, 0, 0, 1, 2]), None);
        assert_eq!(unpack(&[FORMAT, 7, 1, 0, 0, 0, 1]), None);
        assert_eq!(unpack(&[3, CODEC_RAW, 1, 0, 0, 0, 1]), None);
    }

    #[test]
    fn key_files_parse_and_bad_ones_are_named() {
        let text = OwnerKey::generate();
        assert!(OwnerKey::parse(&format!("{text}\n")).is_ok());
        assert!(matches!(
            OwnerKey::parse("not base64!"),
            Err(KeyError::Malformed(_))
        ));
        assert!(matches!(
            OwnerKey::parse("AAAA"),
            Err(KeyError::Malformed(m)) if m.contains("3 bytes")
        ));
    }
}
