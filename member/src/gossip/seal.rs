//! Packet sealing with the gossip key: ChaCha20-Poly1305, `nonce (12 bytes) || ciphertext+tag`.
//! Without a key packets travel as they are. A packet that fails to open is dropped by the
//! caller and counted; it is never decoded.
//!
//! The same key also yields the cluster secret ([`cluster_secret`]) that internal HTTP routes
//! require: whoever can gossip with the cluster can call its internal routes, nobody else.

pub use hivemind_common::seal::OpenError;
use hivemind_common::seal::{Cipher, NONCE_LEN};

#[derive(Clone)]
pub struct Sealer {
    cipher: Option<Cipher>,
}

impl Sealer {
    pub fn new(key: Option<[u8; 32]>) -> Self {
        Self {
            cipher: key.and_then(|k| Cipher::new(&k)),
        }
    }

    /// Seals `plain` with a caller-chosen random `nonce` (randomness stays outside).
    pub fn seal(&self, nonce: [u8; NONCE_LEN], plain: &[u8]) -> Vec<u8> {
        match &self.cipher {
            None => plain.to_vec(),
            Some(cipher) => cipher.seal(nonce, plain),
        }
    }

    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        match &self.cipher {
            None => Ok(packet.to_vec()),
            Some(cipher) => cipher.open(packet),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sealed_packets_open_with_the_same_key_only(plain in proptest::collection::vec(any::<u8>(), 0..300), nonce: [u8; 12], flip in 0usize..400) {
            let a = Sealer::new(Some([1; 32]));
            let b = Sealer::new(Some([2; 32]));
            let sealed = a.seal(nonce, &plain);
            prop_assert_eq!(a.open(&sealed).unwrap(), plain.clone());
            prop_assert_eq!(b.open(&sealed), Err(OpenError));
            let mut tampered = sealed.clone();
            let i = flip % tampered.len();
            tampered[i] ^= 1;
            prop_assert_eq!(a.open(&tampered), Err(OpenError));
        }

        #[test]
        fn garbage_never_opens(packet in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(Sealer::new(Some([3; 32])).open(&packet), Err(OpenError));
        }
    }

    #[test]
    fn without_a_key_packets_pass_unchanged() {
        let s = Sealer::new(None);
        assert_eq!(s.open(&s.seal([0; 12], b"hi")).unwrap(), b"hi");
    }
}

/// The cluster secret derived from the gossip key (HKDF-SHA256, its own context string, so the
/// secret shown on the wire reveals nothing about the key that seals packets).
pub fn cluster_secret(key: &[u8; 32]) -> String {
    use base64::Engine;
    let mut secret = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, key)
        .expand(b"hivemind cluster secret v1", &mut secret)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
}

#[cfg(test)]
mod secret_tests {
    use super::cluster_secret;

    #[test]
    fn the_cluster_secret_is_stable_per_key_and_differs_between_keys() {
        assert_eq!(cluster_secret(&[7; 32]), cluster_secret(&[7; 32]));
        assert_ne!(cluster_secret(&[7; 32]), cluster_secret(&[8; 32]));
        assert_eq!(cluster_secret(&[7; 32]).len(), 43);
    }
}
