//! What a consuming role serves of its intake: the records/status views (each role mounts them
//! under `/v1/roles/<role>/` with its own OpenAPI path), and the internal `snapshot` and
//! `stream` routes starting siblings and the holder's followers call.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use hivemind_common::records;

use crate::intake::Intake;
use crate::intake::Position;

/// One record held.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HeldRecordView {
    pub keygroup: String,
    pub host: String,
    pub member: String,
    pub seq: u64,
    pub generation: u64,
    #[schema(value_type = Vec<String>)]
    pub addrs: Vec<std::net::IpAddr>,
    pub services: Vec<hivemind_common::records::Service>,
}

/// `GET /v1/roles/<role>/records`: the records held and the intake's counters.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct IntakeRecordsView {
    pub records: Vec<HeldRecordView>,
    pub applied: u64,
    pub refused_sealed: u64,
    pub stream_errors: u64,
    pub copied: u64,
    pub received_from_hosts: u64,
    pub received_from_holder: u64,
}

/// The records this machine holds and its intake counters.
pub fn records_view(shared: &Intake) -> IntakeRecordsView {
    let book = shared.book();
    let c = &shared.counters;
    IntakeRecordsView {
        records: book
            .records()
            .map(|r| HeldRecordView {
                keygroup: r.keygroup.clone(),
                host: r.host.clone(),
                member: r.member.to_string(),
                seq: r.seq,
                generation: r.generation,
                addrs: r.addrs.clone(),
                services: r.services.clone(),
            })
            .collect(),
        applied: c.applied.load(Ordering::Relaxed),
        refused_sealed: c.refused_sealed.load(Ordering::Relaxed),
        stream_errors: c.stream_errors.load(Ordering::Relaxed),
        copied: c.copied.load(Ordering::Relaxed),
        received_from_hosts: c.received_from_hosts.load(Ordering::Relaxed),
        received_from_holder: c.received_from_holder.load(Ordering::Relaxed),
    }
}

/// `GET /v1/roles/<role>/status`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct IntakeStatusView {
    /// Per served keygroup.
    pub keygroups: BTreeMap<String, Position>,
    /// Streams open now.
    pub subscriptions: u64,
    pub received_from_hosts: u64,
    pub received_from_holder: u64,
}

/// Per served keygroup: whether this machine holds it (and its fence), which machine does
/// otherwise, and how many streams it holds for it.
pub fn status_view(shared: &Intake) -> IntakeStatusView {
    IntakeStatusView {
        keygroups: shared.positions(),
        subscriptions: shared.counters.streams_open.load(Ordering::Relaxed),
        received_from_hosts: shared.counters.received_from_hosts.load(Ordering::Relaxed),
        received_from_holder: shared.counters.received_from_holder.load(Ordering::Relaxed),
    }
}

/// `status_view` as a route (the role's own and the internal one).
pub async fn status_route(State(shared): State<Arc<Intake>>) -> Json<IntakeStatusView> {
    Json(status_view(&shared))
}

#[derive(serde::Deserialize)]
pub(crate) struct SnapshotQuery {
    keygroup: String,
}

/// The frames of every record held for `keygroup`, sealed with `secret`.
pub(crate) fn sealed_frames(shared: &Intake, keygroup: &str, secret: &[u8]) -> Vec<u8> {
    let book = shared.book();
    let mut body = Vec::new();
    for record in book.records().filter(|r| r.keygroup == keygroup) {
        if let Some(sealed) = records::seal(secret, rand::random(), record) {
            body.extend(records::frame(&sealed));
        }
    }
    body
}

/// `GET /internal/v1/roles/<role>/stream?keygroup=K`: the intra-node stream. Every record held
/// for K, then every record applied here from then on, each sealed with K's secret as it is
/// when sent. A follower too far behind is cut off; it reconnects and starts over.
pub(crate) async fn stream_route(
    State(shared): State<Arc<Intake>>,
    axum::extract::Query(q): axum::extract::Query<SnapshotQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let secret = shared.secret(&q.keygroup);
    if secret.is_empty() {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    // Subscribed before the snapshot is taken: nothing falls between the two.
    let updates = shared.relay.subscribe();
    let first = sealed_frames(&shared, &q.keygroup, &secret);
    let keygroup = q.keygroup;
    let live = futures::stream::unfold(
        (updates, shared, keygroup),
        |(mut updates, shared, keygroup)| async move {
            loop {
                // Lagged or closed: end the stream (the follower reconnects).
                let record = updates.recv().await.ok()?;
                if record.keygroup != keygroup {
                    continue;
                }
                let Some(sealed) =
                    records::seal(&shared.secret(&keygroup), rand::random(), &record)
                else {
                    continue;
                };
                let frame: Result<axum::body::Bytes, std::convert::Infallible> =
                    Ok(records::frame(&sealed).into());
                return Some((frame, (updates, shared, keygroup)));
            }
        },
    );
    let first = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(first))
    });
    axum::body::Body::from_stream(futures::StreamExt::chain(first, live)).into_response()
}

/// `GET /internal/v1/roles/<role>/snapshot?keygroup=K`: the records this member holds for K, as
/// the frames of a subscription stream (each sealed with K's secret), for a member of the same
/// role that starts (simple join).
pub(crate) async fn snapshot_route(
    State(shared): State<Arc<Intake>>,
    axum::extract::Query(q): axum::extract::Query<SnapshotQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let secret = shared.secret(&q.keygroup);
    if secret.is_empty() {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    sealed_frames(&shared, &q.keygroup, &secret).into_response()
}
