//! ACL policy rules (DESIGN.md §6e), sans IO: a policy's TOML rules parsed into [`Rules`], and
//! the one decision every route asks: may a token holding these policies do `access` on this
//! [`Resource`]?
//!
//! Rules: top-level `cp`, `events`, `backup`, `acl` = `"read" | "write" | "deny"`, and tables
//! `[kv]`, `[keygroup]`, `[roles]` mapping a prefix to an access. For a prefixed resource the
//! longest matching prefix wins; between policies the most specific rule wins, and at equal
//! length `deny` beats `write` beats `read`. What no rule names is denied. `write` implies
//! `read`.

use std::collections::BTreeMap;

/// An access level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Read,
    Write,
    Deny,
}

impl Access {
    fn parse(field: &str, text: &str) -> Result<Self, AclError> {
        match text {
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            "deny" => Ok(Access::Deny),
            other => Err(AclError::BadAccess {
                field: field.to_string(),
                value: other.to_string(),
            }),
        }
    }

    /// Whether a rule granting `self` lets a request needing `wanted` through.
    fn grants(self, wanted: Access) -> bool {
        match self {
            Access::Deny => false,
            Access::Write => true,
            Access::Read => wanted == Access::Read,
        }
    }
}

/// What a request touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource<'a> {
    Cp,
    Events,
    Backup,
    Acl,
    /// What only a management token (or the admin token) may do: the whole registry at once
    /// (`/v1/cp/snapshot`, as Consul's and etcd's snapshots). No rule grants it.
    Management,
    Kv(&'a str),
    /// Some KV keys, which the route checks one by one (a transaction, a lease's keys): at the
    /// door it needs a `[kv]` rule of that access on some prefix.
    KvKeys,
    Keygroup(&'a str),
    Role(&'a str),
}

/// Why a policy's rules are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("rules: not TOML: {0}")]
    NotToml(String),
    #[error(
        "rules: unknown rule kind {0:?} (use cp, events, backup, acl, [kv], [keygroup], [roles])"
    )]
    UnknownKind(String),
    #[error(
        "rules: {field}: {value:?} is not an access level (use \"read\", \"write\" or \"deny\")"
    )]
    BadAccess { field: String, value: String },
    #[error("rules: {0} must be a string")]
    NotAString(String),
    #[error("rules: [{0}] must be a table of prefix = access")]
    NotATable(String),
}

/// One policy's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    cp: Option<Access>,
    events: Option<Access>,
    backup: Option<Access>,
    acl: Option<Access>,
    kv: BTreeMap<String, Access>,
    keygroup: BTreeMap<String, Access>,
    roles: BTreeMap<String, Access>,
}

impl Rules {
    /// Parses a policy's TOML rules; unknown kinds and access levels are named.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| AclError::NotToml(e.message().to_string()))?;
        let mut rules = Rules::default();
        for (kind, value) in &table {
            let scalar = |v: &toml::Value| -> Result<Access, AclError> {
                let text = v
                    .as_str()
                    .ok_or_else(|| AclError::NotAString(kind.clone()))?;
                Access::parse(kind, text)
            };
            let prefixes = |v: &toml::Value| -> Result<BTreeMap<String, Access>, AclError> {
                let t = v
                    .as_table()
                    .ok_or_else(|| AclError::NotATable(kind.clone()))?;
                t.iter()
                    .map(|(prefix, access)| {
                        let field = format!("{kind}.{prefix:?}");
                        let text = access
                            .as_str()
                            .ok_or_else(|| AclError::NotAString(field.clone()))?;
                        Ok((prefix.clone(), Access::parse(&field, text)?))
                    })
                    .collect()
            };
            match kind.as_str() {
                "cp" => rules.cp = Some(scalar(value)?),
                "events" => rules.events = Some(scalar(value)?),
                "backup" => rules.backup = Some(scalar(value)?),
                "acl" => rules.acl = Some(scalar(value)?),
                "kv" => rules.kv = prefixes(value)?,
                "keygroup" => rules.keygroup = prefixes(value)?,
                "roles" => rules.roles = prefixes(value)?,
                other => return Err(AclError::UnknownKind(other.to_string())),
            }
        }
        Ok(rules)
    }

    /// The rule this policy has for `resource`: its access and how specific it is (the
    /// matching prefix's length; 0 for the top-level kinds).
    fn rule(&self, resource: &Resource<'_>) -> Option<(usize, Access)> {
        let longest = |map: &BTreeMap<String, Access>, name: &str| {
            map.iter()
                .filter(|(prefix, _)| name.starts_with(prefix.as_str()))
                .map(|(prefix, access)| (prefix.len(), *access))
                .max()
        };
        match resource {
            Resource::Cp => self.cp.map(|a| (0, a)),
            Resource::Events => self.events.map(|a| (0, a)),
            Resource::Backup => self.backup.map(|a| (0, a)),
            Resource::Acl => self.acl.map(|a| (0, a)),
            Resource::Management => None,
            Resource::Kv(key) => longest(&self.kv, key),
            Resource::KvKeys => self
                .kv
                .values()
                .filter(|a| **a != Access::Deny)
                .max()
                .map(|a| (0, *a)),
            Resource::Keygroup(name) => longest(&self.keygroup, name),
            Resource::Role(name) => longest(&self.roles, name),
        }
    }
}

/// Whether the policies together allow `wanted` on `resource`: the most specific rule of any
/// policy decides; at equal specificity deny beats write beats read; no rule denies.
pub fn allows<'a>(
    policies: impl IntoIterator<Item = &'a Rules>,
    resource: &Resource<'_>,
    wanted: Access,
) -> bool {
    policies
        .into_iter()
        .filter_map(|rules| rules.rule(resource))
        .max()
        .is_some_and(|(_, access)| access.grants(wanted))
}

#[cfg(test)]
#[path = "acl/tests.rs"]
mod tests;
