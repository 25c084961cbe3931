//! Gossip datagrams: what the gossip task does with a received packet ([`receive`]): opened with
//! the gossip key, then handed to foca and hivemind's codec.

use std::net::SocketAddr;

use foca::{AccumulatingRuntime, Foca};
use hivemind_common::MemberId;
use hivemind_member::gossip::{receive, BincodeCodec, GossipId, Member, Profile, Sealer};
use rand10::rngs::StdRng;
use rand10::SeedableRng;

/// The key the keyed member of the target seals with.
pub const KEY: [u8; 32] = [7; 32];

/// A member as the gossip task starts it, with identity `raw`.
pub fn member(raw: u64) -> Member {
    Foca::new(
        identity(raw),
        Profile::Lan.config(8),
        StdRng::seed_from_u64(raw),
        BincodeCodec,
    )
}

pub fn identity(raw: u64) -> GossipId {
    GossipId {
        id: MemberId::new(raw).expect("non-zero id"),
        addr: SocketAddr::from(([10, 0, 0, raw as u8], 7946)),
        generation: 1,
    }
}

/// One datagram to a member without a key (so the bytes reach the decoder), the same datagram
/// split in two as two packets after it, and the datagram to a member with the key.
pub fn packet(data: &[u8]) {
    let mut foca = member(1);
    let mut runtime = AccumulatingRuntime::new();
    let plain = Sealer::new(None);
    receive(&mut foca, &mut runtime, &plain, data);
    let (a, b) = data.split_at(data.len() / 2);
    receive(&mut foca, &mut runtime, &plain, a);
    receive(&mut foca, &mut runtime, &plain, b);

    // With a key: garbage is dropped unopened, a sealed seed opens and reaches foca.
    let mut keyed = member(2);
    receive(&mut keyed, &mut runtime, &Sealer::new(Some(KEY)), data);
}
