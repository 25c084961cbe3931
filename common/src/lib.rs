//! Shared vocabulary of hivemind: member ids, the wire codec (bincode 2 + serde) and name rules.
//!
//! Layout:
//! - [`id`]: [`MemberId`], a nonzero u64 shown as 16 hex digits.
//! - [`codec`]: the one binary encoding used between members, with bounded, total decoding.
//! - [`names`]: validation of names (members, nodes, roles) shared by every crate.
//! - [`roles`]: the known roles, what they perform and require, and the readiness rule.
//! - [`seal`]: ChaCha20-Poly1305 sealing shared by gossip packets and host records.
//! - [`records`]: host records, their sealing with keygroup secrets, stream frames, seq book.
//! - [`acl`]: ACL policy rules (TOML) and the access decision, sans IO (DESIGN.md §6e).
//! - [`backoff`]: [`Backoff`](backoff::Backoff), the one pacing of retries (doubling up to a cap).
//! - [`backup`]: the backup role's requests to the registry and its ledger as roles read it.
//! - [`role`]: the [`Role`](role::Role) trait and the context the member runtime hands a role.
//!
//! Invariant: no IO, no clocks; everything here is plain data, pure functions, and the role
//! interface (channels and traits, no sockets).

pub mod acl;
pub mod api;
pub mod backoff;
pub mod backup;
pub mod codec;
pub mod duration;
pub mod histogram;
pub mod id;
pub mod names;
pub mod records;
pub mod role;
pub mod role_specs;
pub mod seal;
pub mod secret;
pub mod stats;
pub mod tls;

pub use codec::{decode, encode, CodecError};
pub use id::MemberId;
