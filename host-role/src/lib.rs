//! The `host` role: publishes this machine's record (name, addresses, services) into each of
//! its keygroups with a seq that only grows, and serves subscription streams to the dns
//! members responsible for those keygroups: a stream opens with the current record and then
//! carries every update at once, each sealed with the keygroup's secret.
//!
//! Layout:
//! - [`record`]: the record's change rules and service validation (sans IO).
//! - [`HostRole`]: joins the keygroups, keeps the record current, serves
//!   `GET/PUT /v1/roles/host/services`, `GET /v1/roles/host/record` and the internal stream
//!   `GET /internal/v1/roles/host/subscribe?keygroup=K`.

pub mod record;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hivemind_common::api::ErrorBody;
use hivemind_common::records::{self, HostRecord, Service};
use hivemind_common::role::{
    Me, Role, RoleContext, RoleEvent, RoleMetrics, RoleStore, Sample, Started,
};
use hivemind_common::roles::{self, RoleSpec};
use tokio::sync::watch;

use record::Published;

const SEQ_KEY: &[u8] = b"seq";
const SERVICES_KEY: &[u8] = b"services";
/// How soon a keygroup join that failed is retried. Once joined, configs (secrets) are
/// re-read on every keygroup event and every `--reread-every` (DESIGN.md §5 event [5], [6]).
const RETRY_EVERY: Duration = Duration::from_secs(2);

pub struct HostRole;

struct Shared {
    keygroups: Vec<String>,
    store: Arc<dyn RoleStore>,
    /// The last published record; subscribers watch it.
    published: watch::Sender<Published>,
    /// Serialises changes so that seqs are persisted in order.
    change: Mutex<()>,
    /// Keygroup name -> its config version and secret, once this node is a replica.
    secrets: RwLock<BTreeMap<String, (u64, Vec<u8>)>>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

/// The host role's routes, for the OpenAPI document (mounted only on members running it).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(record_route, services_route, put_services),
    components(schemas(RecordView, Service, ErrorBody)),
    tags((name = "host role", description = "On members with --roles host"))
)]
pub struct HostApi;

/// `GET /v1/roles/host/record`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RecordView {
    pub host: String,
    pub keygroups: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub addrs: Vec<std::net::IpAddr>,
    pub services: Vec<Service>,
    /// Persisted; grows with every change.
    pub seq: u64,
    pub generation: u64,
}

impl Shared {
    /// Publishes the next record if `next` changes something; the seq is persisted before any
    /// subscriber can see it, so a restart never reuses one.
    fn publish(&self, next: impl FnOnce(&Published) -> Option<Published>) -> Result<(), String> {
        let _guard = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = next(&self.published.borrow()) else {
            return Ok(());
        };
        self.store
            .put(SEQ_KEY, &record.seq.to_be_bytes())
            .and_then(|()| {
                self.store.put(
                    SERVICES_KEY,
                    &serde_json::to_vec(&record.services).expect("services serialize"),
                )
            })
            .map_err(|e| e.to_string())?;
        tracing::info!(seq = record.seq, addrs = ?record.addrs, services = record.services.len(), "host record published");
        self.published.send_replace(record);
        Ok(())
    }

    /// The keygroup's config version and secret as this host knows them.
    fn secret(&self, keygroup: &str) -> Option<(u64, Vec<u8>)> {
        self.secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(keygroup)
            .cloned()
    }

    /// Records a keygroup's config as just read; a newer version is re-sent on every stream
    /// (the current record, stamped with it: DESIGN.md §5 event [7]).
    fn learn(&self, keygroup: &str, version: u64, secret: Vec<u8>) {
        let previous = self
            .secrets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(keygroup.to_string(), (version, secret));
        if previous.is_some_and(|(v, _)| v < version) {
            tracing::info!(%keygroup, version, "keygroup config changed; telling subscribers");
            self.published.send_modify(|_| {});
        }
    }
}

fn stored(store: &dyn RoleStore) -> (u64, Vec<Service>) {
    let seq = match store.get(SEQ_KEY) {
        Ok(Some(bytes)) => bytes.as_slice().try_into().map(u64::from_be_bytes).ok(),
        _ => None,
    };
    let services = match store.get(SERVICES_KEY) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
        _ => None,
    };
    (seq.unwrap_or(0), services.unwrap_or_default())
}

impl Role for HostRole {
    fn spec(&self) -> &'static RoleSpec {
        roles::spec("host").expect("host is a known role")
    }

    fn start(self: Box<Self>, mut ctx: RoleContext) -> Started {
        let me: Me = ctx.me.borrow().clone();
        let (seq, services) = stored(ctx.store.as_ref());
        let (published, _) = watch::channel(Published::initial(&me, seq, services));
        let shared = Arc::new(Shared {
            keygroups: ctx.settings.keygroups.clone(),
            store: ctx.store.clone(),
            published,
            change: Mutex::new(()),
            secrets: RwLock::new(BTreeMap::new()),
        });
        // The first record of this incarnation takes a fresh seq too.
        if let Err(e) = shared.publish(|r| Some(r.next(&me))) {
            tracing::error!(error = %e, "cannot persist the host record's seq");
        }
        ctx.health.waiting_for(
            shared
                .keygroups
                .iter()
                .map(|k| format!("keygroup:{k}"))
                .collect(),
        );
        let routes = Router::new()
            .route("/record", get(record_route))
            .route("/services", get(services_route).put(put_services))
            .with_state(shared.clone());
        let internal = Router::new()
            .route("/subscribe", get(subscribe))
            .with_state(shared.clone());
        let metrics: Arc<dyn RoleMetrics> = Arc::new(HostMetrics(shared.clone()));
        let task = Box::pin(async move {
            // A deadline, not a sleep per turn: other events must not postpone the re-read.
            let mut next_read = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(next_read) => {
                        let mut waiting = Vec::new();
                        for keygroup in &shared.keygroups {
                            // Joining also re-reads the config: a rotated secret is picked up.
                            match ctx.cp.join_keygroup(keygroup.clone()).await {
                                Ok(info) if !info.secret.is_empty() => {
                                    shared.learn(keygroup, info.version, info.secret);
                                }
                                Ok(_) => waiting.push(format!("keygroup:{keygroup}")),
                                Err(e) => {
                                    tracing::warn!(%keygroup, error = %e, "cannot join the keygroup; retrying");
                                    waiting.push(format!("keygroup:{keygroup}"));
                                }
                            }
                        }
                        next_read = tokio::time::Instant::now()
                            + if waiting.is_empty() {
                                ctx.settings.reread_every
                            } else {
                                RETRY_EVERY
                            };
                        ctx.health.waiting_for(waiting);
                    }
                    event = ctx.events.recv() => match event {
                        None => return,
                        Some(RoleEvent::SelfAddressChanged { me }) => {
                            // Republish at once rather than at the next periodic round.
                            if let Err(e) = shared.publish(|r| r.changed_for(&me)) {
                                tracing::error!(error = %e, "cannot persist the host record's seq");
                            }
                        }
                        // A keygroup config changed (a rotated secret, DESIGN.md §5 event
                        // [5]): re-read now rather than at the next periodic round.
                        Some(RoleEvent::KeygroupChanged { .. } | RoleEvent::Rebootstrapped { .. }) => {
                            next_read = tokio::time::Instant::now();
                        }
                        Some(_) => {}
                    },
                }
            }
        });
        Started {
            metrics: Some(metrics),
            routes,
            internal,
            task,
            records: None,
        }
    }
}

struct HostMetrics(Arc<Shared>);

impl RoleMetrics for HostMetrics {
    fn samples(&self) -> Vec<Sample> {
        let published = self.0.published.borrow();
        vec![
            Sample {
                name: "seq",
                help: "Seq of the host record published now.",
                counter: false,
                labels: vec![],
                value: published.seq,
            },
            Sample {
                name: "subscribers",
                help: "Subscription streams this host serves now.",
                counter: false,
                labels: vec![],
                value: self.0.published.receiver_count() as u64,
            },
        ]
    }
}

/// This host's current record.
#[utoipa::path(get, path = "/v1/roles/host/record", tag = "host role",
    responses((status = 200, description = "The record published now", body = RecordView)))]
async fn record_route(State(shared): State<Arc<Shared>>) -> Json<RecordView> {
    let r = shared.published.borrow().clone();
    Json(RecordView {
        host: r.host,
        keygroups: shared.keygroups.clone(),
        addrs: r.addrs,
        services: r.services,
        seq: r.seq,
        generation: r.generation,
    })
}

/// This host's services.
#[utoipa::path(get, path = "/v1/roles/host/services", tag = "host role",
    responses((status = 200, description = "The services", body = [Service])))]
async fn services_route(State(shared): State<Arc<Shared>>) -> Json<Vec<Service>> {
    Json(shared.published.borrow().services.clone())
}

/// Replaces this host's services; subscribers get the new record at once.
#[utoipa::path(put, path = "/v1/roles/host/services", tag = "host role", request_body = [Service],
    responses((status = 200, description = "The record after the change", body = RecordView),
        (status = 400, description = "Bad body (bad_request) or service (invalid)", body = ErrorBody),
        (status = 503, description = "The seq could not be persisted (store_failed)", body = ErrorBody)))]
async fn put_services(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let services: Vec<Service> = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")),
    };
    if let Err(message) = record::validate_services(&services) {
        return error(StatusCode::BAD_REQUEST, "invalid", message);
    }
    match shared.publish(|r| r.with_services(services)) {
        Ok(()) => record_route(State(shared)).await.into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store_failed", e),
    }
}

#[derive(serde::Deserialize)]
struct SubscribeQuery {
    keygroup: String,
    /// The member the subscriber means to reach: an address reused by another member after a
    /// restart must not serve the old one's subscribers.
    member: Option<hivemind_common::MemberId>,
}

/// The subscription stream: frames of the sealed record, the current one first.
async fn subscribe(State(shared): State<Arc<Shared>>, Query(q): Query<SubscribeQuery>) -> Response {
    let me = shared.published.borrow().member;
    if q.member.is_some_and(|m| m != me) {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_member",
            format!("this is member {me}, not the one asked for"),
        );
    }
    if !shared.keygroups.contains(&q.keygroup) {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_keygroup",
            format!("this host does not publish into {}", q.keygroup),
        );
    }
    if shared.secret(&q.keygroup).is_none() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_joined",
            format!("not a replica of {} yet", q.keygroup),
        );
    }
    let mut updates = shared.published.subscribe();
    updates.mark_changed();
    let keygroup = q.keygroup;
    let stream = futures::stream::unfold(
        (updates, shared, keygroup),
        |(mut updates, shared, keygroup)| async move {
            updates.changed().await.ok()?;
            let published = updates.borrow_and_update().clone();
            let (keygroup_version, secret) = shared.secret(&keygroup)?;
            let record = HostRecord {
                member: published.member,
                host: published.host,
                keygroup: keygroup.clone(),
                addrs: published.addrs,
                services: published.services,
                seq: published.seq,
                generation: published.generation,
                keygroup_version,
            };
            // Sealed with the secret as it is now (a rotation is picked up by the refresh).
            let sealed = records::seal(&secret, rand::random(), &record)?;
            let frame: Result<Bytes, Infallible> = Ok(Bytes::from(records::frame(&sealed)));
            Some((frame, (updates, shared, keygroup)))
        },
    );
    Body::from_stream(stream).into_response()
}
