//! One check as registered (sans IO): its kind (`http`, `tcp` or `ttl`; Consul's other kinds
//! are refused by name), its timing with the defaults and bounds of DESIGN.md §6g, and Consul's
//! id and name defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use hivemind_common::duration;
use hivemind_common::records::Health;
use serde_json::Value;

use super::fields::Fields;
use super::{
    CheckDef, CheckKind, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, MAX_DURATION, MIN_INTERVAL, OUTPUT_MAX,
};

/// Check kinds Consul has and hivemind does not run.
const UNSUPPORTED_KINDS: &[&str] = &[
    "args",
    "scriptargs",
    "script",
    "dockercontainerid",
    "grpc",
    "grpcusetls",
    "h2ping",
    "h2pingusetls",
    "aliasnode",
    "aliasservice",
    "udp",
    "osservice",
    "shell",
];

/// An id a URL path can carry: 1-128 printable characters without spaces, `/`, `?`, `#`, `%`.
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '?' | '#' | '%' | '\\'))
}

/// Parses one check of the service `service_id` named `service_name`; `default_id` is used when
/// the check names none.
pub(super) fn parse_check(
    value: &Value,
    path: &str,
    default_id: String,
    service_name: &str,
) -> Result<CheckDef, String> {
    let mut f = Fields::of(value, path)?;
    for kind in UNSUPPORTED_KINDS {
        if let Some((field, _)) = f.take(&[kind]) {
            return Err(format!(
                "{field}: unsupported check kind (hivemind runs http, tcp and ttl checks)"
            ));
        }
    }
    let id = match f.string(&["checkid", "id"])? {
        Some((field, id)) if !valid_id(&id) => {
            return Err(format!(
                "{field}: {id:?} must be 1-128 characters without spaces, /, ?, # or %"
            ))
        }
        Some((_, id)) => id,
        None => default_id,
    };
    let name = f
        .string(&["name"])?
        .map_or_else(|| format!("Service '{service_name}' check"), |(_, n)| n);
    let notes = f.string(&["notes"])?.map_or_else(String::new, |(_, n)| n);
    let status = match f.string(&["status"])? {
        None => Health::Critical,
        Some((field, s)) => Health::parse(&s)
            .ok_or_else(|| format!("{field}: must be passing, warning or critical, not {s:?}"))?,
    };
    let http = f.string(&["http"])?;
    let tcp = f.string(&["tcp"])?;
    let ttl = f.duration(&["ttl"])?;
    let interval = f.duration(&["interval"])?;
    let timeout = f.duration(&["timeout"])?;
    let deregister = f.duration(&["deregistercriticalserviceafter", "deregistercriticalafter"])?;
    let method = f.string(&["method"])?;
    let header = f.take(&["header"]);
    let body = f.string(&["body"])?;
    let tls_skip_verify = f.boolean(&["tlsskipverify"])?;
    let success = f
        .number(&["successbeforepassing"], 1000)?
        .map_or(0, |(_, n)| n as u32);
    let failures = f
        .number(&["failuresbeforecritical"], 1000)?
        .map_or(0, |(_, n)| n as u32);
    if let Some((field, size)) = f.number(&["outputmaxsize"], u64::MAX)? {
        if size != 0 && size < OUTPUT_MAX as u64 {
            return Err(format!(
                "{field}: hivemind keeps {OUTPUT_MAX} bytes of output; give 0 or at least that"
            ));
        }
    }
    f.done()?;

    let at_least = |field: &str, d: Duration| {
        if d < MIN_INTERVAL || d > MAX_DURATION {
            Err(format!(
                "{field}: must be from 1s to 30 days, not {}",
                duration::format(d)
            ))
        } else {
            Ok(d)
        }
    };
    let http_only = [
        ("method", method.is_some()),
        ("header", header.is_some()),
        ("body", body.is_some()),
        ("tls_skip_verify", tls_skip_verify),
    ];
    let kinds = [http.is_some(), tcp.is_some(), ttl.is_some()];
    let kind = match (http, tcp, ttl) {
        _ if kinds.iter().filter(|k| **k).count() > 1 => {
            return Err(format!(
                "{path}: give one of http, tcp and ttl, not several"
            ))
        }
        (Some((field, url)), _, _) => {
            let (interval_field, interval) = interval.unwrap_or_else(default_interval);
            check_url(&field, &url)?;
            let method = match method {
                None => "GET".to_string(),
                Some((field, m)) => {
                    if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(format!("{field}: {m:?} is not an HTTP method like GET"));
                    }
                    m
                }
            };
            CheckKind::Http {
                url,
                method,
                header: header
                    .map(|(field, h)| parse_header(&field, h))
                    .transpose()?
                    .unwrap_or_default(),
                body: body.map_or_else(String::new, |(_, b)| b),
                tls_skip_verify,
                interval: at_least(&interval_field, interval)?,
            }
        }
        (None, Some((field, addr)), _) => {
            let (interval_field, interval) = interval.unwrap_or_else(default_interval);
            let port = addr.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty()).then_some(())?;
                port.parse::<u16>().ok().filter(|p| *p != 0)
            });
            if port.is_none() {
                return Err(format!("{field}: {addr:?} is not host:port"));
            }
            CheckKind::Tcp {
                addr,
                interval: at_least(&interval_field, interval)?,
            }
        }
        (None, None, Some((ttl_field, ttl))) => {
            if interval.is_some() {
                return Err(format!("{path}.interval: a ttl check takes no interval (the application reports within the ttl)"));
            }
            CheckKind::Ttl {
                ttl: at_least(&ttl_field, ttl)?,
            }
        }
        (None, None, None) => {
            return Err(format!("{path}: no check kind (give http, tcp or ttl)"));
        }
    };
    if !matches!(kind, CheckKind::Http { .. }) {
        if let Some((field, _)) = http_only.iter().find(|(_, given)| *given) {
            return Err(format!("{path}.{field}: only an http check takes it"));
        }
    }
    let timeout = match timeout {
        None => DEFAULT_TIMEOUT,
        Some((field, t)) if t < Duration::from_millis(1) || t > Duration::from_secs(300) => {
            return Err(format!("{field}: must be from 1ms to 5m"))
        }
        Some((_, t)) => t,
    };
    let deregister_critical_after = deregister
        .map(|(field, d)| at_least(&field, d))
        .transpose()?;
    Ok(CheckDef {
        id,
        name,
        kind,
        timeout,
        deregister_critical_after,
        success_before_passing: success,
        failures_before_critical: failures,
        notes,
        status,
    })
}

fn default_interval() -> (String, Duration) {
    ("interval".to_string(), DEFAULT_INTERVAL)
}

fn check_url(field: &str, url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{field}: {url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return Err(format!("{field}: {url:?} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{field}: {url:?} has spaces or control characters"));
    }
    Ok(())
}

/// Consul's `Header`: `{name: [values]}`; a single string value is taken as one value.
fn parse_header(field: &str, value: &Value) -> Result<BTreeMap<String, Vec<String>>, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "{field}: must be an object of header names to values"
        ));
    };
    let mut out = BTreeMap::new();
    for (name, values) in map {
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(format!("{field}.{name}: not a header name"));
        }
        let values = match values {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("{field}.{name}: values must be strings"))?,
            _ => return Err(format!("{field}.{name}: values must be strings")),
        };
        if values.iter().any(|v| v.chars().any(|c| c.is_control())) {
            return Err(format!(
                "{field}.{name}: values must not hold control characters"
            ));
        }
        out.insert(name.clone(), values);
    }
    Ok(out)
}
