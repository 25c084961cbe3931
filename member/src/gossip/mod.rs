//! SWIM gossip on foca 2, sans IO: the member identity foca gossips ([`GossipId`]), its wire
//! codec ([`BincodeCodec`]) and the timing profiles ([`Profile`]). Sockets, timers and
//! encryption live in the runtime that drives foca; these parts are plain data and functions,
//! tested deterministically over a simulated network (`sim` tests).

mod codec;
mod identity;
mod profile;
pub mod runtime;
pub mod seal;

pub use codec::BincodeCodec;
pub use identity::GossipId;
pub use profile::Profile;
pub use runtime::{
    receive, Gossip, GossipCommand, GossipEvent, GossipSettings, Member, Received, View,
};
pub use seal::{OpenError, Sealer};

#[cfg(test)]
mod sim;
