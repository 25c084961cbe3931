//! Every internal operation between members, declared once: its route, what the caller sends
//! and what it gets back. The server mounts an operation's handler at [`Op::PATH`] and decodes
//! [`Op::Request`]; callers call it by type ([`crate::network::InternalClient::op`]), so the
//! route and the types on both ends cannot drift apart. Bodies are bincode.

#[cfg(feature = "raft")]
use openraft::error::{InstallSnapshotError, RaftError};
#[cfg(feature = "raft")]
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{Candidate, Hello};
use crate::cp_types::{Applied, CpStatus, VoterChange};
use crate::error::CpError;
use crate::member_requests::{MemberAnswer, MemberCall};
#[cfg(feature = "raft")]
use crate::pre_vote::{PreVoteAnswer, PreVoteRequest};
use crate::registry::{
    Command, FeedError, FeedPage, KeygroupConfig, KvEntry, MemberInfo, RegistryDigest,
};
#[cfg(feature = "raft")]
use crate::types::{NodeId, TypeConfig};

/// One internal request/answer operation.
pub trait Op {
    /// The internal route it is served at (POST).
    const PATH: &'static str;
    type Request: Serialize + DeserializeOwned + Send + Sync;
    type Answer: Serialize + DeserializeOwned + Send;
}

macro_rules! ops {
    ($($(#[$doc:meta])* $name:ident = $path:literal: $req:ty => $answer:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            $(#[$doc])*
            impl Op for $name {
                const PATH: &'static str = $path;
                type Request = $req;
                type Answer = $answer;
            }
        )*
        /// Every operation's route, for tests and the route table's check (Raft's own
        /// included where the `raft` feature leaves its types out).
        pub const ALL_PATHS: &[&str] = &[$($path),*];
    };
}

ops! {
    /// Raft AppendEntries as one request (the leader's replication normally uses
    /// [`APPEND_STREAM`]).
    #[cfg(feature = "raft")]
    Append = "/internal/v1/raft/append":
        AppendEntriesRequest<TypeConfig> => Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
    #[cfg(feature = "raft")]
    Vote = "/internal/v1/raft/vote":
        VoteRequest<NodeId> => Result<VoteResponse<NodeId>, RaftError<NodeId>>;
    /// "Would you vote for me?" before a real election (see `crate::pre_vote`).
    #[cfg(feature = "raft")]
    PreVote = "/internal/v1/raft/pre-vote": PreVoteRequest => PreVoteAnswer;
    #[cfg(feature = "raft")]
    Snapshot = "/internal/v1/raft/snapshot":
        InstallSnapshotRequest<TypeConfig>
            => Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;
    /// A write forwarded by a CP member to the leader (never forwarded again).
    Write = "/internal/v1/cp/write": Command => Result<Applied, CpError>;
    /// The leader's read index, for a linearizable read on another CP member.
    ReadIndex = "/internal/v1/cp/read-index": () => Result<u64, CpError>;
    /// A voter change, executed on the leader.
    Admin = "/internal/v1/cp/admin": VoterChange => Result<(), CpError>;
    /// Bootstrap discovery: who answers and whom it knows.
    HelloOp = "/internal/v1/cp/hello": Option<Candidate> => Hello;
    /// A command from a member that is not in the control plane (the full write path; the
    /// fault harness's synthetic members use it, members use [`Request`]).
    Propose = "/internal/v1/cp/propose": Command => Result<Applied, CpError>;
    /// A member's request, decided by the control plane (see [`crate::member_requests`]).
    Request = "/internal/v1/cp/request": MemberCall => Result<MemberAnswer, CpError>;
    /// A member's node-scoped view of the registry (DESIGN.md §6e-2): the digest with the
    /// secrets of the asking node's keygroups only.
    View = "/internal/v1/cp/view": ViewRequest => Result<RegistryDigest, CpError>;
    /// One keygroup, linearizable, with its secret only for its replica and trigger nodes.
    KeygroupRead = "/internal/v1/cp/keygroup":
        KeygroupQuery => Result<Option<KeygroupConfig>, CpError>;
    /// The whole registry once the answering CP member applied the index (0: as it stands;
    /// a stale read). Control-plane members only.
    Registry = "/internal/v1/cp/registry": u64 => Result<RegistryDigest, CpError>;
    /// A linearizable read of the registry.
    RegistryNow = "/internal/v1/cp/registry-now": () => Result<RegistryDigest, CpError>;
    /// The event feed for members outside the control plane (long-poll).
    Feed = "/internal/v1/cp/feed": FeedRequest => Result<FeedPage, FeedError>;
    /// This CP member's Raft status, for members outside the control plane.
    Status = "/internal/v1/cp/status": () => CpStatus;
    /// A linearizable KV read for members outside the control plane.
    KvGet = "/internal/v1/cp/kv-get": String => Result<Option<KvEntry>, CpError>;
    /// The ACL table as this CP member applied it (policies, token hashes), for members that
    /// enforce ACLs on their routes.
    AclTable = "/internal/v1/cp/acl": () => Result<crate::registry::AclTable, CpError>;
    /// Lease keep-alives, taken by the leader (DESIGN.md §6h): answers each lease's TTL, or
    /// `None` for one that is gone.
    LeaseKeepAlive = "/internal/v1/cp/lease-keepalive": Vec<u64> => Result<Vec<Option<u64>>, CpError>;
    /// A join request, on every member (forwarded to the control plane by non-CP members).
    Join = "/internal/v1/join": JoinRequest => Result<JoinAccepted, CpError>;
}

/// AppendEntries as a [`crate::stream`]: one upgraded connection per leader and follower.
pub const APPEND_STREAM: &str = "/internal/v1/raft/append-stream";
/// Any internal operation as a [`crate::stream`]: each frame names an operation's route and
/// carries its body; the answer frame carries the route's status and body. Writes and
/// read-index requests forwarded to the leader travel this way.
pub const CALL_STREAM: &str = "/internal/v1/call-stream";

/// The most events one feed page carries (`/v1/events` and the members' feed alike).
pub const MAX_EVENTS_PER_PAGE: usize = 1000;

/// A feed request from a member outside the control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedRequest {
    pub after: u64,
    pub epoch: Option<u64>,
    pub wait_ms: u64,
}

/// Which registry state a [`View`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewAt {
    /// Once the answering CP member applied this index (0: as it stands; a stale read).
    Applied(u64),
    /// A linearizable read.
    Now,
}

/// A member's view request: for its node (a certified member must name its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewRequest {
    pub node: String,
    pub at: ViewAt,
}

/// A one-keygroup read, for `node` (a certified member must name its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeygroupQuery {
    pub name: String,
    pub node: String,
}

/// A join request, sent to any member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub member: MemberInfo,
    pub token: Option<String>,
    /// The cluster secret derived from the joiner's gossip key: proves it holds the same key.
    pub cluster_proof: Option<String>,
    /// The epoch the joiner last saw (`None` for a fresh member).
    pub epoch: Option<u64>,
}

/// An accepted join: the epoch, the index of the `Join`, and the live members to gossip with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAccepted {
    pub epoch: u64,
    pub index: u64,
    pub members: Vec<MemberInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_distinct_and_internal() {
        let mut paths: Vec<&str> = ALL_PATHS.to_vec();
        paths.extend([APPEND_STREAM, CALL_STREAM]);
        let distinct: std::collections::BTreeSet<&str> = paths.iter().copied().collect();
        assert_eq!(distinct.len(), paths.len(), "{paths:?}");
        assert!(paths.iter().all(|p| p.starts_with("/internal/v1/")));
    }
}
