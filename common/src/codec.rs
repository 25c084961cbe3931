//! The wire codec: bincode 2 (serde mode) with a size limit and strict, total decoding.
//!
//! Every byte string that crosses a process boundary between members (Raft RPC bodies, forwarded
//! commands, snapshots) goes through [`encode`]/[`decode`]. Decoding never panics: garbage, a
//! truncated body, trailing bytes or a length prefix beyond [`MAX_DECODE_BYTES`] are errors.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Upper bound on what one decode may allocate; protects against hostile length prefixes.
pub const MAX_DECODE_BYTES: usize = 256 * 1024 * 1024;

/// Why bytes could not be encoded or decoded. Nothing was changed by a failed decode.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("cannot decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("cannot decode: {trailing} trailing bytes after the value")]
    TrailingBytes { trailing: usize },
    #[error("cannot encode: {needed} bytes do not fit in the {available} left in the buffer")]
    BufferTooSmall { needed: usize, available: usize },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes a value. Fails only for values serde cannot express in bincode (e.g. unsized maps).
pub fn try_encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Encodes a value whose type is known to be bincode-safe (all of hivemind's wire types are;
/// the round-trip tests prove it).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    try_encode(value).expect("hivemind wire types always encode")
}

/// Decodes exactly one value from `bytes`; any trailing byte is an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes {
            trailing: bytes.len() - read,
        });
    }
    Ok(value)
}

/// Decodes one value from the start of `bytes` and says how many bytes it used (for framings
/// that put several values back to back, like gossip packets).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    Ok(bincode::serde::decode_from_slice(bytes, config())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Sample {
        Unit,
        Tuple(u64, String),
        Struct {
            id: crate::MemberId,
            tags: Vec<String>,
            map: BTreeMap<String, Vec<u8>>,
            maybe: Option<u32>,
        },
    }

    fn sample() -> impl Strategy<Value = Sample> {
        prop_oneof![
            Just(Sample::Unit),
            (any::<u64>(), ".*").prop_map(|(n, s)| Sample::Tuple(n, s)),
            (
                1u64..,
                proptest::collection::vec(".{0,8}", 0..4),
                proptest::collection::btree_map(
                    ".{0,8}",
                    proptest::collection::vec(any::<u8>(), 0..16),
                    0..4
                ),
                any::<Option<u32>>()
            )
                .prop_map(|(id, tags, map, maybe)| Sample::Struct {
                    id: crate::MemberId::new(id).unwrap(),
                    tags,
                    map,
                    maybe
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(value in sample()) {
            let bytes = encode(&value);
            prop_assert_eq!(decode::<Sample>(&bytes).unwrap(), value);
        }

        #[test]
        fn garbage_is_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Sample>(&bytes);
        }

        #[test]
        fn trailing_bytes_are_rejected(value in sample(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
            let mut bytes = encode(&value);
            bytes.extend(extra);
            prop_assert!(decode::<Sample>(&bytes).is_err());
        }

        #[test]
        fn truncation_is_rejected(value in sample()) {
            let bytes = encode(&value);
            for cut in 0..bytes.len() {
                prop_assert!(decode::<Sample>(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn huge_length_prefix_is_rejected_without_allocating() {
        // A Vec<u8> whose varint length claims u64::MAX elements.
        let bytes = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }

    #[test]
    fn zero_member_id_is_rejected_on_the_wire() {
        let bytes = encode(&0u64);
        assert!(decode::<crate::MemberId>(&bytes).is_err());
    }
}
