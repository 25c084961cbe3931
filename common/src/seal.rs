//! Sealing bytes with a 32-byte key: ChaCha20-Poly1305, `nonce (12 bytes) || ciphertext+tag`.
//! Used for gossip packets (the gossip key) and host records (a keygroup's secret). A sealed
//! message that does not open is never decoded.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

pub const NONCE_LEN: usize = 12;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the message does not open with this key")]
pub struct OpenError;

/// A ready cipher for one key.
#[derive(Clone)]
pub struct Cipher(ChaCha20Poly1305);

impl Cipher {
    /// `None` unless `key` is 32 bytes.
    pub fn new(key: &[u8]) -> Option<Self> {
        (key.len() == 32).then(|| Self(ChaCha20Poly1305::new(Key::from_slice(key))))
    }

    /// Seals `plain` with a caller-chosen random `nonce` (randomness stays outside).
    pub fn seal(&self, nonce: [u8; NONCE_LEN], plain: &[u8]) -> Vec<u8> {
        let mut out = nonce.to_vec();
        out.extend(
            self.0
                .encrypt(Nonce::from_slice(&nonce), plain)
                .expect("in-memory encryption cannot fail"),
        );
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_with_its_key_and_never_a_runt() {
        let a = Cipher::new(&[1; 32]).unwrap();
        let sealed = a.seal([7; NONCE_LEN], b"hello");
        assert_eq!(a.open(&sealed).unwrap(), b"hello");
        assert_eq!(Cipher::new(&[2; 32]).unwrap().open(&sealed), Err(OpenError));
        assert_eq!(a.open(&sealed[..5]), Err(OpenError));
        assert!(Cipher::new(&[1; 5]).is_none());
    }
}
