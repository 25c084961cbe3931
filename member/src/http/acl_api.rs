//! The ACL routes (DESIGN.md §6e), on every member: bootstrap, policies and tokens. A secret is
//! answered once, to whoever made the token; listings show accessors only. What may call these
//! is decided by `acl::enforce` (the `acl` rule) like any other route.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use hivemind_common::api::ErrorBody;
use hivemind_control_plane::http::ApiError;
use hivemind_control_plane::member_requests::{AclRequest, MemberAnswer, MemberRequest, NewToken};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::acl::ClientToken;
use crate::state::Agent;

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(bootstrap, set_policy, policies, delete_policy, create_token, tokens, delete_token),
    components(schemas(NewToken, PolicyView, TokenView, CreateToken, Changed)),
    tags((name = "acl", description = "ACL policies and tokens"))
)]
pub struct AclApi;

pub(crate) fn routes(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/acl/bootstrap", post(bootstrap))
        .route(
            "/v1/acl/policy/{name}",
            put(set_policy).delete(delete_policy),
        )
        .route("/v1/acl/policies", get(policies))
        .route("/v1/acl/tokens", post(create_token).get(tokens))
        .route("/v1/acl/token/{accessor}", delete(delete_token))
        .with_state(agent)
}

/// A policy: its name and TOML rules.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    pub name: String,
    pub rules: String,
    pub modify_index: u64,
}

/// A token without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub accessor: String,
    pub policies: Vec<String>,
    pub management: bool,
    pub description: String,
    pub create_index: u64,
    /// When it stops working (ms since the Unix epoch; Consul's `ExpirationTime`), if made
    /// with a TTL.
    pub expires_at_ms: Option<u64>,
}

/// The body of `POST /v1/acl/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub policies: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// How long the token works, e.g. `24h` (Consul's `ExpirationTTL`); refused once expired.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// A change was committed at `index`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Changed {
    pub index: u64,
}

/// The client's token, forwarded with what this member asks for it (the control plane decides
/// it again when this member is outside the control plane).
type Client = Option<Extension<ClientToken>>;

fn token_of(client: Client) -> ClientToken {
    client.map(|Extension(t)| t).unwrap_or_default()
}

async fn token_request(
    agent: &Agent,
    client: Client,
    request: AclRequest,
) -> Result<Json<NewToken>, ApiError> {
    let request = MemberRequest::Acl(request);
    match agent.cp.request_for(request, &token_of(client)).await? {
        MemberAnswer::Token(token) => Ok(Json(token)),
        other => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopped",
            format!("unexpected answer {other:?}"),
        )),
    }
}

async fn change(
    agent: &Agent,
    client: Client,
    request: AclRequest,
) -> Result<Json<Changed>, ApiError> {
    let request = MemberRequest::Acl(request);
    match agent.cp.request_for(request, &token_of(client)).await? {
        MemberAnswer::Applied(applied) => Ok(Json(Changed {
            index: applied.index,
        })),
        other => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopped",
            format!("unexpected answer {other:?}"),
        )),
    }
}

/// Turns ACLs on and answers the first management token; once only (409
/// `acl_bootstrapped`).
#[utoipa::path(post, path = "/v1/acl/bootstrap", tag = "acl",
    responses((status = 200, body = NewToken), (status = 409, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn bootstrap(
    State(agent): State<Arc<Agent>>,
    client: Client,
) -> Result<Json<NewToken>, ApiError> {
    token_request(&agent, client, AclRequest::Bootstrap).await
}

/// Creates or replaces a policy; the body is its TOML rules.
#[utoipa::path(put, path = "/v1/acl/policy/{name}", tag = "acl",
    params(("name" = String, Path)), request_body(content = String, content_type = "text/plain"),
    responses((status = 200, body = Changed), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn set_policy(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    client: Client,
    body: Bytes,
) -> Result<Json<Changed>, ApiError> {
    let rules = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "rules must be UTF-8 TOML",
        )
    })?;
    change(&agent, client, AclRequest::SetPolicy { name, rules }).await
}

#[utoipa::path(delete, path = "/v1/acl/policy/{name}", tag = "acl",
    params(("name" = String, Path)),
    responses((status = 200, body = Changed), (status = 404, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn delete_policy(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    client: Client,
) -> Result<Json<Changed>, ApiError> {
    change(&agent, client, AclRequest::DeletePolicy { name }).await
}

#[utoipa::path(get, path = "/v1/acl/policies", tag = "acl",
    responses((status = 200, body = [PolicyView]), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn policies(State(agent): State<Arc<Agent>>) -> Result<Json<Vec<PolicyView>>, ApiError> {
    let table = agent.cp.acl_table().await?;
    Ok(Json(
        table
            .policies
            .into_values()
            .map(|p| PolicyView {
                name: p.name,
                rules: p.rules,
                modify_index: p.modify_index,
            })
            .collect(),
    ))
}

/// Makes a token holding `policies`; its secret is in this answer and nowhere else.
#[utoipa::path(post, path = "/v1/acl/tokens", tag = "acl", request_body = CreateToken,
    responses((status = 200, body = NewToken), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn create_token(
    State(agent): State<Arc<Agent>>,
    client: Client,
    body: Bytes,
) -> Result<Json<NewToken>, ApiError> {
    let body: CreateToken = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")))?;
    let ttl_ms = match &body.ttl {
        None => None,
        Some(text) => match hivemind_common::duration::parse(text) {
            Ok(ttl) if !ttl.is_zero() => Some(ttl.as_millis() as u64),
            Ok(_) => return Err(ApiError::bad_request("ttl: must be more than 0")),
            Err(e) => return Err(ApiError::bad_request(format!("ttl: {e}"))),
        },
    };
    token_request(
        &agent,
        client,
        AclRequest::CreateToken {
            policies: body.policies,
            description: body.description,
            ttl_ms,
        },
    )
    .await
}

/// Every token, by accessor; never a secret.
#[utoipa::path(get, path = "/v1/acl/tokens", tag = "acl",
    responses((status = 200, body = [TokenView]), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn tokens(State(agent): State<Arc<Agent>>) -> Result<Json<Vec<TokenView>>, ApiError> {
    let table = agent.cp.acl_table().await?;
    Ok(Json(
        table
            .tokens
            .into_values()
            .map(|t| TokenView {
                accessor: t.accessor,
                policies: t.policies,
                management: t.management,
                description: t.description,
                create_index: t.create_index,
                expires_at_ms: t.expires_at_ms,
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/v1/acl/token/{accessor}", tag = "acl",
    params(("accessor" = String, Path)),
    responses((status = 200, body = Changed), (status = 404, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn delete_token(
    State(agent): State<Arc<Agent>>,
    Path(accessor): Path<String>,
    client: Client,
) -> Result<Json<Changed>, ApiError> {
    change(&agent, client, AclRequest::DeleteToken { accessor }).await
}
