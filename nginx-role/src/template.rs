//! Rendering the nginx configuration from the services (sans IO): the built-in template or the
//! user's own (`--nginx-template`), through minijinja. A template error names its line and is
//! never applied.

use minijinja::{context, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::model::ServiceModel;

/// The built-in template: an `http`-level include with one `upstream` per (keygroup, service)
/// and one `server` per service on `listen`, routing `Host: <service>.<domain>` and
/// `<service>.<group>.<tenant>.<app>` to it; any other host name gets 404.
pub const BUILT_IN: &str = r#"# Rendered by hivemind's nginx role from the live hosts' services; do not edit.
{%- for s in services %}

upstream {{ s.upstream }} {
{%- for e in s.endpoints %}
    server {{ e.socket }};  # {{ e.host }}
{%- endfor %}
    keepalive 16;
}
{%- endfor %}

server {
    listen {{ listen }} default_server;
    server_name _;
    return 404;
}
{%- for s in services %}

server {
    listen {{ listen }};
    server_name {{ s.name }}.{{ domain }} {{ s.name }}.{{ s.keygroup_host }};
    location / {
        proxy_pass http://{{ s.upstream }};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
}
{%- endfor %}
"#;

/// A service as a template sees it: the model plus the names nginx routes by.
#[derive(Debug, Serialize)]
struct TemplateService<'a> {
    #[serde(flatten)]
    service: &'a ServiceModel,
    /// `<group>.<tenant>.<app>` of its keygroup.
    keygroup_host: String,
    endpoints: Vec<TemplateEndpoint<'a>>,
}

#[derive(Debug, Serialize)]
struct TemplateEndpoint<'a> {
    host: &'a str,
    addr: &'a str,
    port: u16,
    /// `addr:port`, with an IPv6 address in brackets.
    socket: String,
}

/// Why a template cannot render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Renders `template` over `services`, answering on `listen` for `domain` (without its final
/// dot). Errors name the template's line.
pub fn render(
    template: &str,
    services: &[ServiceModel],
    listen: &str,
    domain: &str,
) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    // A misspelt variable is an error, not an empty string in a config.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_template("template", template).map_err(describe)?;
    let services: Vec<TemplateService> = services
        .iter()
        .map(|s| TemplateService {
            keygroup_host: s.keygroup.rsplit('/').collect::<Vec<_>>().join("."),
            endpoints: s
                .endpoints
                .iter()
                .map(|e| TemplateEndpoint {
                    host: &e.host,
                    addr: &e.addr,
                    port: e.port,
                    socket: match e.addr.parse::<std::net::IpAddr>() {
                        Ok(ip) => std::net::SocketAddr::new(ip, e.port).to_string(),
                        Err(_) => format!("{}:{}", e.addr, e.port),
                    },
                })
                .collect(),
            service: s,
        })
        .collect();
    let domain = domain.trim_end_matches('.');
    env.get_template("template")
        .and_then(|t| t.render(context! { services, listen, domain }))
        .map_err(describe)
}

fn describe(e: minijinja::Error) -> TemplateError {
    let detail = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string());
    TemplateError(match e.line() {
        Some(line) => format!("template line {line}: {} ({detail})", e.kind()),
        None => format!("template: {} ({detail})", e.kind()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Endpoint;

    fn web() -> ServiceModel {
        ServiceModel {
            name: "web".into(),
            keygroup: "shop/eu/hosts".into(),
            upstream: "shop_eu_hosts__web".into(),
            tags: vec![],
            endpoints: vec![
                Endpoint {
                    host: "web-1".into(),
                    addr: "10.0.0.1".into(),
                    port: 8080,
                },
                Endpoint {
                    host: "web-2".into(),
                    addr: "fd00::2".into(),
                    port: 8080,
                },
            ],
        }
    }

    #[test]
    fn the_built_in_template_routes_each_service_by_host_name() {
        let text = render(BUILT_IN, &[web()], "127.0.0.1:8080", "hivemind.").unwrap();
        assert!(text.contains("upstream shop_eu_hosts__web {"), "{text}");
        assert!(text.contains("server 10.0.0.1:8080;  # web-1"), "{text}");
        assert!(text.contains("server [fd00::2]:8080;  # web-2"), "{text}");
        assert!(
            text.contains("server_name web.hivemind web.hosts.eu.shop;"),
            "{text}"
        );
        assert!(
            text.contains("proxy_pass http://shop_eu_hosts__web;"),
            "{text}"
        );
        assert!(
            text.contains("listen 127.0.0.1:8080 default_server;"),
            "{text}"
        );
    }

    #[test]
    fn the_same_services_render_the_same_text() {
        let a = render(BUILT_IN, &[web()], "127.0.0.1:8080", "hivemind.").unwrap();
        let b = render(BUILT_IN, &[web()], "127.0.0.1:8080", "hivemind.").unwrap();
        assert_eq!(a, b);
        let none = render(BUILT_IN, &[], "127.0.0.1:8080", "hivemind.").unwrap();
        assert!(!none.contains("upstream"), "{none}");
    }

    #[test]
    fn a_template_error_names_its_line() {
        let broken = "# ok\n# ok\n{% for s in services %}\n{{ s.nope }}\n{% endfor %}\n";
        let e = render(broken, &[web()], "x", "hivemind.").unwrap_err();
        assert!(e.0.starts_with("template line 4:"), "{e}");
        let syntax = "line one\n{% for s in %}\n";
        let e = render(syntax, &[], "x", "hivemind.").unwrap_err();
        assert!(e.0.starts_with("template line 2:"), "{e}");
    }
}
