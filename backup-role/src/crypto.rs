//! The owner key and what it does to chunks (DESIGN.md §6d): chunk ids are BLAKE3 keyed with a
//! key derived from the owner key (equal data dedups within an owner, nothing is learnt across
//! owners), and chunks are sealed with XChaCha20-Poly1305 under another derived key before they
//! leave the owner, with the chunk id as associated data, so a space cannot swap one chunk for
//! another. Sans IO apart from the random nonce.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hivemind_common::backup::ChunkId;

const NONCE_LEN: usize = 24;

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

    /// `nonce (24 bytes) || ciphertext+tag`, bound to `id`.
    pub fn seal(&self, id: &ChunkId, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: plain,
                        aad: &id.0,
                    },
                )
                .expect("in-memory encryption cannot fail"),
        );
        out
    }

    /// Opens a sealed chunk and checks that its plaintext is the one `id` names.
    pub fn open(&self, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN {
            return Err(KeyError::DoesNotOpen(*id));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &id.0,
                },
            )
            .map_err(|_| KeyError::DoesNotOpen(*id))?;
        if self.chunk_id(&plain) != *id {
            return Err(KeyError::DoesNotOpen(*id));
        }
        Ok(plain)
    }
}

/// Bytes a sealed chunk adds to its plaintext.
pub const SEAL_OVERHEAD: u64 = NONCE_LEN as u64 + 16;

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
        assert_eq!(sealed.len() as u64, 4 + SEAL_OVERHEAD);
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
