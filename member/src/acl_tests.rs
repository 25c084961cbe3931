//! What each route needs, and the decisions over a table with tokens and policies.

use axum::http::{HeaderValue, Method};
use hivemind_common::secret::{new_token, token_hash};
use hivemind_control_plane::registry::AclOp;

use super::*;

fn get(path: &str) -> Need<'_> {
    need(&Method::GET, path)
}

fn put(path: &str) -> Need<'_> {
    need(&Method::PUT, path)
}

#[test]
fn every_route_family_needs_its_resource() {
    assert_eq!(get("/v1/kv/app/x").resource, Resource::Kv("app/x"));
    assert_eq!(get("/v1/kv/app/x").access, Access::Read);
    assert_eq!(put("/v1/kv/app/x").access, Access::Write);
    assert_eq!(
        need(&Method::DELETE, "/v1/kv/a").access,
        Access::Write,
        "a delete writes"
    );
    assert_eq!(
        get("/v1/keygroups/a/b/c").resource,
        Resource::Keygroup("a/b/c")
    );
    assert_eq!(get("/v1/events").resource, Resource::Events);
    assert_eq!(get("/v1/backup/spaces").resource, Resource::Backup);
    assert_eq!(get("/v1/acl/tokens").resource, Resource::Acl);
    assert_eq!(
        put("/v1/roles/host/services").resource,
        Resource::Role("host")
    );
    assert_eq!(
        get("/v1/catalog/services").resource,
        Resource::Role("host"),
        "Consul's catalog serves the host records"
    );
    for path in [
        "/v1/status",
        "/v1/members",
        "/v1/cp/status",
        "/v1/nodes",
        "/v1/openapi.json",
    ] {
        assert_eq!(get(path).resource, Resource::Cp, "{path}");
    }
    assert_eq!(need(&Method::POST, "/v1/cp/epoch").access, Access::Write);
}

fn table() -> (Enforced, String, String) {
    let mut rng = rand::thread_rng();
    let mut acl = AclTable::default();
    let (root, root_secret) = (new_token(&mut rng), new_token(&mut rng));
    acl.apply(
        1,
        &AclOp::Bootstrap {
            accessor: root,
            secret_hash: token_hash(&root_secret),
        },
    )
    .unwrap();
    acl.apply(
        2,
        &AclOp::PolicySet {
            name: "app-read".into(),
            rules: "cp = \"read\"\n[kv]\n\"app/\" = \"read\"\n\"app/secret/\" = \"deny\"\n".into(),
        },
    )
    .unwrap();
    let (reader, reader_secret) = (new_token(&mut rng), new_token(&mut rng));
    acl.apply(
        3,
        &AclOp::TokenCreate {
            accessor: reader,
            secret_hash: token_hash(&reader_secret),
            policies: vec!["app-read".into()],
            description: String::new(),
        },
    )
    .unwrap();
    (Enforced::new(acl), root_secret, reader_secret)
}

fn allowed(v: &Verdict) -> bool {
    matches!(v, Verdict::Allow(_))
}

#[test]
fn a_token_gets_what_its_policies_allow_and_nothing_else() {
    let (acl, root, reader) = table();
    let r = Some(reader.as_str());
    assert!(allowed(&decide(&acl, None, r, &get("/v1/kv/app/x"))));
    assert!(!allowed(&decide(&acl, None, r, &put("/v1/kv/app/x"))));
    assert!(!allowed(&decide(&acl, None, r, &get("/v1/kv/other/y"))));
    assert!(!allowed(&decide(
        &acl,
        None,
        r,
        &get("/v1/kv/app/secret/k")
    )));
    assert!(allowed(&decide(&acl, None, r, &get("/v1/status"))));
    assert!(!allowed(&decide(&acl, None, r, &get("/v1/events"))));
    match decide(&acl, None, r, &put("/v1/kv/app/x")) {
        Verdict::Refuse {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((status.as_u16(), code), (403, "permission_denied"));
            assert!(
                message.contains("write") && message.contains("app/x"),
                "{message}"
            );
            assert!(!message.contains(&reader), "never the secret");
        }
        other => panic!("{other:?}"),
    }
    // The management token may do anything.
    assert!(allowed(&decide(
        &acl,
        None,
        Some(&root),
        &put("/v1/acl/tokens")
    )));
}

#[test]
fn anonymous_malformed_and_unknown_tokens() {
    let (acl, _, _) = table();
    // No anonymous policy: nothing.
    match decide(&acl, None, None, &get("/v1/status")) {
        Verdict::Refuse { status, code, .. } => {
            assert_eq!((status.as_u16(), code), (403, "permission_denied"))
        }
        other => panic!("{other:?}"),
    }
    match decide(&acl, None, Some("hunter2"), &get("/v1/status")) {
        Verdict::Refuse { status, code, .. } => {
            assert_eq!((status.as_u16(), code), (401, "malformed_token"))
        }
        other => panic!("{other:?}"),
    }
    let stranger = new_token(&mut rand::thread_rng());
    assert_eq!(
        decide(&acl, None, Some(&stranger), &get("/v1/status")),
        Verdict::UnknownToken
    );
    // The admin token stays a management token.
    assert!(allowed(&decide(
        &acl,
        Some("adm1n"),
        Some("adm1n"),
        &put("/v1/kv/x")
    )));
}

#[test]
fn before_bootstrap_the_cluster_is_open_or_needs_the_admin_token() {
    let open = Enforced::default();
    assert!(allowed(&decide(&open, None, None, &put("/v1/kv/x"))));
    match decide(&open, Some("adm1n"), None, &put("/v1/kv/x")) {
        Verdict::Refuse { status, code, .. } => {
            assert_eq!((status.as_u16(), code), (401, "unauthorized"))
        }
        other => panic!("{other:?}"),
    }
    assert!(!allowed(&decide(
        &open,
        Some("adm1n"),
        Some("adm1"),
        &put("/v1/kv/x")
    )));
    assert!(allowed(&decide(
        &open,
        Some("adm1n"),
        Some("adm1n"),
        &put("/v1/kv/x")
    )));
}

#[test]
fn the_token_is_read_from_any_of_its_headers() {
    let mut h = HeaderMap::new();
    assert_eq!(presented(&h), None);
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer s3cret"),
    );
    assert_eq!(presented(&h), Some("s3cret"));
    let mut h = HeaderMap::new();
    h.insert(TOKEN_HEADER, HeaderValue::from_static("s3cret"));
    assert_eq!(presented(&h), Some("s3cret"));
    let mut h = HeaderMap::new();
    h.insert(CONSUL_TOKEN_HEADER, HeaderValue::from_static("s3cret"));
    assert_eq!(presented(&h), Some("s3cret"), "a Consul client's header");
}

#[test]
fn the_timer_reads_the_table_only_without_one_or_with_the_feed_behind() {
    assert!(timed_read_due(false, true), "no table yet");
    assert!(timed_read_due(false, false));
    assert!(
        timed_read_due(true, false),
        "the feed is behind: it may miss a change"
    );
    assert!(
        !timed_read_due(true, true),
        "caught up: every change arrives as an acl_changed event"
    );
}
