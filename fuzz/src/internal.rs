//! Internal requests between members: the bincode bodies of every internal route and their
//! answers, the frames of the request/answer streams, and the record stream between a host and
//! its subscribers, and the backup role's upload bodies and a space's `leases.bin` (25 kinds). Decoded commands are applied to a registry, as a follower applies its log.

use bytes::BytesMut;
use hivemind_common::records;
use hivemind_control_plane::bootstrap::{Candidate, Hello};
use hivemind_control_plane::member_requests::{MemberAnswer, MemberCall};
use hivemind_control_plane::network::{FramedAnswer, FramedCall};
use hivemind_control_plane::ops::{FeedRequest, JoinAccepted, JoinRequest};
use hivemind_control_plane::pre_vote::{PreVoteAnswer, PreVoteRequest};
use hivemind_control_plane::registry::{Command, FeedError, FeedPage, Registry};
use hivemind_control_plane::types::{CommandResponse, NodeId, TypeConfig};
use hivemind_control_plane::{Applied, CpError, VoterChange};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio_util::codec::Decoder;

use crate::{choice, round_trip};

/// The secret the record stream's frames are opened with.
pub const RECORD_SECRET: [u8; 32] = [5; 32];

/// The first byte picks the route's type (as the route does by its path); the rest is its body.
pub fn request(data: &[u8]) {
    let Some((kind, body)) = choice(data) else {
        return;
    };
    match kind % 25 {
        0 => drop(round_trip::<AppendEntriesRequest<TypeConfig>>(body)),
        1 => drop(round_trip::<AppendEntriesResponse<NodeId>>(body)),
        2 => drop(round_trip::<VoteRequest<NodeId>>(body)),
        3 => drop(round_trip::<VoteResponse<NodeId>>(body)),
        4 => drop(round_trip::<InstallSnapshotRequest<TypeConfig>>(body)),
        5 => drop(round_trip::<InstallSnapshotResponse<NodeId>>(body)),
        6 => drop(round_trip::<PreVoteRequest>(body)),
        7 => drop(round_trip::<PreVoteAnswer>(body)),
        8 => commands(body),
        9 => drop(round_trip::<VoterChange>(body)),
        10 => drop(round_trip::<FeedRequest>(body)),
        11 => drop(round_trip::<Result<FeedPage, FeedError>>(body)),
        12 => drop(round_trip::<Option<Candidate>>(body)),
        13 => drop(round_trip::<Hello>(body)),
        14 => drop(round_trip::<FramedCall>(body)),
        15 => drop(round_trip::<FramedAnswer>(body)),
        16 => drop(round_trip::<JoinRequest>(body)),
        17 => drop(round_trip::<Result<JoinAccepted, CpError>>(body)),
        18 => drop(round_trip::<Result<Applied, CpError>>(body)),
        19 => drop(round_trip::<MemberCall>(body)),
        20 => drop(round_trip::<Result<MemberAnswer, CpError>>(body)),
        21 => upload(body),
        22 => drop(round_trip::<hivemind_backup_role::wire::UploadAnswer>(body)),
        23 => drop(round_trip::<hivemind_backup_role::leases::Leases>(body)),
        _ => drop(round_trip::<CommandResponse>(body)),
    }
}

/// A space's upload body (header, then the chunks back to back): what parses is rebuilt from
/// its parts and parses to the same header and chunks.
fn upload(body: &[u8]) {
    use hivemind_backup_role::wire::{parse_upload, upload_parts};
    let Ok((header, chunks)) = parse_upload(body) else {
        return;
    };
    let parts = upload_parts(
        &header,
        chunks.iter().map(|(_, b)| b.clone().into()).collect(),
    );
    let again = parse_upload(&parts.concat()).expect("what we build parses");
    assert_eq!(again, (header, chunks), "an upload changed in a round trip");
}

/// Commands back to back, applied in order at indexes 1, 2, ... to two registries: applying is
/// deterministic (both end equal), and the result survives a snapshot's round trip.
fn commands(mut body: &[u8]) {
    let mut a = Registry::default();
    let mut b = Registry::default();
    let mut index = 0;
    while let Ok((command, used)) = hivemind_common::codec::decode_prefix::<Command>(body) {
        index += 1;
        let left = a.apply(index, &command);
        let right = b.apply(index, &command);
        assert_eq!(left, right, "applying a command is not deterministic");
        body = &body[used..];
        if used == 0 || index > 64 {
            break;
        }
    }
    assert_eq!(a, b);
    let restored: Registry = round_trip(&hivemind_common::encode(&a)).expect("a registry decodes");
    assert_eq!(restored, a, "a registry changed through a snapshot");
}

/// A stream's bytes as the framing reads them: each whole frame is decoded as a call, an
/// AppendEntries request and an answer; the same bytes as a record stream are cut into frames,
/// each opened as a sealed record.
pub fn frames(data: &[u8]) {
    let mut codec = hivemind_control_plane::stream::codec();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        drop(round_trip::<FramedCall>(&frame));
        drop(round_trip::<AppendEntriesRequest<TypeConfig>>(&frame));
        drop(round_trip::<FramedAnswer>(&frame));
    }

    let mut stream = data.to_vec();
    let before = stream.len();
    if let Ok(frames) = records::take_frames(&mut stream) {
        let taken: usize = frames.iter().map(|f| f.len() + 4).sum();
        assert_eq!(taken + stream.len(), before, "the record stream lost bytes");
        for frame in frames {
            drop(records::open(&RECORD_SECRET, &frame));
        }
    }
}
