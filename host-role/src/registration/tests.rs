use super::*;
use proptest::prelude::*;
use serde_json::json;

fn one(value: Value) -> Result<ServiceDef, String> {
    parse_service(&value, "Service")
}

#[test]
fn python_consuls_lowercase_body_registers_with_consuls_defaults() {
    // What python-consul 0.7 sends for register('api', port=8080, check=Check.http(url, '1s')).
    let s = one(json!({
        "name": "api", "port": 8080, "tags": ["v1"], "enabletagoverride": false,
        "check": {"http": "http://127.0.0.1:8080/health", "interval": "1s"}
    }))
    .unwrap();
    assert_eq!(
        (s.id.as_str(), s.proto.as_str(), s.port),
        ("api", "tcp", 8080)
    );
    let check = &s.checks[0];
    assert_eq!(check.id, "service:api");
    assert_eq!(check.name, "Service 'api' check");
    assert_eq!(
        check.status,
        Health::Critical,
        "a new check starts critical"
    );
    assert_eq!(check.timeout, DEFAULT_TIMEOUT);
    assert_eq!(
        check.kind,
        CheckKind::Http {
            url: "http://127.0.0.1:8080/health".into(),
            method: "GET".into(),
            header: BTreeMap::new(),
            body: String::new(),
            tls_skip_verify: false,
            interval: Duration::from_secs(1),
        }
    );
}

#[test]
fn consuls_capitalized_body_and_hivemind_snake_case_are_the_same_fields() {
    let consul = one(json!({
        "Name": "api", "ID": "api-1", "Port": 81, "Meta": {"env": "prod"}, "Address": "127.0.0.2",
        "Check": {"TTL": "15s", "DeregisterCriticalServiceAfter": "1m", "Status": "passing"},
        "Checks": [{"TCP": "127.0.0.1:81", "Interval": 2_000_000_000u64, "Timeout": "500ms",
                    "FailuresBeforeCritical": 3, "CheckID": "tcp-81"}]
    }))
    .unwrap();
    assert_eq!(consul.id, "api-1");
    assert_eq!(consul.address, Some("127.0.0.2".parse().unwrap()));
    assert_eq!(
        consul.checks[0].id, "service:api-1:1",
        "Check first, then Checks"
    );
    assert_eq!(consul.checks[0].status, Health::Passing);
    assert_eq!(
        consul.checks[0].deregister_critical_after,
        Some(Duration::from_secs(60))
    );
    assert_eq!(consul.checks[1].id, "tcp-81");
    assert_eq!(
        consul.checks[1].kind.interval(),
        Some(Duration::from_secs(2))
    );
    assert_eq!(consul.checks[1].failures_before_critical, 3);
    let snake = one(json!({
        "name": "api", "id": "api-1", "port": 81, "meta": {"env": "prod"}, "address": "127.0.0.2",
        "checks": [
            {"ttl": "15s", "deregister_critical_after": "1m", "status": "passing"},
            {"tcp": "127.0.0.1:81", "interval": "2s", "timeout": "500ms",
             "failures_before_critical": 3, "id": "tcp-81"}
        ]
    }))
    .unwrap();
    assert_eq!(snake, consul);
}

#[test]
fn http_and_tcp_checks_run_every_10s_unless_told() {
    let s = one(json!({"name": "a", "port": 1, "checks": [{"http": "http://x/"}, {"tcp": "x:1"}]}))
        .unwrap();
    assert_eq!(s.checks[0].kind.interval(), Some(DEFAULT_INTERVAL));
    assert_eq!(s.checks[1].kind.interval(), Some(Duration::from_secs(10)));
    let long = json!({"name": "a", "port": 1, "check": {"ttl": u64::MAX}});
    assert!(one(long)
        .unwrap_err()
        .contains("Service.check.ttl: must be from 1s to 30 days"));
}

#[test]
fn the_canonical_json_reads_back_to_the_same_definition() {
    let s = one(json!({
        "name": "web", "port": 443, "proto": "tcp", "tags": ["a"], "enabletagoverride": true,
        "checks": [
            {"http": "https://x:443/h", "method": "HEAD", "header": {"X-A": ["1", "2"]},
             "body": "q", "tls_skip_verify": true, "interval": "1500ms", "timeout": "1s",
             "success_before_passing": 2, "notes": "n"},
            {"ttl": "1m"}
        ]
    }))
    .unwrap();
    assert_eq!(parse_service(&s.to_json(), "s").unwrap(), s);
    let udp = one(json!({"name": "dns", "port": 53, "proto": "udp"})).unwrap();
    assert_eq!(udp.id, "dns:udp");
    assert_eq!(parse_service(&udp.to_json(), "s").unwrap(), udp);
}

#[test]
fn bad_checks_are_refused_naming_the_field() {
    let cases = [
        (
            json!({"name": "a", "port": 1, "check": {"args": ["/bin/true"], "interval": "1s"}}),
            "Service.check.args: unsupported check kind",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"interval": "1s"}}),
            "Service.check: no check kind",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"http": "http://x/", "interval": "500ms"}}),
            "Service.check.interval: must be from 1s to 30 days",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"http": "ftp://x/", "interval": "1s"}}),
            "Service.check.http: \"ftp://x/\" is not an http",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"http": "http:///", "interval": "1s"}}),
            "has no host",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"http": "http://x/", "interval": "ten"}}),
            "Service.check.interval: \"ten\"",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"ttl": "10s", "interval": "10s"}}),
            "a ttl check takes no interval",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"tcp": "nohost", "interval": "1s"}}),
            "Service.check.tcp: \"nohost\" is not host:port",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"ttl": "10s", "method": "GET"}}),
            "Service.check.method: only an http check",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"ttl": "10s", "status": "fine"}}),
            "Service.check.status: must be passing",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"ttl": "10s", "frobnicate": 1}}),
            "Service.check.frobnicate: unknown field",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"ttl": "10s", "http": "http://x/"}}),
            "not several",
        ),
        (
            json!({"name": "a", "port": 1, "check": {"ttl": "10s", "DeregisterCriticalServiceAfter": "10ms"}}),
            "Service.check.DeregisterCriticalServiceAfter: must be from 1s",
        ),
        (json!({"port": 1}), "Service.name: missing"),
        (json!({"name": "a b", "port": 1}), "not a DNS label"),
        (json!({"name": "a", "port": 0}), "Service.port"),
        (
            json!({"name": "a", "port": 1, "Address": "web.local"}),
            "Service.Address: \"web.local\" is not an IP",
        ),
        (json!({"name": "a", "port": 1, "id": "a/b"}), "Service.id"),
        (
            json!({"name": "a", "port": 1, "Weights": {}}),
            "Service.Weights: unknown field",
        ),
    ];
    for (body, want) in cases {
        let error = one(body.clone()).unwrap_err();
        assert!(error.contains(want), "{body}: {error}");
    }
}

#[test]
fn a_host_set_needs_unique_service_and_check_ids() {
    let ok = br#"[{"name":"http","port":80},{"name":"http","port":53,"proto":"udp"}]"#;
    assert_eq!(parse_services(ok).unwrap().len(), 2);
    let twice = br#"[{"name":"http","port":80},{"name":"http","port":81}]"#;
    assert!(parse_services(twice)
        .unwrap_err()
        .contains("services[1].id: \"http\" is listed twice"));
    let checks = br#"[{"name":"a","port":80,"check":{"ttl":"5s","id":"c"}},{"name":"b","port":81,"check":{"ttl":"5s","id":"c"}}]"#;
    assert!(parse_services(checks)
        .unwrap_err()
        .contains("services[1].checks[0].id"));
    assert!(parse_services(b"{}").unwrap_err().contains("list"));
    assert!(parse_services(b"[1]")
        .unwrap_err()
        .starts_with("services[0]: must be an object"));
}

#[test]
fn the_wire_form_carries_the_checks_statuses() {
    let s = one(json!({"name": "a", "port": 1, "checks": [{"ttl": "5s"}, {"ttl": "5s", "status": "warning"}]}))
        .unwrap();
    let mut statuses = BTreeMap::new();
    statuses.insert(
        "service:a:1".to_string(),
        CheckStatus {
            id: "service:a:1".into(),
            name: "x".into(),
            status: Health::Passing,
            output: "ok".into(),
        },
    );
    let wire = s.wire(&statuses);
    assert_eq!(wire.checks[0].status, Health::Passing);
    assert_eq!(
        wire.checks[1].status,
        Health::Warning,
        "not yet run: its starting status"
    );
    assert!(wire.serves());
}

proptest! {
    /// Whatever JSON arrives, parsing answers (never panics), and what parses round-trips.
    #[test]
    fn any_service_body_parses_or_is_refused(
        name in "[a-z]{1,8}", port in 0u32..70000, interval in 0u64..5_000_000_000,
        kind in 0u8..4, status in "[a-z]{0,9}",
    ) {
        let check = match kind {
            0 => json!({"http": format!("http://{name}/"), "interval": interval}),
            1 => json!({"tcp": format!("{name}:{port}"), "interval": interval}),
            2 => json!({"ttl": interval, "status": status}),
            _ => json!({"grpc": name}),
        };
        let body = json!({"name": name, "port": port, "check": check});
        if let Ok(s) = parse_service(&body, "s") {
            prop_assert_eq!(parse_service(&s.to_json(), "s").unwrap(), s);
        }
    }
}

#[test]
fn names_and_tags_that_break_a_dns_label_or_an_nginx_config_are_refused_by_field() {
    for bad in ["web.x", "a b", "-x", "web;", &"a".repeat(63)] {
        let body = json!([{"name": "http", "port": 80}, {"name": bad, "port": 81}]);
        let e = parse_services(body.to_string().as_bytes()).unwrap_err();
        assert!(e.starts_with("services[1].name:"), "{bad}: {e}");
    }
    assert!(one(json!({"name": "web_api-2", "port": 80})).is_ok());
    for bad in ["", "a b", "x;y", "x}", "\"q\"", "$host", &"t".repeat(129)] {
        let e = one(json!({"name": "http", "port": 80, "tags": ["fine=1", bad]})).unwrap_err();
        assert!(e.starts_with("Service.tags[1]:"), "{bad:?}: {e}");
    }
    assert!(one(
        json!({"name": "http", "port": 80, "tags": ["v1.2", "env=prod", "path=/metrics"]})
    )
    .is_ok());
}
