//! The Consul-compatible catalog (DESIGN.md §6c): the read side of Consul's catalog, health,
//! agent and status API over the services hosts publish, with Consul's field names and
//! blocking queries, so Prometheus `consul_sd_configs`, consul-template and the like work
//! unmodified. Services come from the host records a consuming role of this member holds
//! (`dns`, `nginx`, `trigger`); nodes from the membership. An instance's health is its node's
//! SWIM state as this member sees it (`serfHealth`: alive = passing, suspect = warning, down
//! but not yet failed in the registry = critical; failed or left = gone) and its service's
//! checks as its host ran them (DESIGN.md §6g); the shapes are in [`shapes`]. Writes go through
//! hivemind's own routes and the agent API of host members.
//!
//! Every answer carries `X-Consul-Index` (the membership's feed index plus the records'
//! change count: it only grows), `X-Consul-KnownLeader` and `X-Consul-LastContact`;
//! `?index=N&wait=D` blocks while the index is still N, up to D (at most 10 min).
//!
//! A member without a consuming role holds no host records: it passes the service queries on
//! to one live member that has one (the lowest id, so a client keeps seeing one index), as a
//! Consul client agent passes queries to a server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hivemind_common::role::{HostRecords, Membership};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::state::Agent;

mod shapes;

use shapes::{all_passing, catalog_service_json, health_json, host_of, node_json, service_json};
pub use shapes::{check_status, instances, Instance};

pub use hivemind_common::api::CONSUL_DATACENTER as DATACENTER;
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The query parameters every catalog route takes (others are ignored, as Consul does).
#[derive(Debug, Default, Deserialize)]
pub struct CatalogQuery {
    index: Option<u64>,
    wait: Option<String>,
    dc: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    /// `?passing`: only instances whose check passes.
    passing: Option<String>,
}

/// What the catalog reads.
#[derive(Clone)]
struct Catalog {
    agent: Arc<Agent>,
    http: reqwest::Client,
}

/// The headers a forwarded query carries along (the client's token).
const FORWARDED: [&str; 3] = [
    "authorization",
    crate::http::auth::TOKEN_HEADER,
    crate::http::auth::CONSUL_TOKEN_HEADER,
];

impl Catalog {
    fn records(&self) -> Option<Arc<dyn HostRecords>> {
        self.agent.roles.host_records()
    }

    fn membership(&self) -> Arc<Membership> {
        self.agent.roles.membership()
    }

    /// The index now: it grows with every membership change and every record change.
    fn index(&self) -> u64 {
        let records = self.records().map_or(0, |r| *r.version().borrow());
        (self.membership().index + records).max(1)
    }

    /// Waits while the index is still the one the client holds (a blocking query).
    async fn block(&self, q: &CatalogQuery) -> Result<u64, Response> {
        if let Some(dc) = &q.dc {
            if dc != DATACENTER {
                return Err(consul_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("No path to datacenter {dc:?} (this cluster is {DATACENTER:?})"),
                ));
            }
        }
        let wait = match q.wait.as_deref() {
            None => Duration::from_secs(300),
            Some(w) => hivemind_common::duration::parse_wait(w, MAX_WAIT)
                .map_err(|e| consul_error(StatusCode::BAD_REQUEST, e))?,
        };
        let Some(held) = q.index else {
            return Ok(self.index());
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut membership = self.agent.roles.membership_changes();
        let mut records = self.records().map(|r| r.version());
        while self.index() == held {
            let records_changed = async {
                match records.as_mut() {
                    Some(r) => {
                        let _ = r.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = membership.changed() => {}
                _ = records_changed => {}
            }
        }
        Ok(self.index())
    }

    /// Without host records here: the answer of a live member that holds them (`None` when
    /// this member holds them itself, or no such member is known).
    async fn forwarded(&self, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
        if self.records().is_some() {
            return None;
        }
        let membership = self.membership();
        let holder = membership
            .live()
            .filter(|p| p.id != self.agent.identity.id)
            .filter(|p| hivemind_common::role_specs::consumes(&p.roles))
            .min_by_key(|p| p.id)?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = self
            .http
            .get(hivemind_common::tls::url(
                self.agent.config.client_tls().as_ref(),
                &holder.http_addr,
                path,
            ))
            .timeout(MAX_WAIT + Duration::from_secs(10));
        for name in FORWARDED {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => {
                return Some(consul_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{} (which holds the host records) did not answer: {e}",
                        holder.name
                    ),
                ))
            }
        };
        let status = answer.status();
        let mut out = HeaderMap::new();
        for (name, value) in answer.headers() {
            if name.as_str().starts_with("x-consul-") || name == "content-type" {
                out.insert(name.clone(), value.clone());
            }
        }
        let body = answer.bytes().await.unwrap_or_default();
        Some((status, out, body).into_response())
    }

    /// The start of every query that lists services: passed on to a member holding host
    /// records when this one holds none, else blocked on the index; answers the index to
    /// answer at, or the whole answer.
    async fn service_query(
        &self,
        q: &CatalogQuery,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<u64, Response> {
        if let Some(answer) = self.forwarded(uri, headers).await {
            return Err(answer);
        }
        self.block(q).await
    }

    fn instances(&self) -> Vec<Instance> {
        let records = self.records().map(|r| r.records()).unwrap_or_default();
        instances(&records, &self.membership())
    }
}

fn consul_error(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

/// Consul's answer: the JSON body and the headers its clients read.
fn answer(index: u64, body: Value) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("X-Consul-Index", HeaderValue::from(index));
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    (headers, Json(body)).into_response()
}

/// The routes, on every member.
pub(crate) fn routes(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/catalog/services", get(services))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/catalog/nodes", get(nodes))
        .route("/v1/catalog/node/{node}", get(node))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/status/leader", get(leader))
        .route("/v1/status/peers", get(peers))
        .with_state(Catalog {
            http: hivemind_tls::http_client(agent.config.client_tls().as_ref())
                .build()
                .expect("an HTTP client builds"),
            agent,
        })
}

type Q = Query<CatalogQuery>;

async fn services(State(c): State<Catalog>, Query(q): Q, uri: Uri, h: HeaderMap) -> Response {
    let index = match c.service_query(&q, &uri, &h).await {
        Ok(index) => index,
        Err(answer) => return answer,
    };
    let mut tags: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in c.instances() {
        tags.entry(i.service).or_default().extend(i.tags);
    }
    answer(index, json!(tags))
}

fn tagged(i: &Instance, tag: &Option<String>) -> bool {
    tag.as_ref().is_none_or(|t| i.tags.contains(t))
}

async fn catalog_service(
    State(c): State<Catalog>,
    Path(name): Path<String>,
    Query(q): Q,
    uri: Uri,
    h: HeaderMap,
) -> Response {
    let index = match c.service_query(&q, &uri, &h).await {
        Ok(index) => index,
        Err(answer) => return answer,
    };
    let list: Vec<Value> = c
        .instances()
        .iter()
        .filter(|i| i.service == name && tagged(i, &q.tag))
        .map(|i| catalog_service_json(i, index))
        .collect();
    answer(index, json!(list))
}

/// Each instance with its checks: the node's SWIM check and the service's own (`?passing`: only
/// instances whose checks all pass; a host the registry recorded failed is gone already).
async fn health_service(
    State(c): State<Catalog>,
    Path(name): Path<String>,
    Query(q): Q,
    uri: Uri,
    h: HeaderMap,
) -> Response {
    let index = match c.service_query(&q, &uri, &h).await {
        Ok(index) => index,
        Err(answer) => return answer,
    };
    let membership = c.membership();
    let swim = c.agent.gossip.view.borrow().clone();
    let only_passing = q.passing.as_deref().is_some_and(|v| v != "false");
    let list: Vec<Value> = c
        .instances()
        .iter()
        .filter(|i| i.service == name && tagged(i, &q.tag))
        .filter_map(|i| {
            let peer = membership.peers.iter().find(|p| p.id == i.member)?;
            let seen = swim
                .get(&peer.id)
                .filter(|(id, _)| id.generation >= peer.generation)
                .map(|(_, state)| *state);
            let node_health = check_status(seen);
            (!only_passing || all_passing(i, node_health))
                .then(|| health_json(i, peer, index, node_health))
        })
        .collect();
    answer(index, json!(list))
}

async fn nodes(State(c): State<Catalog>, Query(q): Q) -> Response {
    let index = match c.block(&q).await {
        Ok(index) => index,
        Err(e) => return e,
    };
    let membership = c.membership();
    let list: Vec<Value> = membership.live().map(|p| node_json(p, index)).collect();
    answer(index, json!(list))
}

/// A node and its services; `null` for a node the catalog does not know (as Consul).
async fn node(
    State(c): State<Catalog>,
    Path(name): Path<String>,
    Query(q): Q,
    uri: Uri,
    h: HeaderMap,
) -> Response {
    let index = match c.service_query(&q, &uri, &h).await {
        Ok(index) => index,
        Err(answer) => return answer,
    };
    let membership = c.membership();
    let Some(peer) = membership.live().find(|p| p.name == name) else {
        return answer(index, Value::Null);
    };
    let services: serde_json::Map<String, Value> = c
        .instances()
        .iter()
        .filter(|i| i.node == name)
        .map(|i| (i.id.clone(), service_json(i, index)))
        .collect();
    answer(
        index,
        json!({"Node": node_json(peer, index), "Services": services}),
    )
}

async fn agent_self(State(c): State<Catalog>) -> Response {
    let a = &c.agent;
    let info = a.info();
    answer(
        c.index(),
        json!({
            "Config": {
                "Datacenter": DATACENTER,
                "NodeName": info.name,
                "NodeID": info.id.to_string(),
                "Server": info.control_plane,
                "Version": env!("CARGO_PKG_VERSION"),
                "Revision": "hivemind",
            },
            "Member": {
                "Name": info.name,
                "Addr": host_of(&info.gossip_addr),
                "Port": info.gossip_addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()),
                "Status": 1,
                "Tags": {"dc": DATACENTER, "role": if info.control_plane { "consul" } else { "node" }},
            },
            "Meta": {},
        }),
    )
}

/// The Raft leader's address, as Consul answers it (`""` when none is known).
async fn leader(State(c): State<Catalog>) -> Response {
    let status = c.agent.cp.status().await;
    let leader = status.as_ref().and_then(|s| {
        let id = &s.leader.as_ref()?.id;
        Some(s.voters.iter().find(|v| &v.id == id)?.addr.clone())
    });
    answer(c.index(), json!(leader.unwrap_or_default()))
}

/// The Raft voters' addresses.
async fn peers(State(c): State<Catalog>) -> Response {
    let status = c.agent.cp.status().await;
    let peers: Vec<String> = status
        .map(|s| s.voters.into_iter().map(|v| v.addr).collect())
        .unwrap_or_default();
    answer(c.index(), json!(peers))
}
