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
//!
//! Layout: this file has the definitions, a service's fields and the rules across a host's
//! services; `fields.rs` the lenient JSON reader; `check.rs` one check's fields.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use hivemind_common::duration;
use hivemind_common::names::is_valid_name;
use hivemind_common::records::{CheckStatus, Health, Service};
use serde_json::Value;

mod check;
mod fields;

use check::{parse_check, valid_id};
use fields::Fields;

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
