//! [`BincodeCodec`]: foca's headers and member updates in hivemind's wire codec (bincode 2).
//! Encoding goes through a scratch buffer so a failed encode never leaves half a value in the
//! packet; decoding is total (garbage is an error, never a panic).

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member};
use hivemind_common::codec::{decode_prefix, try_encode, CodecError};

use super::GossipId;

#[derive(Debug, Default, Clone, Copy)]
pub struct BincodeCodec;

fn put<T: serde::Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
    let bytes = try_encode(value)?;
    if buf.remaining_mut() < bytes.len() {
        // Refusing is better than a partial write.
        return Err(CodecError::BufferTooSmall {
            needed: bytes.len(),
            available: buf.remaining_mut(),
        });
    }
    buf.put_slice(&bytes);
    Ok(())
}

fn take<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    let (value, used) = decode_prefix(buf.chunk())?;
    buf.advance(used);
    Ok(value)
}

impl Codec<GossipId> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<GossipId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<GossipId>, Self::Error> {
        take(buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<GossipId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<GossipId>, Self::Error> {
        take(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::State;
    use hivemind_common::MemberId;
    use proptest::prelude::*;

    fn gid(raw: u64, generation: u64) -> GossipId {
        GossipId {
            id: MemberId::new(raw).unwrap(),
            addr: std::net::SocketAddr::from(([10, 0, 0, 1], 7701)),
            generation,
        }
    }

    proptest! {
        #[test]
        fn members_round_trip_back_to_back(raw in 1u64.., generation: u64, incarnation: u16, down: bool) {
            let state = if down { State::Down } else { State::Alive };
            let member = Member::new(gid(raw, generation), incarnation, state);
            let mut codec = BincodeCodec;
            let mut buf = Vec::new();
            codec.encode_member(&member, &mut buf).unwrap();
            codec.encode_member(&member, &mut buf).unwrap();
            let mut slice = &buf[..];
            prop_assert_eq!(codec.decode_member(&mut slice).unwrap(), member.clone());
            prop_assert_eq!(codec.decode_member(&mut slice).unwrap(), member);
            prop_assert!(slice.is_empty());
        }

        #[test]
        fn garbage_is_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut codec = BincodeCodec;
            let _ = codec.decode_header(&bytes[..]);
            let _ = codec.decode_member(&bytes[..]);
        }
    }
}
