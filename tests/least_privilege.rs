//! End-to-end (DESIGN.md §6e-2): least privilege inside a TLS cluster with ACLs, spoken to as a
//! user and as a compromised member would: curl and a client holding web-1's own certificate.
//! Shows that
//! - a member's certificate cannot start a `--control-plane` member, nor one of another name;
//! - every control-plane-only internal route (the route table, enumerated) answers a member's
//!   certificate 403 `not_control_plane`, and passes a control-plane certificate;
//! - web-1's keygroup reads carry its own keygroup's secret and no other's; its requests for
//!   another member or node are 403 `not_your_identity`; an ACL change it makes up without a
//!   client's token is refused;
//! - a member joins through a member outside the control plane (sent on to the control plane);
//! - an expired token is refused, `?token=` works, the snapshot needs a management token, and
//!   every `/v1` GET route of the OpenAPI document answers a narrow token nothing outside its
//!   rules.

mod support;

use std::path::Path;

use hivemind_common::MemberId;
use hivemind_control_plane::authority::MEMBER_PATHS;
use hivemind_control_plane::member_requests::{
    AclRequest, MemberAnswer, MemberCall, MemberRequest,
};
use hivemind_control_plane::ops::{self, KeygroupQuery, Op, ViewAt, ViewRequest};
use hivemind_control_plane::registry::{KeygroupConfig, RegistryDigest};
use hivemind_control_plane::CpError;
use serde_json::Value;
use support::pki::*;
use support::*;

const ADMIN: &str = "adm1n-t0ken-for-least-privilege";
/// A value the narrow token must never see.
const DB_PASSWORD: &str = "hunter2-db-password-value";

/// Posts a bincode body to an internal route as the holder of `client`'s certificate: the
/// status and, on 200, the decoded answer.
async fn internal<Req: serde::Serialize, Ans: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    addr: &str,
    path: &str,
    body: &Req,
) -> (u16, Option<Ans>, String) {
    let response = client
        .post(format!("https://{addr}{path}"))
        .header("content-type", "application/octet-stream")
        .body(hivemind_common::encode(body))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let answer = (status == 200)
        .then(|| hivemind_common::decode(&bytes).ok())
        .flatten();
    (status, answer, String::from_utf8_lossy(&bytes).into_owned())
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).map_or_else(
        |_| body.to_string(),
        |v| v["error"]["code"].as_str().unwrap_or_default().to_string(),
    )
}

/// A member's certificate cannot start a control-plane member, nor a member of another name.
fn certificates_name_their_member(pki: &Path) {
    let mut args = vec!["agent".to_string(), "--control-plane".into()];
    args.extend(["--name".into(), "web-1".into()]);
    args.extend(tls_flags(pki, "web-1"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--control-plane") && stderr(&out).contains("member's"),
        "{}",
        stderr(&out)
    );
    let mut args = vec!["agent".to_string(), "--name".into(), "web-2".into()];
    args.extend(["--join".into(), "127.0.0.1:1".into()]);
    args.extend(tls_flags(pki, "web-1"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--name web-2"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_members_certificate_is_only_that_member() {
    if curl(&["--version"]).is_none() {
        cannot_run("curl is not installed (.ci/run installs it)");
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki_dir.path();
    make_pki(
        pki,
        &[
            ("--server --control-plane", "cp1"),
            ("--server --control-plane", "cp2"),
            ("--server --control-plane", "cp3"),
            ("--server", "web-1"),
            ("--server", "d1"),
        ],
    );
    certificates_name_their_member(pki);
    let ca = pki.join("ca.pem");
    let ca_s = ca.display().to_string();
    let flags = ["--gossip-profile", "local", "--admin-token", ADMIN];
    let mut cluster = Cluster::control_plane_with(3, &flags, |name| tls_flags(pki, name));
    let cp1 = cluster.agents[0].http_addr();
    wait_for("a healthy TLS control plane", || async {
        let out = hm(&ca, &cp1, Some(ADMIN), &["cp", "status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["health"] == "healthy").then_some(())
    })
    .await;
    let web_flags = tls_flags(pki, "web-1");
    let web_flags: Vec<&str> = web_flags.iter().map(String::as_str).collect();
    let web = cluster.start_role_member("web-1", "host", &web_flags);
    let web1 = cluster.agents[web].http_addr();
    let members = || async {
        let out = hm(&ca, &cp1, Some(ADMIN), &["members", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).ok()
    };
    let id_of = |members: &Value, name: &str| -> Option<MemberId> {
        members.as_array()?.iter().find_map(|m| {
            (m["name"] == name && m["state"] == "alive")
                .then(|| m["id"].as_str()?.parse().ok())
                .flatten()
        })
    };
    let web_id = wait_for("web-1 admitted", || async {
        id_of(&members().await?, "web-1")
    })
    .await;
    let cp1_id = id_of(&members().await.unwrap(), "cp1").unwrap();

    // A dns member joins through web-1, a member outside the control plane: web-1 sends it
    // on to the control plane, where it speaks for itself.
    let mut d1_flags = vec!["--gossip-profile".to_string(), "local".into()];
    d1_flags.extend(tls_flags(pki, "d1"));
    let d1_flags: Vec<&str> = d1_flags.iter().map(String::as_str).collect();
    let d1 = cluster.add_member("d1", &web1, &d1_flags);
    cluster.agents[d1].start();
    wait_for("d1 admitted through web-1", || async {
        id_of(&members().await?, "d1")
    })
    .await;

    // Two keygroups: one of web-1's node, one of cp1's; a key the narrow token may not read.
    for (addr, name) in [(&web1, "app/t/web"), (&cp1, "app/t/other")] {
        let out = hm(&ca, addr, Some(ADMIN), &["keygroup", "create", name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for (key, value) in [("app/x", "hello"), ("secret/db-password", DB_PASSWORD)] {
        let out = hm(&ca, &cp1, Some(ADMIN), &["kv", "put", key, value]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // Every control-plane-only route refuses web-1's certificate before reading the body,
    // and lets a control-plane certificate through to the body (400: garbage).
    let as_web = client_as(pki, "web-1");
    let as_cp2 = client_as(pki, "cp2");
    let mut routes: Vec<&str> = ops::ALL_PATHS.to_vec();
    routes.extend([ops::APPEND_STREAM, ops::CALL_STREAM]);
    let cp_only: Vec<&str> = routes
        .into_iter()
        .filter(|p| !MEMBER_PATHS.contains(p))
        .collect();
    assert!(cp_only.contains(&ops::RegistryNow::PATH) && cp_only.contains(&ops::Vote::PATH));
    let web_cert = pki.join("web-1.pem").display().to_string();
    let web_key = pki.join("web-1-key.pem").display().to_string();
    let cp2_cert = pki.join("cp2.pem").display().to_string();
    let cp2_key = pki.join("cp2-key.pem").display().to_string();
    for path in &cp_only {
        let url = format!("https://{cp1}{path}");
        let as_member = curl(&[
            "--cacert", &ca_s, "--cert", &web_cert, "--key", &web_key, "-X", "POST", "--data",
            "garbage", &url,
        ])
        .unwrap();
        let body = String::from_utf8_lossy(&as_member.stdout);
        assert_eq!(code(&body), "not_control_plane", "{path}: {body}");
        let as_cp = curl(&[
            "--cacert",
            &ca_s,
            "--cert",
            &cp2_cert,
            "--key",
            &cp2_key,
            "-X",
            "POST",
            "--data",
            "garbage",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
        .unwrap();
        let status = String::from_utf8_lossy(&as_cp.stdout);
        assert_ne!(status, "403", "{path}: a control-plane certificate passes");
    }

    // web-1's node-scoped reads: its own keygroup's secret, no other.
    let query = |name: &str, node: &str| KeygroupQuery {
        name: name.into(),
        node: node.into(),
    };
    let (status, answer, body) = internal::<_, Result<Option<KeygroupConfig>, CpError>>(
        &as_web,
        &cp1,
        ops::KeygroupRead::PATH,
        &query("app/t/web", "web-1"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let own = answer.unwrap().unwrap().unwrap();
    assert_eq!(own.secret.len(), 32, "its own keygroup's secret");
    let (_, answer, _) = internal::<_, Result<Option<KeygroupConfig>, CpError>>(
        &as_web,
        &cp1,
        ops::KeygroupRead::PATH,
        &query("app/t/other", "web-1"),
    )
    .await;
    let other = answer.unwrap().unwrap().unwrap();
    assert!(
        other.secret.is_empty(),
        "another node's keygroup: no secret"
    );
    let (status, _, body) = internal::<_, Value>(
        &as_web,
        &cp1,
        ops::KeygroupRead::PATH,
        &query("app/t/other", "cp1"),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "not_your_identity".into()));
    // A control-plane certificate reads any node's view.
    let (_, answer, _) = internal::<_, Result<Option<KeygroupConfig>, CpError>>(
        &as_cp2,
        &cp1,
        ops::KeygroupRead::PATH,
        &query("app/t/other", "cp1"),
    )
    .await;
    assert_eq!(answer.unwrap().unwrap().unwrap().secret.len(), 32);
    let view = ViewRequest {
        node: "web-1".into(),
        at: ViewAt::Now,
    };
    let (_, answer, _) =
        internal::<_, Result<RegistryDigest, CpError>>(&as_web, &cp1, ops::View::PATH, &view).await;
    let view = answer.unwrap().unwrap();
    for k in &view.keygroups {
        let mine = k.replicas.contains("web-1") || k.triggers.contains("web-1");
        assert_eq!(
            !k.secret.is_empty(),
            mine,
            "{}: secret only if web-1's",
            k.name
        );
    }

    // web-1 speaks only for itself: a claim or report for cp1, an ACL change with no
    // client's token.
    let ask = |request: MemberRequest| MemberCall {
        request,
        client_token: None,
    };
    let forged = [
        ask(MemberRequest::Claim {
            node: "cp1".into(),
            keygroup: "app/t/other".into(),
            machine: cp1_id,
            seen: 0,
        }),
        ask(MemberRequest::Claim {
            node: "web-1".into(),
            keygroup: "app/t/web".into(),
            machine: cp1_id,
            seen: 0,
        }),
        ask(MemberRequest::Report {
            member: cp1_id,
            report: hivemind_common::role::RoleReport::NginxRenderFailed {
                error: "forged".into(),
            },
        }),
        ask(MemberRequest::Leave { id: cp1_id }),
    ];
    for call in &forged {
        let (status, _, body) = internal::<_, Value>(&as_web, &cp1, ops::Request::PATH, call).await;
        assert_eq!(
            (status, code(&body)),
            (403, "not_your_identity".into()),
            "{call:?}"
        );
    }
    // Its own claim goes through.
    let own_claim = ask(MemberRequest::Claim {
        node: "web-1".into(),
        keygroup: "app/t/web".into(),
        machine: web_id,
        seen: 0,
    });
    let (status, answer, body) =
        internal::<_, Result<MemberAnswer, CpError>>(&as_web, &cp1, ops::Request::PATH, &own_claim)
            .await;
    assert_eq!(status, 200, "{body}");
    assert!(answer.unwrap().is_ok());

    // ACLs on. A made-up ACL change from web-1 (no client's token) is refused.
    let root = secret_of(&hm(&ca, &cp1, Some(ADMIN), &["acl", "bootstrap", "--json"]));
    let rewrite = ask(MemberRequest::Acl(AclRequest::SetPolicy {
        name: "anonymous".into(),
        rules: "cp = \"write\"\n".into(),
    }));
    let (status, _, body) = internal::<_, Value>(&as_web, &cp1, ops::Request::PATH, &rewrite).await;
    assert_eq!((status, code(&body)), (403, "permission_denied".into()));
    // Through web-1 with the management token it works (the token went along and the
    // control plane decided it).
    let rules = pki.join("app-read.toml");
    std::fs::write(&rules, "cp = \"read\"\n[kv]\n\"app/\" = \"read\"\n").unwrap();
    let rules = rules.to_str().unwrap();
    let out = hm(
        &ca,
        &web1,
        Some(&root),
        &["acl", "policy", "create", "app-read", "--rules", rules],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let narrow = secret_of(&hm(
        &ca,
        &cp1,
        Some(&root),
        &["acl", "token", "create", "--policy", "app-read", "--json"],
    ));

    // Consul's ?token=; the snapshot needs a management token.
    let kv_url = format!("https://{cp1}/v1/kv/app/x?token={narrow}");
    let out = curl(&["--cacert", &ca_s, &kv_url]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    let out = hm(&ca, &cp1, Some(&narrow), &["snapshot", "save", "/dev/null"]);
    assert!(
        stderr(&out).contains("permission_denied"),
        "{}",
        stderr(&out)
    );
    let saved = pki.join("snapshot.json");
    let out = hm(
        &ca,
        &cp1,
        Some(&root),
        &["snapshot", "save", saved.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // Every /v1 GET route answers the narrow token nothing outside its rules.
    let root_accessor = {
        let out = hm(&ca, &cp1, Some(&root), &["acl", "token", "list", "--json"]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["management"] == true)
            .unwrap()["accessor"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut forbidden = vec![DB_PASSWORD.to_string(), root_accessor, root.clone()];
    forbidden.push("app/t/other".into());
    for k in [&own, &other] {
        forbidden.push(base64_of(&k.secret));
    }
    let forbidden: Vec<&String> = forbidden.iter().filter(|f| !f.is_empty()).collect();
    let mut walked = 0;
    for addr in [&cp1, &web1] {
        let out = curl(&[
            "--cacert",
            &ca_s,
            "-H",
            &format!("X-Hivemind-Token: {root}"),
            &format!("https://{addr}/v1/openapi.json"),
        ])
        .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let paths = doc["paths"].as_object().expect("an OpenAPI document");
        for (template, item) in paths {
            if item.get("get").is_none() || !template.starts_with("/v1/") {
                continue;
            }
            let path = fill(template);
            let url = format!("https://{addr}{path}");
            let token = format!("X-Hivemind-Token: {narrow}");
            let out = curl(&[
                "--cacert",
                &ca_s,
                "-H",
                &token,
                "-w",
                "\n%{http_code}",
                &url,
            ])
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
            walked += 1;
            if status.starts_with('4') {
                // A refusal (it may name what was asked, nothing else).
                assert!(!body.contains(DB_PASSWORD), "{path}: {body}");
                continue;
            }
            for f in &forbidden {
                assert!(
                    !body.contains(f.as_str()),
                    "GET {path} on {addr} answered {f:?}: {body}"
                );
            }
        }
    }
    assert!(walked > 20, "only {walked} routes walked");

    // A token made with a TTL works, then is refused once expired.
    let brief = secret_of(&hm(
        &ca,
        &cp1,
        Some(&root),
        &[
            "acl", "token", "create", "--policy", "app-read", "--ttl", "3s", "--json",
        ],
    ));
    let out = hm(&ca, &cp1, Some(&brief), &["kv", "get", "app/x"]);
    assert_eq!(stdout(&out).trim(), "hello", "{}", stderr(&out));
    wait_for("an expired token refused", || async {
        let out = hm(&ca, &cp1, Some(&brief), &["kv", "get", "app/x"]);
        stderr(&out).contains("token_expired").then_some(())
    })
    .await;

    // The member says which trust it runs on.
    let out = hm(&ca, &web1, Some(&root), &["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["trust"], "tls+identity", "{status}");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A route template with sample values for its parameters.
fn fill(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        out.push_str(match &rest[open + 1..close] {
            "key" => "secret/db-password",
            "app" => "app",
            "tenant" => "t",
            "group" => "other",
            "node" => "cp1",
            "service" => "web",
            _ => "x",
        });
        rest = &rest[(close + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}
