//! Keygroup and responsibility routes on every member (DESIGN.md §7): `/v1/keygroups...` and
//! `/v1/responsibilities`. A request acts as the admin when the member has an admin token (the
//! middleware already checked it), otherwise as the member's node, as FBase's clients act
//! through the node they talk to. Secrets are generated here, by the proposing member, so the
//! registry's apply stays deterministic.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use hivemind_common::acl::{Access, Resource};
use hivemind_control_plane::http::views::{ErrorBody, KeygroupView, ResponsibilityView};
use hivemind_control_plane::http::{views, ApiError};
use hivemind_control_plane::member_requests::{KeygroupChanges, MemberAnswer, MemberRequest};
#[cfg(feature = "control-plane")]
use hivemind_control_plane::ops::ViewAt;
use hivemind_control_plane::registry::{validate_keygroup_name, Actor, CommandOutput};
use hivemind_control_plane::Applied;
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

#[cfg(feature = "control-plane")]
use crate::cp::cp_access::CpAccess;
use crate::http::acl::{ClientToken, Grant};
use crate::http::member_api::registry;
use crate::state::Agent;

/// The keygroup routes, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(list, get_one, create, update, delete, responsibilities),
    components(schemas(KeygroupView, ResponsibilityView, CreateBody, UpdateBody, ErrorBody)),
    tags((name = "keygroups", description = "Named, versioned, encrypted record sets and who serves them"))
)]
pub struct KeygroupsApi;

pub(crate) fn routes(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/keygroups", get(list))
        .route(
            "/v1/keygroups/{app}/{tenant}/{group}",
            get(get_one).put(create).patch(update).delete(delete),
        )
        .route("/v1/responsibilities", get(responsibilities))
        .with_state(agent)
}

fn actor(agent: &Agent) -> Actor {
    if agent.config.admin_token.is_some() {
        Actor::Admin
    } else {
        Actor::Node(agent.config.node.clone())
    }
}

fn name_of(app: &str, tenant: &str, group: &str) -> Result<String, ApiError> {
    let name = format!("{app}/{tenant}/{group}");
    validate_keygroup_name(&name)
        .map_err(|e| ApiError::from(hivemind_control_plane::CpError::Rejected(e)))?;
    Ok(name)
}

/// Keygroup `name` as it stands (a linearizable read: it includes a write just made).
/// The admin sees the secret on a control-plane member; elsewhere only the member's own node's
/// keygroups' (the control plane sends no other, DESIGN.md §6e-2).
async fn view_of(agent: &Agent, name: &str) -> Result<KeygroupView, ApiError> {
    let actor = actor(agent);
    let found = match (agent.cp.as_ref(), &actor) {
        #[cfg(feature = "control-plane")]
        (CpAccess::Member(cp), Actor::Admin) => cp.keygroup_now(name, Some(&actor)).await,
        _ => agent.cp.keygroup(&agent.config.node, name).await,
    };
    let k = found.map_err(ApiError::from)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_keygroup",
            format!("no keygroup {name}"),
        )
    })?;
    let show = k.may_see_secret(&actor) && !k.secret.is_empty();
    Ok(views::keygroup(&k, show))
}

/// Proposes `command` for the client (whose token goes along: the control plane decides it
/// again for the admin's changes, DESIGN.md §6e-2) and, on success, answers the keygroup as
/// it stands after it.
async fn write_and_show(
    agent: &Agent,
    name: &str,
    request: MemberRequest,
    client: Option<Extension<ClientToken>>,
) -> Result<KeygroupView, ApiError> {
    let client = client.map(|Extension(t)| t).unwrap_or_default();
    match agent.cp.request_for(request, &client).await? {
        MemberAnswer::Applied(Applied {
            output: CommandOutput::Keygroup { .. },
            ..
        }) => view_of(agent, name).await,
        other => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopped",
            format!("unexpected answer {other:?}"),
        )),
    }
}

/// Every keygroup (tombstones too).
#[utoipa::path(get, path = "/v1/keygroups", tag = "keygroups",
    responses((status = 200, description = "The keygroups", body = [KeygroupView]),
        (status = 503, description = "No control plane reachable", body = ErrorBody)))]
async fn list(
    State(agent): State<Arc<Agent>>,
    grant: Option<Extension<Grant>>,
) -> Result<Json<Vec<KeygroupView>>, ApiError> {
    let actor = actor(&agent);
    let registry = match (agent.cp.as_ref(), &actor) {
        #[cfg(feature = "control-plane")]
        (CpAccess::Member(cp), Actor::Admin) => cp.view(ViewAt::Applied(0), Some(&actor)).await?,
        _ => registry(&agent).await?,
    };
    Ok(Json(
        registry
            .keygroups
            .iter()
            .filter(|k| readable(&grant, &k.name))
            .map(|k| views::keygroup(k, k.may_see_secret(&actor) && !k.secret.is_empty()))
            .collect(),
    ))
}

/// Whether the request's token may read keygroup `name` (listings keep only those).
fn readable(grant: &Option<Extension<Grant>>, name: &str) -> bool {
    grant
        .as_ref()
        .is_none_or(|g| g.allows(&Resource::Keygroup(name), Access::Read))
}

/// One keygroup.
#[utoipa::path(get, path = "/v1/keygroups/{app}/{tenant}/{group}", tag = "keygroups",
    params(("app" = String, Path), ("tenant" = String, Path), ("group" = String, Path)),
    responses((status = 200, description = "The keygroup", body = KeygroupView),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 404, description = "No such keygroup (unknown_keygroup)", body = ErrorBody)))]
async fn get_one(
    State(agent): State<Arc<Agent>>,
    Path((app, tenant, group)): Path<(String, String, String)>,
) -> Result<Json<KeygroupView>, ApiError> {
    let name = name_of(&app, &tenant, &group)?;
    Ok(Json(view_of(&agent, &name).await?))
}

/// The body of `PUT /v1/keygroups/{app}/{tenant}/{group}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub ttl: Option<u32>,
    pub open: Option<bool>,
}

/// A keygroup route's JSON body; an empty body is the default.
pub fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// Creates a keygroup with this member's node as its first replica.
#[utoipa::path(put, path = "/v1/keygroups/{app}/{tenant}/{group}", tag = "keygroups",
    params(("app" = String, Path), ("tenant" = String, Path), ("group" = String, Path)),
    request_body(content = Option<CreateBody>, description = "Optional settings"),
    responses((status = 201, description = "Created", body = KeygroupView),
        (status = 400, description = "Invalid name or body", body = ErrorBody),
        (status = 409, description = "keygroup_exists or tombstoned", body = ErrorBody)))]
async fn create(
    State(agent): State<Arc<Agent>>,
    Path((app, tenant, group)): Path<(String, String, String)>,
    client: Option<Extension<ClientToken>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<KeygroupView>), ApiError> {
    let name = name_of(&app, &tenant, &group)?;
    let body: CreateBody = parse_body(&body)?;
    let command = MemberRequest::CreateKeygroup {
        name: name.clone(),
        node: agent.config.node.clone(),
        ttl_secs: body.ttl,
        open: body.open,
    };
    Ok((
        StatusCode::CREATED,
        Json(write_and_show(&agent, &name, command, client).await?),
    ))
}

/// The body of `PATCH /v1/keygroups/{app}/{tenant}/{group}`: the control plane's
/// [`KeygroupChanges`].
pub type UpdateBody = KeygroupChanges;

/// Changes a keygroup: all the given changes or none (version+1).
#[utoipa::path(patch, path = "/v1/keygroups/{app}/{tenant}/{group}", tag = "keygroups",
    params(("app" = String, Path), ("tenant" = String, Path), ("group" = String, Path)),
    request_body = KeygroupChanges,
    responses((status = 200, description = "The keygroup after the change", body = KeygroupView),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 403, description = "Not a replica node (not_a_replica)", body = ErrorBody),
        (status = 404, description = "No such keygroup", body = ErrorBody),
        (status = 409, description = "last_replica or tombstoned", body = ErrorBody)))]
async fn update(
    State(agent): State<Arc<Agent>>,
    Path((app, tenant, group)): Path<(String, String, String)>,
    client: Option<Extension<ClientToken>>,
    body: axum::body::Bytes,
) -> Result<Json<KeygroupView>, ApiError> {
    let name = name_of(&app, &tenant, &group)?;
    let body: UpdateBody = parse_body(&body)?;
    let command = MemberRequest::UpdateKeygroup {
        name: name.clone(),
        by: actor(&agent),
        changes: body,
    };
    Ok(Json(write_and_show(&agent, &name, command, client).await?))
}

/// Tombstones a keygroup (irreversible).
#[utoipa::path(delete, path = "/v1/keygroups/{app}/{tenant}/{group}", tag = "keygroups",
    params(("app" = String, Path), ("tenant" = String, Path), ("group" = String, Path)),
    responses((status = 200, description = "The tombstone", body = KeygroupView),
        (status = 403, description = "Not a replica node", body = ErrorBody),
        (status = 404, description = "No such keygroup", body = ErrorBody)))]
async fn delete(
    State(agent): State<Arc<Agent>>,
    Path((app, tenant, group)): Path<(String, String, String)>,
    client: Option<Extension<ClientToken>>,
) -> Result<Json<KeygroupView>, ApiError> {
    let name = name_of(&app, &tenant, &group)?;
    let command = MemberRequest::DeleteKeygroup {
        name: name.clone(),
        by: actor(&agent),
    };
    Ok(Json(write_and_show(&agent, &name, command, client).await?))
}

/// Every held (node, keygroup) with its holder and fence, and the subscriptions the holder
/// reports holding for it (asked from each holder at once; `null` when it does not answer in
/// time).
#[utoipa::path(get, path = "/v1/responsibilities", tag = "keygroups",
    responses((status = 200, description = "One row per held (node, keygroup)", body = [ResponsibilityView]),
        (status = 503, description = "No control plane reachable", body = ErrorBody)))]
async fn responsibilities(
    State(agent): State<Arc<Agent>>,
    grant: Option<Extension<Grant>>,
) -> Result<Json<Vec<ResponsibilityView>>, ApiError> {
    let mut registry = registry(&agent).await?;
    registry
        .responsibilities
        .retain(|r| readable(&grant, &r.keygroup));
    let holder = |id| registry.members.iter().find(|m| m.info.id == id);
    let mut asks = tokio::task::JoinSet::new();
    for (i, r) in registry.responsibilities.iter().enumerate() {
        let Some(m) = holder(r.machine) else { continue };
        let Some(role) = m
            .info
            .roles
            .iter()
            .find(|role| *role == "dns" || *role == "trigger")
        else {
            continue;
        };
        let (client, addr, keygroup) = (
            agent.internal.clone(),
            m.info.http_addr.clone(),
            r.keygroup.clone(),
        );
        let path = format!("/internal/v1/roles/{role}/status");
        asks.spawn(async move {
            let status = client
                .get_json(&addr, &path, std::time::Duration::from_secs(1))
                .await
                .ok();
            (
                i,
                status.and_then(|s| s["keygroups"][&keygroup]["subscriptions"].as_u64()),
            )
        });
    }
    let mut subscriptions = vec![None; registry.responsibilities.len()];
    while let Some(Ok((i, n))) = asks.join_next().await {
        subscriptions[i] = n;
    }
    Ok(Json(
        registry
            .responsibilities
            .iter()
            .zip(subscriptions)
            .map(|(r, n)| ResponsibilityView {
                subscriptions: n,
                ..views::responsibility(r, holder(r.machine).map(|m| m.info.name.as_str()))
            })
            .collect(),
    ))
}
