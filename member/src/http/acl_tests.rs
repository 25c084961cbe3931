//! What each route needs, and the decisions over a table with tokens and policies.

use axum::http::{HeaderValue, Method};
use hivemind_common::secret::{new_token, token_hash};
use hivemind_control_plane::registry::{AclOp, AclTable};

use super::*;

fn get(path: &str) -> Need<'_> {
    need(&Method::GET, path, None)
}

fn put(path: &str) -> Need<'_> {
    need(&Method::PUT, path, None)
}

#[test]
fn every_route_family_needs_its_resource() {
    assert_eq!(get("/v1/kv/app/x").resource, Resource::Kv("app/x"));
    assert_eq!(get("/v1/kv/app/x").access, Access::Read);
    assert_eq!(put("/v1/kv/app/x").access, Access::Write);
    assert_eq!(
        need(&Method::DELETE, "/v1/kv/a", None).access,
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
    for path in ["/v1/agent/service/register", "/v1/agent/check/pass/c"] {
        assert_eq!(put(path).resource, Resource::Role("host"), "{path}");
    }
    assert_eq!(get("/v1/agent/checks").resource, Resource::Role("host"));
    assert_eq!(get("/v1/agent/self").resource, Resource::Cp);
    assert_eq!(put("/v1/txn").resource, Resource::KvKeys);
    assert_eq!(put("/v1/leases/7/keepalive").resource, Resource::KvKeys);
    for path in [
        "/v1/status",
        "/v1/members",
        "/v1/cp/status",
        "/v1/nodes",
        "/v1/openapi.json",
    ] {
        assert_eq!(get(path).resource, Resource::Cp, "{path}");
    }
    assert_eq!(
        need(&Method::POST, "/v1/cp/epoch", None).access,
        Access::Write
    );
}

fn table() -> (Arc<Enforced>, String, String) {
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
            expires_at_ms: None,
        },
    )
    .unwrap();
    (Arc::new(Enforced::new(acl)), root_secret, reader_secret)
}

fn allowed(v: &Verdict) -> bool {
    matches!(v, Verdict::Allow(..))
}

/// The wall clock the decisions here are made at (ms since the Unix epoch).
const NOW: u64 = 1_800_000_000_000;

fn verdict(acl: &Arc<Enforced>, admin: Option<&str>, token: Option<&str>, need: &Need) -> Verdict {
    decide(acl, admin, token, need, NOW)
}

#[test]
fn a_token_gets_what_its_policies_allow_and_nothing_else() {
    let (acl, root, reader) = table();
    let r = Some(reader.as_str());
    assert!(allowed(&verdict(&acl, None, r, &get("/v1/kv/app/x"))));
    assert!(!allowed(&verdict(&acl, None, r, &put("/v1/kv/app/x"))));
    assert!(!allowed(&verdict(&acl, None, r, &get("/v1/kv/other/y"))));
    assert!(!allowed(&verdict(
        &acl,
        None,
        r,
        &get("/v1/kv/app/secret/k")
    )));
    assert!(allowed(&verdict(&acl, None, r, &get("/v1/status"))));
    assert!(!allowed(&verdict(&acl, None, r, &get("/v1/events"))));
    match verdict(&acl, None, r, &put("/v1/kv/app/x")) {
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
    assert!(allowed(&verdict(
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
    match verdict(&acl, None, None, &get("/v1/status")) {
        Verdict::Refuse { status, code, .. } => {
            assert_eq!((status.as_u16(), code), (403, "permission_denied"))
        }
        other => panic!("{other:?}"),
    }
    match verdict(&acl, None, Some("hunter2"), &get("/v1/status")) {
        Verdict::Refuse { status, code, .. } => {
            assert_eq!((status.as_u16(), code), (401, "malformed_token"))
        }
        other => panic!("{other:?}"),
    }
    let stranger = new_token(&mut rand::thread_rng());
    assert!(verdict(&acl, None, Some(&stranger), &get("/v1/status")).is_unknown_token());
    // The admin token stays a management token.
    assert!(allowed(&verdict(
        &acl,
        Some("adm1n"),
        Some("adm1n"),
        &put("/v1/kv/x")
    )));
}

#[test]
fn before_bootstrap_the_cluster_is_open_or_needs_the_admin_token() {
    let open = Arc::new(Enforced::default());
    assert!(allowed(&verdict(&open, None, None, &put("/v1/kv/x"))));
    match verdict(&open, Some("adm1n"), None, &put("/v1/kv/x")) {
        Verdict::Refuse { status, code, .. } => {
            assert_eq!((status.as_u16(), code), (401, "unauthorized"))
        }
        other => panic!("{other:?}"),
    }
    assert!(!allowed(&verdict(
        &open,
        Some("adm1n"),
        Some("adm1"),
        &put("/v1/kv/x")
    )));
    assert!(allowed(&verdict(
        &open,
        Some("adm1n"),
        Some("adm1n"),
        &put("/v1/kv/x")
    )));
}

#[test]
fn the_token_is_read_from_any_of_its_headers() {
    let mut h = HeaderMap::new();
    assert_eq!(presented(&h, None), None);
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer s3cret"),
    );
    assert_eq!(presented(&h, None), Some("s3cret"));
    let mut h = HeaderMap::new();
    h.insert(TOKEN_HEADER, HeaderValue::from_static("s3cret"));
    assert_eq!(presented(&h, None), Some("s3cret"));
    let mut h = HeaderMap::new();
    h.insert(CONSUL_TOKEN_HEADER, HeaderValue::from_static("s3cret"));
    assert_eq!(
        presented(&h, None),
        Some("s3cret"),
        "a Consul client's header"
    );
    // Consul's `?token=` when no header names one; a header wins.
    assert_eq!(presented(&HeaderMap::new(), Some("q")), Some("q"));
    assert_eq!(presented(&h, Some("q")), Some("s3cret"));
    let uri: axum::http::Uri = "/v1/kv?prefix=app%2F&token=abc".parse().unwrap();
    assert_eq!(
        query_params(&uri),
        (Some("abc".to_string()), Some("app/".to_string()))
    );
    assert_eq!(without_token(&uri), "/v1/kv?prefix=app%2F");
    let only: axum::http::Uri = "/v1/kv/a?token=abc".parse().unwrap();
    assert_eq!(without_token(&only), "/v1/kv/a");
}

#[test]
fn the_whole_registry_needs_management_and_a_listing_its_prefix() {
    assert_eq!(get("/v1/cp/snapshot").resource, Resource::Management);
    assert_eq!(
        need(&Method::GET, "/v1/kv", Some("app/")).resource,
        Resource::Kv("app/")
    );
    let (acl, root, reader) = table();
    let snapshot = get("/v1/cp/snapshot");
    assert!(!allowed(&verdict(&acl, None, Some(&reader), &snapshot)));
    assert!(allowed(&verdict(&acl, None, Some(&root), &snapshot)));
    assert!(allowed(&verdict(
        &acl,
        Some("adm1n"),
        Some("adm1n"),
        &snapshot
    )));
    // The reader may list app/, and its grant keeps app/ but not app/secret/ keys.
    let listing = need(&Method::GET, "/v1/kv", Some("app/"));
    let Verdict::Allow(_, grant) = verdict(&acl, None, Some(&reader), &listing) else {
        panic!("the reader lists app/")
    };
    assert!(grant.allows(&Resource::Kv("app/x"), Access::Read));
    assert!(!grant.allows(&Resource::Kv("app/secret/k"), Access::Read));
    assert!(!grant.allows(&Resource::Kv("other/y"), Access::Read));
    assert!(!allowed(&verdict(
        &acl,
        None,
        Some(&reader),
        &need(&Method::GET, "/v1/kv", None)
    )));
}

#[test]
fn an_expired_token_is_refused() {
    let (acl, _, _) = table();
    let mut table = acl.table.clone();
    let mut rng = rand::thread_rng();
    let (accessor, secret) = (new_token(&mut rng), new_token(&mut rng));
    table
        .apply(
            9,
            &AclOp::TokenCreate {
                accessor,
                secret_hash: token_hash(&secret),
                policies: vec!["app-read".into()],
                description: String::new(),
                expires_at_ms: Some(NOW + 1),
            },
        )
        .unwrap();
    let acl = Arc::new(Enforced::new(table));
    let read = get("/v1/kv/app/x");
    assert!(allowed(&decide(&acl, None, Some(&secret), &read, NOW)));
    match decide(&acl, None, Some(&secret), &read, NOW + 1) {
        Verdict::Refuse { status, code, .. } => {
            assert_eq!((status.as_u16(), code), (401, "token_expired"))
        }
        other => panic!("{other:?}"),
    }
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
