//! The authority rules on a registry built by its own commands.

use hivemind_common::MemberId;

use super::*;
use crate::registry::{AclOp, Command, MemberInfo};

fn id(n: u64) -> MemberId {
    MemberId::new(n).unwrap()
}

fn member(n: u64, name: &str, node: &str) -> MemberInfo {
    MemberInfo {
        id: id(n),
        name: name.to_string(),
        node: node.to_string(),
        roles: vec!["host".to_string()],
        http_addr: format!("127.0.0.1:{}", 7000 + n),
        gossip_addr: format!("127.0.0.1:{}", 8000 + n),
        generation: 1,
        control_plane: false,
    }
}

/// web-1 (node web, id 1) and dns-1 (node dns, id 2), both alive.
fn registry() -> Registry {
    let mut registry = Registry::default();
    for (index, m) in [
        (1, member(1, "web-1", "web")),
        (2, member(2, "dns-1", "dns")),
    ] {
        registry
            .apply(
                index,
                &Command::Join {
                    member: m,
                    epoch: None,
                },
            )
            .unwrap();
    }
    registry
}

/// No client token, no admin token.
fn nobody() -> ForClient<'static> {
    ForClient {
        token: None,
        admin_token: None,
        now_ms: 1_000,
    }
}

fn web1() -> Caller {
    Caller::member("web-1", false)
}

#[test]
fn only_control_plane_certificates_reach_control_plane_routes() {
    let cp = Caller::member("cp1", true);
    let anonymous = Caller::Certified(None);
    let mut all: Vec<&str> = ops::ALL_PATHS.to_vec();
    all.extend([ops::APPEND_STREAM, ops::CALL_STREAM]);
    for path in &all {
        assert_eq!(may_call(path, &cp), Ok(()), "{path}");
        assert_eq!(may_call(path, &Caller::SharedSecret), Ok(()), "{path}");
        assert_eq!(
            may_call(path, &anonymous),
            Err(Denied::NoIdentity),
            "{path}"
        );
        let member = may_call(path, &web1());
        if MEMBER_PATHS.contains(path) {
            assert_eq!(member, Ok(()), "{path}");
        } else {
            assert_eq!(member.unwrap_err().code(), "not_control_plane", "{path}");
        }
    }
    for path in [
        ops::Append::PATH,
        ops::Vote::PATH,
        ops::PreVote::PATH,
        ops::Snapshot::PATH,
        ops::APPEND_STREAM,
        ops::Write::PATH,
        ops::Propose::PATH,
        ops::Admin::PATH,
        ops::HelloOp::PATH,
        ops::Registry::PATH,
        ops::RegistryNow::PATH,
        ops::KvGet::PATH,
        "/internal/v1/some-route-added-later",
    ] {
        assert!(may_call(path, &web1()).is_err(), "{path}");
    }
}

#[test]
fn a_member_speaks_only_for_itself() {
    let registry = registry();
    let ok = |request: MemberRequest| may_request(&request, &web1(), &registry, nobody());
    let denied = |request: MemberRequest| {
        may_request(&request, &web1(), &registry, nobody())
            .unwrap_err()
            .code()
    };
    assert_eq!(ok(MemberRequest::Leave { id: id(1) }), Ok(()));
    assert_eq!(
        denied(MemberRequest::Leave { id: id(2) }),
        "not_your_identity"
    );
    assert_eq!(
        denied(MemberRequest::Leave { id: id(9) }),
        "not_your_identity"
    );
    let mv = |n| MemberRequest::MoveAddress {
        id: id(n),
        generation: 2,
        http_addr: "127.0.0.1:1".into(),
        gossip_addr: "127.0.0.1:2".into(),
    };
    assert_eq!(ok(mv(1)), Ok(()));
    assert_eq!(denied(mv(2)), "not_your_identity");
    let claim = |node: &str, machine| MemberRequest::Claim {
        node: node.into(),
        keygroup: "a/b/c".into(),
        machine: id(machine),
        seen: 0,
    };
    assert_eq!(ok(claim("web", 1)), Ok(()));
    assert_eq!(denied(claim("dns", 1)), "not_your_identity");
    assert_eq!(denied(claim("web", 2)), "not_your_identity");
    let join = |node: &str| MemberRequest::JoinKeygroup {
        name: "a/b/c".into(),
        node: node.into(),
        seen: 0,
    };
    assert_eq!(ok(join("web")), Ok(()));
    assert_eq!(denied(join("dns")), "not_your_identity");
    let report = |n| MemberRequest::Report {
        member: id(n),
        report: hivemind_common::role::RoleReport::NginxRenderFailed { error: "x".into() },
    };
    assert_eq!(ok(report(1)), Ok(()));
    assert_eq!(denied(report(2)), "not_your_identity");
    assert_eq!(
        ok(MemberRequest::ReportFailed {
            id: id(2),
            generation: 1
        }),
        Ok(()),
        "SWIM verdicts are about others"
    );
    let delete = |by| MemberRequest::DeleteKeygroup {
        name: "a/b/c".into(),
        by,
    };
    assert_eq!(ok(delete(Actor::Node("web".into()))), Ok(()));
    assert_eq!(
        denied(delete(Actor::Node("dns".into()))),
        "not_your_identity"
    );
    assert_eq!(ok(MemberRequest::Acl(AclRequest::Bootstrap)), Ok(()));
    // Its own admission, as a member; never as a control-plane member.
    assert_eq!(
        ok(MemberRequest::Admit {
            member: member(1, "web-1", "web")
        }),
        Ok(())
    );
    let mut cp = member(1, "web-1", "web");
    cp.control_plane = true;
    assert_eq!(
        denied(MemberRequest::Admit { member: cp }),
        "not_control_plane"
    );
    assert_eq!(
        denied(MemberRequest::Admit {
            member: member(3, "web-2", "web")
        }),
        "not_your_identity"
    );
    // The control plane and a cluster without identities may ask anything.
    for caller in [Caller::member("cp1", true), Caller::SharedSecret] {
        assert_eq!(
            may_request(&claim("dns", 2), &caller, &registry, nobody()),
            Ok(())
        );
    }
    assert_eq!(
        may_request(
            &claim("web", 1),
            &Caller::Certified(None),
            &registry,
            nobody()
        ),
        Err(Denied::NoIdentity)
    );
}

#[test]
fn a_member_reads_secrets_only_for_its_node() {
    let registry = registry();
    let node = |n: &str| Some(Actor::Node(n.into()));
    assert_eq!(secrets_for("web", &web1(), &registry), Ok(node("web")));
    assert_eq!(
        secrets_for("dns", &web1(), &registry).unwrap_err().code(),
        "not_your_identity"
    );
    // Not admitted yet: a view without secrets.
    let newcomer = Caller::member("web-9", false);
    assert_eq!(secrets_for("web", &newcomer, &registry), Ok(None));
    let cp = Caller::member("cp1", true);
    assert_eq!(secrets_for("dns", &cp, &registry), Ok(node("dns")));
}

#[test]
fn what_a_member_asks_for_a_client_needs_the_clients_token() {
    use hivemind_common::secret::{new_token, token_hash};
    let mut registry = registry();
    let acl_change = MemberRequest::Acl(AclRequest::DeletePolicy { name: "p".into() });
    let admin_delete = MemberRequest::DeleteKeygroup {
        name: "a/b/c".into(),
        by: Actor::Admin,
    };
    let asks = |registry: &Registry, request: &MemberRequest, client: ForClient<'_>| {
        may_request(request, &web1(), registry, client).map_err(|d| d.code())
    };
    // Before ACLs and without an admin token the cluster is open, as on `/v1`.
    assert_eq!(asks(&registry, &acl_change, nobody()), Ok(()));
    // With an admin token, only it.
    let admin = ForClient {
        admin_token: Some("adm1n"),
        ..nobody()
    };
    assert_eq!(
        asks(&registry, &acl_change, admin),
        Err("permission_denied")
    );
    let with_admin = ForClient {
        token: Some("adm1n"),
        ..admin
    };
    assert_eq!(asks(&registry, &admin_delete, with_admin), Ok(()));

    // Once bootstrapped: a management token may, a reader's and an expired one may not.
    let mut rng = rand::thread_rng();
    let (root, root_secret) = (new_token(&mut rng), new_token(&mut rng));
    let (reader, reader_secret) = (new_token(&mut rng), new_token(&mut rng));
    let (old, old_secret) = (new_token(&mut rng), new_token(&mut rng));
    for (index, op) in [
        (
            10,
            AclOp::Bootstrap {
                accessor: root,
                secret_hash: token_hash(&root_secret),
            },
        ),
        (
            11,
            AclOp::PolicySet {
                name: "kg".into(),
                rules: "[keygroup]\n\"a/\" = \"write\"\n".into(),
            },
        ),
        (
            12,
            AclOp::TokenCreate {
                accessor: reader,
                secret_hash: token_hash(&reader_secret),
                policies: vec!["kg".into()],
                description: String::new(),
                expires_at_ms: None,
            },
        ),
        (
            13,
            AclOp::TokenCreate {
                accessor: old,
                secret_hash: token_hash(&old_secret),
                policies: vec!["kg".into()],
                description: String::new(),
                expires_at_ms: Some(500),
            },
        ),
    ] {
        registry.apply(index, &Command::Acl(op)).unwrap();
    }
    let token = |secret| ForClient {
        token: Some(secret),
        ..nobody()
    };
    assert_eq!(
        asks(&registry, &acl_change, nobody()),
        Err("permission_denied")
    );
    assert_eq!(asks(&registry, &acl_change, token(&root_secret)), Ok(()));
    assert_eq!(
        asks(&registry, &acl_change, token(&reader_secret)),
        Err("permission_denied")
    );
    assert_eq!(
        asks(&registry, &admin_delete, token(&reader_secret)),
        Ok(())
    );
    assert_eq!(
        asks(&registry, &admin_delete, token(&old_secret)),
        Err("permission_denied"),
        "expired at 500 ms, asked at 1000"
    );
    // A control-plane certificate is the control plane: no client needed.
    assert_eq!(
        may_request(
            &acl_change,
            &Caller::member("cp1", true),
            &registry,
            nobody()
        ),
        Ok(())
    );
}
