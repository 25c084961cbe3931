//! The OpenAPI document against the running API: on a control-plane member and on a host, a
//! dns and a trigger member, every operation `GET /v1/openapi.json` lists is called, answers
//! with a status the document declares for it, and its JSON body validates against the declared
//! schema (JSON Schema 2020-12, which OpenAPI 3.1 uses). Every operation that declares query
//! parameters refuses an undeclared one with 400, as its schema says.

mod support;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

const PROBE_KEYGROUP: &str = "test/openapi/probe";

/// Fills a path template with values that exist in the test cluster.
fn concrete(path: &str) -> String {
    path.replace("{key}", "openapi/probe")
        .replace("{app}/{tenant}/{group}", PROBE_KEYGROUP)
        .replace("{node}", "web-1")
}

/// What to send to each operation: query string and body.
fn request_for(method: &Method, path: &str) -> (String, Option<Value>, Option<Vec<u8>>) {
    match (method.as_str(), path) {
        ("PUT", "/v1/kv/{key}") => (String::new(), None, Some(b"value".to_vec())),
        ("PUT", "/v1/keygroups/{app}/{tenant}/{group}") => (String::new(), Some(json!({})), None),
        ("PATCH", "/v1/keygroups/{app}/{tenant}/{group}") => {
            (String::new(), Some(json!({"ttl": 9})), None)
        }
        ("PUT", "/v1/roles/host/services") => (
            String::new(),
            Some(json!([{"name": "http", "port": 80, "proto": "tcp"}])),
            None,
        ),
        // A bad body: adding a voter needs another CP member; the 400 is declared too.
        ("POST", "/v1/cp/voters") => (String::new(), Some(json!({"addr": 7})), None),
        // A malformed id: removing a real voter would break the test cluster.
        ("DELETE", "/v1/cp/voters") => ("?id=zz".into(), None, None),
        ("POST", "/v1/cp/epoch") => (String::new(), Some(json!({"reason": "openapi test"})), None),
        ("GET", "/v1/events") | ("GET", "/v1/roles/trigger/events") => {
            ("?after=0".into(), None, None)
        }
        _ => (String::new(), None, None),
    }
}

/// Runs last (it changes the cluster for everyone) or not at all (it stops the member).
fn order(method: &Method, path: &str) -> u8 {
    match (method.as_str(), path) {
        ("POST", "/v1/cp/epoch") => 8,
        ("POST", "/v1/leave") => 9,
        (m, _) => match m {
            "PUT" => 0,
            "POST" => 1,
            "GET" => 2,
            "PATCH" => 3,
            _ => 4,
        },
    }
}

fn validate(doc: &Value, schema: &Value, body: &Value) -> Result<(), String> {
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
    });
    root["components"] = doc["components"].clone();
    jsonschema::draft202012::validate(&root, body).map_err(|e| e.to_string())
}

/// Validates `doc` with openapi-spec-validator (the OpenAPI 3.1 meta-schema plus the rules a
/// schema cannot express, e.g. unique operationIds): the check client generators rely on.
/// `.ci/run` installs it; elsewhere a missing validator skips the check.
fn validate_document(doc: &Value, member: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{member}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let output = match std::process::Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            return cannot_run(&format!(
                "openapi-spec-validator cannot run ({e}; pip install openapi-spec-validator)"
            ))
        }
    };
    assert!(
        output.status.success(),
        "{member}'s OpenAPI document is not valid:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Calls every operation of `agent`'s document but those in `skip` ("METHOD /path").
async fn check_member(agent: &Agent, skip: &BTreeSet<String>) -> BTreeSet<String> {
    let doc = get_json(&agent.url("/v1/openapi.json")).await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if skip.contains(&format!("{method} {path}")) {
                continue;
            }
            operations.push((order(&method, path), method, path.clone(), op.clone()));
        }
    }
    operations.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    let mut seen = BTreeSet::new();
    for (_, method, path, op) in operations {
        let (query, json_body, raw_body) = request_for(&method, &path);
        let url = agent.url(&format!("{}{query}", concrete(&path)));
        let mut request = client().request(method.clone(), &url);
        if let Some(body) = &json_body {
            request = request.json(body);
        }
        if let Some(body) = raw_body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16().to_string();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.unwrap();
        let what = format!("{method} {url} answered {status}: {text:.300}");
        let declared = &op["responses"][&status];
        assert!(declared.is_object(), "{what}: status not declared");
        if let Some(content) = declared["content"].as_object() {
            let (kind, media) = content
                .iter()
                .find(|(kind, _)| content_type.starts_with(kind.split(';').next().unwrap()))
                .unwrap_or_else(|| panic!("{what}: content type {content_type} not declared"));
            if kind == "application/json" && media["schema"].is_object() {
                let body: Value =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
                if let Err(e) = validate(&doc, &media["schema"], &body) {
                    panic!("{what}: does not match its schema: {e}");
                }
            }
        }
        // Declared query parameters only: an undeclared one is a 400 with the error body.
        let declares_query = op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        if declares_query && method == Method::GET {
            let sep = if query.is_empty() { "?" } else { "&" };
            let bogus = agent.url(&format!("{}{query}{sep}bogus=1", concrete(&path)));
            let response = client().get(&bogus).send().await.unwrap();
            assert_eq!(response.status(), 400, "{bogus}");
            let body: Value = response.json().await.unwrap();
            assert!(body["error"]["code"].is_string(), "{bogus}: {body}");
        }
        seen.insert(format!("{method} {path}"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_route_exists_and_answers_its_declared_shapes() {
    let mut cluster = Cluster::local_control_plane().await;
    let web1 = cluster.start_role_member("web-1", "host", &[]);
    let (ns, _) = cluster.start_dns_member("ns-1", &[]);
    let audit = cluster.start_role_member("audit-1", "trigger", &["--node", "audit"]);
    let vault = cluster.start_role_member("vault-1", "backup", &["--backup-space", "100MB"]);
    for i in [web1, ns, audit, vault] {
        wait_for("the member admitted", || async {
            let s = get_json(&cluster.agents[i].url("/v1/status")).await.ok()?;
            (s["admitted"] == true).then_some(())
        })
        .await;
    }
    // A key for the {key} routes.
    client()
        .put(cluster.agents[0].url("/v1/kv/openapi/probe"))
        .body("v")
        .send()
        .await
        .unwrap();

    // Each member's document is valid OpenAPI 3.1 (the CP member's and every role's routes).
    for agent in &cluster.agents {
        let doc = get_json(&agent.url("/v1/openapi.json")).await.unwrap();
        validate_document(&doc, &agent.name);
    }

    // The role members first (the CP member's epoch bump comes last); none of them leaves.
    // `acl bootstrap` would turn ACLs on for the rest of the run: tests/security.rs covers it.
    let bootstrap = "POST /v1/acl/bootstrap".to_string();
    let leave = BTreeSet::from(["POST /v1/leave".to_string(), bootstrap.clone()]);
    let mut seen = BTreeSet::new();
    for i in [web1, ns, audit, vault] {
        seen.extend(check_member(&cluster.agents[i], &leave).await);
    }
    // The CP member: every route, including the epoch bump; then one member leaves.
    seen.extend(check_member(&cluster.agents[0], &leave).await);
    let mut everything_else = seen.clone();
    everything_else.insert(bootstrap);
    seen.extend(check_member(&cluster.agents[web1], &everything_else).await);
    for must in [
        "GET /v1/status",
        "GET /v1/members",
        "POST /v1/leave",
        "GET /v1/kv/{key}",
        "PUT /v1/kv/{key}",
        "GET /v1/events",
        "POST /v1/cp/epoch",
        "PATCH /v1/keygroups/{app}/{tenant}/{group}",
        "GET /v1/responsibilities",
        "PUT /v1/roles/host/services",
        "GET /v1/roles/dns/status",
        "GET /v1/roles/trigger/events",
        "GET /v1/roles/backup/status",
        "POST /v1/roles/backup/check",
        "GET /v1/backup/spaces",
        "GET /v1/acl/policies",
        "POST /v1/acl/tokens",
        "DELETE /v1/acl/token/{accessor}",
        "GET /v1/openapi.json",
        "GET /metrics",
    ] {
        assert!(seen.contains(must), "{must} was not exercised: {seen:?}");
    }
}
