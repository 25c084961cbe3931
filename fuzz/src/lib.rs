//! The bodies of hivemind's fuzz targets: one function per decoder fed from the network or the
//! disk, each taking arbitrary bytes through exactly the code a member runs on them and checking
//! what must hold (no panic, and where a value decodes, that it re-encodes to itself).
//!
//! The coverage-guided runs use these through the thin cargo-fuzz targets in `libfuzzer/`
//! (`cargo fuzz run --fuzz-dir fuzz/libfuzzer <target>`); the tests in `tests/` replay every
//! committed corpus file on stable Rust and run a short libFuzzer smoke. Seeds come from
//! [`seeds`] (`cargo run -p hivemind-fuzz --bin hivemind-fuzz-seeds`).

pub mod config;
pub mod dns;
pub mod gossip;
pub mod http_json;
pub mod internal;
pub mod seeds;
pub mod snapshot;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// One fuzz target: its name (the corpus directory and the cargo-fuzz target) and its body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order RELIABILITY.md lists them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "gossip_packet",
        run: gossip::packet,
    },
    Target {
        name: "internal_request",
        run: internal::request,
    },
    Target {
        name: "stream_frames",
        run: internal::frames,
    },
    Target {
        name: "dns_udp",
        run: dns::udp,
    },
    Target {
        name: "dns_tcp",
        run: dns::tcp,
    },
    Target {
        name: "http_json",
        run: http_json::body,
    },
    Target {
        name: "config_toml",
        run: config::file,
    },
    Target {
        name: "snapshot_file",
        run: snapshot::file,
    },
];

/// Decodes `bytes` as a `T` with the wire codec; a value that decodes must survive a round trip
/// unchanged (the encoding of what we decoded decodes to the same encoding).
pub fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = hivemind_common::decode(bytes).ok()?;
    let encoded = hivemind_common::encode(&value);
    let again: T = hivemind_common::decode(&encoded).expect("what we encode decodes");
    assert_eq!(
        hivemind_common::encode(&again),
        encoded,
        "a decoded value changed in a round trip"
    );
    Some(again)
}

/// Splits fuzz input into its first byte (a choice) and the rest.
pub fn choice(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(c, rest)| (*c, rest))
}

/// Runs the target called `name` on `data` (the cargo-fuzz targets' one line).
pub fn run(name: &str, data: &[u8]) {
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    (target.run)(data);
}
