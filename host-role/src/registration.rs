//! What a host is asked to publish (sans IO): its services and their health checks
//! (DESIGN.md §6g), as `PUT /v1/roles/host/services` and Consul's agent API register them.
//!
//! Both take the same fields. Keys match case-insensitively and with or without underscores, as
//! Consul matches them: Consul's `DeregisterCriticalServiceAfter`, python-consul's `http` and
//! hivemind's `deregister_critical_after` are one field. Durations are Go's (`10s`, `1m30s`) or
//! Consul's nanoseconds. Defaults are Consul's: a service's id is its name; a check without an id
//! is `service:<id>` (`service:<id>:<n>` when the service has several), named
//! `Service '<name>' check`, and starts critical unless `status` says otherwise. Every error
//! names the field; what [`parse_services`] refuses changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use hivemind_common::duration;
use hivemind_common::names::is_valid_name;
use hivemind_common::records::{CheckStatus, Health, Service};
use serde_json::Value;

/// Services one host may publish, and checks one service may carry: they bound the record
/// (with [`RECORD_OUTPUT`]) below the stream's frame limit.
pub const MAX_SERVICES: usize = 512;
pub const MAX_CHECKS: usize = 8;
/// A check's output as the agent API shows it (Consul's `OutputMaxSize` default).
pub const OUTPUT_MAX: usize = 4096;
/// A check's output as the host record carries it to every consumer.
pub const RECORD_OUTPUT: usize = 512;
/// The shortest interval, TTL and `deregister_critical_after` (Consul raises shorter intervals
/// to 1 s; here they are refused, so what runs is what was asked).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval, TTL and `deregister_critical_after`.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// An HTTP or TCP check's interval unless given (DESIGN.md §6g).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// A check's timeout unless given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// One registered service instance and its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDef {
    /// Unique on this host: the name unless given (`<name>:udp` for a UDP service).
    pub id: String,
    pub name: String,
    pub port: u16,
    pub proto: String,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub address: Option<IpAddr>,
    pub enable_tag_override: bool,
    pub checks: Vec<CheckDef>,
}

/// One health check of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckDef {
    pub id: String,
    pub name: String,
    pub kind: CheckKind,
    pub timeout: Duration,
    pub deregister_critical_after: Option<Duration>,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    pub notes: String,
    /// The status it starts with.
    pub status: Health,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// An HTTP request every `interval`: 2xx passing, 429 warning, anything else critical.
    Http {
        url: String,
        method: String,
        header: BTreeMap<String, Vec<String>>,
        body: String,
        tls_skip_verify: bool,
        interval: Duration,
    },
    /// A TCP connect to `addr` (`host:port`) every `interval`.
    Tcp { addr: String, interval: Duration },
    /// Critical unless the application reports within `ttl`.
    Ttl { ttl: Duration },
}

impl CheckKind {
    /// Consul's `Type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Tcp { .. } => "tcp",
            Self::Ttl { .. } => "ttl",
        }
    }

    /// How often the host runs it (`None` for a TTL check, which the application drives).
    pub fn interval(&self) -> Option<Duration> {
        match self {
            Self::Http { interval, .. } | Self::Tcp { interval, .. } => Some(*interval),
            Self::Ttl { .. } => None,
        }
    }
}

/// The key as matched: lower case, without `_` and `-`.
fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A JSON object's fields by normalized key, taken one by one; what is left is unknown.
struct Fields<'a> {
    path: String,
    map: BTreeMap<String, (&'a str, &'a Value)>,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, path: &str) -> Result<Self, String> {
        let Value::Object(object) = value else {
            return Err(format!("{path}: must be an object"));
        };
        let mut map = BTreeMap::new();
        for (key, value) in object {
            if map.insert(normalize(key), (key.as_str(), value)).is_some() {
                return Err(format!("{path}.{key}: given twice"));
            }
        }
        Ok(Self {
            path: path.to_string(),
            map,
        })
    }

    /// The first of `names` present (null counts as absent), with its field path.
    fn take(&mut self, names: &[&str]) -> Option<(String, &'a Value)> {
        let mut found = None;
        for name in names {
            if let Some((key, value)) = self.map.remove(*name) {
                if found.is_none() && !value.is_null() {
                    found = Some((format!("{}.{key}", self.path), value));
                }
            }
        }
        found
    }

    fn string(&mut self, names: &[&str]) -> Result<Option<(String, String)>, String> {
        match self.take(names) {
            None => Ok(None),
            Some((field, Value::String(s))) => Ok(Some((field, s.clone()))),
            Some((field, _)) => Err(format!("{field}: must be a string")),
        }
    }

    fn number(&mut self, names: &[&str], max: u64) -> Result<Option<(String, u64)>, String> {
        match self.take(names) {
            None => Ok(None),
            Some((field, value)) => match value.as_u64() {
                Some(n) if n <= max => Ok(Some((field, n))),
                _ => Err(format!("{field}: must be a whole number from 0 to {max}")),
            },
        }
    }

    fn boolean(&mut self, names: &[&str]) -> Result<bool, String> {
        match self.take(names) {
            None => Ok(false),
            Some((_, Value::Bool(b))) => Ok(*b),
            Some((field, _)) => Err(format!("{field}: must be true or false")),
        }
    }

    /// A Go duration string, or a number of nanoseconds (Consul's JSON has both).
    fn duration(&mut self, names: &[&str]) -> Result<Option<(String, Duration)>, String> {
        match self.take(names) {
            None => Ok(None),
            Some((field, Value::String(s))) => duration::parse_go(s)
                .map(|d| Some((field.clone(), d)))
                .map_err(|e| format!("{field}: {e}")),
            Some((field, value)) => match value.as_u64() {
                Some(nanos) => Ok(Some((field, Duration::from_nanos(nanos)))),
                None => Err(format!("{field}: must be a duration like \"10s\"")),
            },
        }
    }

    fn strings(&mut self, names: &[&str]) -> Result<Vec<String>, String> {
        match self.take(names) {
            None => Ok(Vec::new()),
            Some((field, Value::Array(items))) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(format!("{field}[{i}]: must be a string")),
                })
                .collect(),
            Some((field, _)) => Err(format!("{field}: must be a list of strings")),
        }
    }

    /// Refuses what is left: a field this API does not know.
    fn done(self) -> Result<(), String> {
        match self.map.into_values().next() {
            None => Ok(()),
            Some((key, _)) => Err(format!("{}.{key}: unknown field", self.path)),
        }
    }
}

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
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '?' | '#' | '%' | '\\'))
}

/// Parses one check of the service `service_id` named `service_name`; `default_id` is used when
/// the check names none.
fn parse_check(
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

/// Parses one service (`path` names it in errors); `proto` defaults to tcp.
pub fn parse_service(value: &Value, path: &str) -> Result<ServiceDef, String> {
    let mut f = Fields::of(value, path)?;
    let (name_field, name) = f
        .string(&["name", "service"])?
        .ok_or_else(|| format!("{path}.name: missing (a service needs a name)"))?;
    let label = name.len() <= 62
        && is_valid_name(&name)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !label {
        return Err(format!(
            "{name_field}: {name:?} is not a DNS label (letters, digits, - and _, at most 62)"
        ));
    }
    let proto = match f.string(&["proto"])? {
        None => "tcp".to_string(),
        Some((_, p)) if p == "tcp" || p == "udp" => p,
        Some((field, p)) => return Err(format!("{field}: must be tcp or udp, not {p:?}")),
    };
    let id = match f.string(&["id"])? {
        Some((field, id)) if !valid_id(&id) => {
            return Err(format!(
                "{field}: {id:?} must be 1-128 characters without spaces, /, ?, # or %"
            ))
        }
        Some((_, id)) => id,
        None if proto == "udp" => format!("{name}:udp"),
        None => name.clone(),
    };
    let port = match f.number(&["port"], u16::MAX as u64)? {
        Some((_, p)) if p != 0 => p as u16,
        _ => return Err(format!("{path}.port: must be 1 to 65535")),
    };
    let tags = f.strings(&["tags"])?;
    for (t, tag) in tags.iter().enumerate() {
        let safe = !tag.is_empty()
            && tag.len() <= 128
            && tag.chars().all(|c| {
                c.is_ascii_graphic()
                    && !matches!(c, '"' | '\'' | ';' | '{' | '}' | '#' | '$' | '\\')
            });
        if !safe {
            return Err(format!(
                "{path}.tags[{t}]: {tag:?} must be 1-128 printable characters without spaces, quotes or ;{{}}#$\\"
            ));
        }
    }
    let meta = match f.take(&["meta"]) {
        None => BTreeMap::new(),
        Some((field, value)) => parse_meta(&field, value)?,
    };
    let address = match f.string(&["address"])? {
        None => None,
        Some((_, a)) if a.is_empty() => None,
        Some((field, a)) => Some(
            a.parse::<IpAddr>()
                .map_err(|_| format!("{field}: {a:?} is not an IP address"))?,
        ),
    };
    let enable_tag_override = f.boolean(&["enabletagoverride"])?;
    let one = f.take(&["check"]);
    let many = match f.take(&["checks"]) {
        None => Vec::new(),
        Some((field, Value::Array(items))) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{field}[{i}]"), v))
            .collect(),
        Some((field, _)) => return Err(format!("{field}: must be a list of checks")),
    };
    f.done()?;
    let all: Vec<(String, &Value)> = one.into_iter().chain(many).collect();
    if all.len() > MAX_CHECKS {
        return Err(format!(
            "{path}.checks: at most {MAX_CHECKS} checks per service"
        ));
    }
    let several = all.len() > 1;
    let checks = all
        .iter()
        .enumerate()
        .map(|(i, (field, value))| {
            let default = if several {
                format!("service:{id}:{}", i + 1)
            } else {
                format!("service:{id}")
            };
            parse_check(value, field, default, &name)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ServiceDef {
        id,
        name,
        port,
        proto,
        tags,
        meta,
        address,
        enable_tag_override,
        checks,
    })
}

/// Consul's `Meta`: at most 64 pairs, keys of letters, digits, `-` and `_` up to 128, values up
/// to 512 characters.
fn parse_meta(field: &str, value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err(format!("{field}: must be an object of strings"));
    };
    if map.len() > 64 {
        return Err(format!("{field}: at most 64 keys"));
    }
    map.iter()
        .map(|(k, v)| {
            let key_ok = !k.is_empty()
                && k.len() <= 128
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
            if !key_ok {
                return Err(format!(
                    "{field}.{k}: keys are 1-128 letters, digits, - or _"
                ));
            }
            match v {
                Value::String(s) if s.len() <= 512 => Ok((k.clone(), s.clone())),
                _ => Err(format!(
                    "{field}.{k}: must be a string of at most 512 characters"
                )),
            }
        })
        .collect()
}

/// Parses the body of `PUT /v1/roles/host/services` (a list) and checks the whole set.
pub fn parse_services(body: &[u8]) -> Result<Vec<ServiceDef>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    let Value::Array(items) = value else {
        return Err("body: must be a list of services".into());
    };
    let services = items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_service(v, &format!("services[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    validate_set(&services)?;
    Ok(services)
}

/// What must hold across a host's services: at most [`MAX_SERVICES`], ids unique, check ids
/// unique on the host.
pub fn validate_set(services: &[ServiceDef]) -> Result<(), String> {
    if services.len() > MAX_SERVICES {
        return Err(format!("services: at most {MAX_SERVICES} per host"));
    }
    let mut ids = BTreeSet::new();
    let mut check_ids = BTreeSet::new();
    for (i, s) in services.iter().enumerate() {
        if !ids.insert(s.id.as_str()) {
            return Err(format!(
                "services[{i}].id: {:?} is listed twice (give each instance its own id)",
                s.id
            ));
        }
        for (c, check) in s.checks.iter().enumerate() {
            if !check_ids.insert(check.id.as_str()) {
                return Err(format!(
                    "services[{i}].checks[{c}].id: check {:?} is listed twice",
                    check.id
                ));
            }
        }
    }
    Ok(())
}

impl ServiceDef {
    /// The service as the host record carries it, with its checks' `statuses` (by check id;
    /// a check without one shows its starting status).
    pub fn wire(&self, statuses: &BTreeMap<String, CheckStatus>) -> Service {
        Service {
            name: self.name.clone(),
            port: self.port,
            proto: self.proto.clone(),
            tags: self.tags.clone(),
            id: self.id.clone(),
            meta: self.meta.clone(),
            address: self.address,
            checks: self
                .checks
                .iter()
                .map(|c| {
                    statuses.get(&c.id).cloned().unwrap_or_else(|| CheckStatus {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        status: c.status,
                        output: String::new(),
                    })
                })
                .collect(),
        }
    }

    /// The canonical JSON: what `GET /v1/roles/host/services` answers and the store keeps;
    /// [`parse_service`] reads it back to the same definition.
    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self.checks.iter().map(CheckDef::to_json).collect();
        let mut out = serde_json::json!({
            "id": self.id,
            "name": self.name,
            "port": self.port,
            "proto": self.proto,
            "tags": self.tags,
            "meta": self.meta,
            "checks": checks,
        });
        if let Some(address) = self.address {
            out["address"] = address.to_string().into();
        }
        if self.enable_tag_override {
            out["enable_tag_override"] = true.into();
        }
        out
    }
}

impl CheckDef {
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::json!({
            "id": self.id,
            "name": self.name,
            "status": self.status.as_str(),
            "timeout": duration::format(self.timeout),
        });
        match &self.kind {
            CheckKind::Http {
                url,
                method,
                header,
                body,
                tls_skip_verify,
                interval,
            } => {
                out["http"] = url.as_str().into();
                out["method"] = method.as_str().into();
                out["interval"] = duration::format(*interval).into();
                if !header.is_empty() {
                    out["header"] = serde_json::json!(header);
                }
                if !body.is_empty() {
                    out["body"] = body.as_str().into();
                }
                if *tls_skip_verify {
                    out["tls_skip_verify"] = true.into();
                }
            }
            CheckKind::Tcp { addr, interval } => {
                out["tcp"] = addr.as_str().into();
                out["interval"] = duration::format(*interval).into();
            }
            CheckKind::Ttl { ttl } => out["ttl"] = duration::format(*ttl).into(),
        }
        if let Some(d) = self.deregister_critical_after {
            out["deregister_critical_after"] = duration::format(d).into();
        }
        if self.success_before_passing > 0 {
            out["success_before_passing"] = self.success_before_passing.into();
        }
        if self.failures_before_critical > 0 {
            out["failures_before_critical"] = self.failures_before_critical.into();
        }
        if !self.notes.is_empty() {
            out["notes"] = self.notes.as_str().into();
        }
        out
    }
}

#[cfg(test)]
#[path = "registration/tests.rs"]
mod tests;
