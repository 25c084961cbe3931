//! The lenient JSON reader of registrations (sans IO): an object's fields by key matched as
//! Consul matches them (case-insensitively, with or without `_` and `-`), taken one by one with
//! their types checked, so that what is left over is an unknown field. Every error names the
//! field by the caller's spelling (`Service.Check.Interval`, `services[0].checks[1].interval`).

use std::collections::BTreeMap;
use std::time::Duration;

use hivemind_common::duration;
use serde_json::Value;

/// The key as matched: lower case, without `_` and `-`.
fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A JSON object's fields by normalized key, taken one by one; what is left is unknown.
pub(super) struct Fields<'a> {
    path: String,
    map: BTreeMap<String, (&'a str, &'a Value)>,
}

impl<'a> Fields<'a> {
    pub(super) fn of(value: &'a Value, path: &str) -> Result<Self, String> {
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
    pub(super) fn take(&mut self, names: &[&str]) -> Option<(String, &'a Value)> {
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

    pub(super) fn string(&mut self, names: &[&str]) -> Result<Option<(String, String)>, String> {
        match self.take(names) {
            None => Ok(None),
            Some((field, Value::String(s))) => Ok(Some((field, s.clone()))),
            Some((field, _)) => Err(format!("{field}: must be a string")),
        }
    }

    pub(super) fn number(
        &mut self,
        names: &[&str],
        max: u64,
    ) -> Result<Option<(String, u64)>, String> {
        match self.take(names) {
            None => Ok(None),
            Some((field, value)) => match value.as_u64() {
                Some(n) if n <= max => Ok(Some((field, n))),
                _ => Err(format!("{field}: must be a whole number from 0 to {max}")),
            },
        }
    }

    pub(super) fn boolean(&mut self, names: &[&str]) -> Result<bool, String> {
        match self.take(names) {
            None => Ok(false),
            Some((_, Value::Bool(b))) => Ok(*b),
            Some((field, _)) => Err(format!("{field}: must be true or false")),
        }
    }

    /// A Go duration string, or a number of nanoseconds (Consul's JSON has both).
    pub(super) fn duration(
        &mut self,
        names: &[&str],
    ) -> Result<Option<(String, Duration)>, String> {
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

    pub(super) fn strings(&mut self, names: &[&str]) -> Result<Vec<String>, String> {
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
    pub(super) fn done(self) -> Result<(), String> {
        match self.map.into_values().next() {
            None => Ok(()),
            Some((key, _)) => Err(format!("{}.{key}: unknown field", self.path)),
        }
    }
}
