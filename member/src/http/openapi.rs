//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of this member's HTTP API, derived from the
//! handlers' annotations and the view types they send (utoipa). Each member describes exactly
//! the routes it serves: the member's and the keygroups' everywhere, the control plane's on
//! control-plane members, each loaded role's under `/v1/roles/<name>/`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi as Document, SecurityRequirement};
use utoipa::OpenApi;

/// The document route itself.
#[derive(OpenApi)]
#[openapi(paths(route))]
struct DocumentApi;

/// The document for a member with (or without) the control plane and these roles.
pub fn document(control_plane: bool, roles: &[String]) -> Document {
    let mut doc = crate::http::member_api::MemberApi::openapi();
    doc.merge(crate::http::keygroups_api::KeygroupsApi::openapi());
    doc.merge(DocumentApi::openapi());
    doc.merge(crate::http::backup_api::BackupLedgerApi::openapi());
    doc.merge(crate::http::acl_api::AclApi::openapi());
    doc.merge(crate::http::dashboard::DashboardApi::openapi());
    #[cfg(feature = "control-plane")]
    if control_plane {
        doc.merge(hivemind_control_plane::http::api::CpApi::openapi());
        doc.merge(hivemind_control_plane::http::coordination::CoordinationApi::openapi());
        doc.merge(hivemind_control_plane::http::locks::LocksApi::openapi());
    }
    #[cfg(not(feature = "control-plane"))]
    let _ = control_plane;
    for role in roles {
        if let Some(role_doc) = crate::role_runtime::openapi(role) {
            doc.merge(role_doc);
        }
    }
    doc.info = InfoBuilder::new()
        .title("hivemind")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The admin HTTP API of one hivemind member. Errors are {\"error\": {\"code\", \"message\"}}. \
             With --admin-token, every route needs `Authorization: Bearer <token>` (401 without it).",
        ))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "admin_token",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    // Optional: only a member started with --admin-token asks for it.
    doc.security = Some(vec![
        SecurityRequirement::default(),
        SecurityRequirement::new("admin_token", Vec::<String>::new()),
    ]);
    doc
}

/// This member's OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this member's routes", content_type = "application/json", body = Object)))]
pub(crate) async fn route(State(json): State<Arc<String>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.as_ref().clone(),
    )
}

// The document with and without the control plane's routes, which need the feature.
#[cfg(all(test, feature = "control-plane"))]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_what_the_member_serves() {
        let plain = document(false, &[]);
        assert!(plain.paths.paths.contains_key("/v1/status"));
        assert!(plain
            .paths
            .paths
            .contains_key("/v1/keygroups/{app}/{tenant}/{group}"));
        assert!(plain.paths.paths.contains_key("/v1/openapi.json"));
        assert!(!plain.paths.paths.contains_key("/v1/kv/{key}"));
        let full = document(
            true,
            &[
                "host".into(),
                "dns".into(),
                "trigger".into(),
                "nginx".into(),
            ],
        );
        for path in [
            "/v1/kv/{key}",
            "/v1/cp/status",
            "/v1/roles/host/services",
            "/v1/roles/dns/records",
            "/v1/roles/trigger/status",
            "/v1/roles/trigger/events",
            "/v1/roles/nginx/config",
            "/v1/nginx",
            "/",
        ] {
            assert!(full.paths.paths.contains_key(path), "{path}");
        }
        // Merging keeps one schema per name: two different types may not share a name.
        let parts = [
            crate::http::member_api::MemberApi::openapi(),
            crate::http::keygroups_api::KeygroupsApi::openapi(),
            crate::http::dashboard::DashboardApi::openapi(),
            hivemind_control_plane::http::api::CpApi::openapi(),
            hivemind_control_plane::http::coordination::CoordinationApi::openapi(),
            hivemind_control_plane::http::locks::LocksApi::openapi(),
            crate::role_runtime::openapi("host").unwrap(),
            crate::role_runtime::openapi("trigger").unwrap(),
            crate::role_runtime::openapi("dns").unwrap(),
            crate::role_runtime::openapi("nginx").unwrap(),
        ];
        let mut seen: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
        for part in parts {
            for (name, schema) in part.components.unwrap().schemas {
                let schema = serde_json::to_value(schema).unwrap();
                if let Some(earlier) = seen.insert(name.clone(), schema.clone()) {
                    assert_eq!(earlier, schema, "two schemas named {name}");
                }
            }
        }
        let json = serde_json::to_value(&full).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        // Client generators name a method after each operationId: no two may share one.
        let mut ids = std::collections::BTreeMap::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(id) = op["operationId"].as_str() {
                    let here = format!("{method} {path}");
                    if let Some(other) = ids.insert(id.to_string(), here.clone()) {
                        panic!("operationId {id} is used by {other} and {here}");
                    }
                }
            }
        }
        assert!(json["components"]["schemas"]["ErrorBody"].is_object());
    }
}
