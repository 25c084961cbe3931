//! The dashboard (DESIGN.md §6i): one page and its script, served from the binary with no build
//! step (`GET /`, `GET /dashboard.js`), reading the `/v1` API as any client does, plus the one
//! route it needs that no other client did: `GET /v1/nginx`, every live nginx member's running
//! configuration and last reload, asked from each member at once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hivemind_control_plane::http::views::ErrorBody;
use hivemind_control_plane::http::ApiError;
use hivemind_control_plane::registry::MemberState;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::member_api::registry;
use crate::state::Agent;

/// How long `GET /v1/nginx` waits for each nginx member.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /`: the dashboard page. It follows the event feed and KV watches (long-polls) and
/// re-reads only what changed; under ACLs it asks for a token.
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 200, description = "The dashboard (an HTML page and /dashboard.js)", content_type = "text/html", body = String)))]
pub(crate) async fn page() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        axum::response::Html(include_str!("index.html")),
    )
}

/// `GET /dashboard.js`: the dashboard's script (plain JavaScript, no dependencies).
async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        concat!(
            include_str!("app.js"),
            include_str!("kv.js"),
            include_str!("live.js")
        ),
    )
}

/// One nginx member's state: its `GET /v1/roles/nginx/config`, or why it did not answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NginxMemberView {
    pub member: String,
    pub http: String,
    /// The member's `/v1/roles/nginx/config` (`null` when it did not answer).
    #[schema(value_type = Object)]
    pub config: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// Every live nginx member's running configuration and last reload.
#[utoipa::path(get, path = "/v1/nginx", tag = "operations",
    responses((status = 200, description = "One entry per live nginx member", body = [NginxMemberView]),
        (status = 503, description = "No control plane reachable", body = ErrorBody)))]
pub(crate) async fn nginx(
    State(agent): State<Arc<Agent>>,
) -> Result<Json<Vec<NginxMemberView>>, ApiError> {
    let registry = registry(&agent).await?;
    let mut asks = tokio::task::JoinSet::new();
    for m in registry
        .members
        .iter()
        .filter(|m| m.state == MemberState::Alive && m.info.roles.iter().any(|r| r == "nginx"))
    {
        let (client, name, http) = (
            agent.internal.clone(),
            m.info.name.clone(),
            m.info.http_addr.clone(),
        );
        asks.spawn(async move {
            let answer = client
                .get_json(&http, "/internal/v1/roles/nginx/config", ASK_TIMEOUT)
                .await;
            let (config, error) = match answer {
                Ok(config) => (Some(config), None),
                Err(e) => (None, Some(e.to_string())),
            };
            NginxMemberView {
                member: name,
                http,
                config,
                error,
            }
        });
    }
    let mut views = Vec::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok(view) = joined {
            views.push(view);
        }
    }
    views.sort_by(|a, b| a.member.cmp(&b.member));
    Ok(Json(views))
}

/// The dashboard's routes.
pub(crate) fn routes(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/dashboard.js", get(script))
        .route("/v1/nginx", get(nginx))
        .with_state(agent)
}

/// The dashboard's routes, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(page, nginx), components(schemas(NginxMemberView)))]
pub struct DashboardApi;
