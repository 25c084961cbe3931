//! The services this host publishes and its checks' states (sans IO): registration by the whole
//! list or one service at a time (Consul's agent API), the verdicts of runs and of applications
//! (TTL reports), TTL expiry and the reaping of services critical too long, and the services as
//! the host record carries them.

use std::collections::BTreeMap;
use std::time::Instant;

use hivemind_common::records::{CheckStatus, Health, Service};

use crate::health::{CheckState, Saved};
use crate::registration::{validate_set, CheckDef, CheckKind, ServiceDef};

/// The host's registered services and the states of their checks (by check id).
#[derive(Debug, Default)]
pub struct Services {
    defs: Vec<ServiceDef>,
    states: BTreeMap<String, CheckState>,
}

/// Why an application's report was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("id: no check {0:?} on this host")]
    Unknown(String),
    #[error("id: check {0:?} is not a ttl check (the host runs it itself)")]
    NotTtl(String),
}

/// What a tick changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// A status changed (the record must be republished).
    pub changed: bool,
    /// Services deregistered because a check stayed critical past its
    /// `deregister_critical_after`.
    pub reaped: Vec<String>,
}

impl Services {
    /// The services `defs` (already validated as a set) at `now`.
    pub fn new(defs: Vec<ServiceDef>, now: Instant) -> Self {
        let mut services = Self::default();
        services.replace(defs, now);
        services
    }

    pub fn defs(&self) -> &[ServiceDef] {
        &self.defs
    }

    /// Replaces every service; a check whose id stays keeps its state.
    pub fn replace(&mut self, defs: Vec<ServiceDef>, now: Instant) {
        let mut states = BTreeMap::new();
        for check in defs.iter().flat_map(|s| &s.checks) {
            let state = CheckState::new(check, now, self.states.get(&check.id));
            states.insert(check.id.clone(), state);
        }
        self.defs = defs;
        self.states = states;
    }

    /// Every check's status, to keep across a restart.
    pub fn saved(&self) -> BTreeMap<String, Saved> {
        self.states
            .iter()
            .map(|(id, state)| (id.clone(), state.saved()))
            .collect()
    }

    /// Starts each check from what was `saved` before a restart (ids no longer registered are
    /// ignored).
    pub fn restore(&mut self, saved: BTreeMap<String, Saved>, now: Instant) {
        for (id, saved) in saved {
            if let Some(state) = self.states.get_mut(&id) {
                state.restore(saved, now);
            }
        }
    }

    /// The list with `def` registered: replacing the service of the same id, else added.
    /// `Err` names what the whole set would break (a check id used by another service).
    pub fn with_registered(&self, def: ServiceDef) -> Result<Vec<ServiceDef>, String> {
        let mut defs = self.defs.clone();
        match defs.iter_mut().find(|s| s.id == def.id) {
            Some(slot) => *slot = def,
            None => defs.push(def),
        }
        validate_set(&defs)?;
        Ok(defs)
    }

    /// The list without the service `id`; `None` if there is no such service.
    pub fn without(&self, id: &str) -> Option<Vec<ServiceDef>> {
        let before = self.defs.len();
        let defs: Vec<ServiceDef> = self.defs.iter().filter(|s| s.id != id).cloned().collect();
        (defs.len() != before).then_some(defs)
    }

    fn check(&self, id: &str) -> Option<&CheckDef> {
        self.defs
            .iter()
            .flat_map(|s| &s.checks)
            .find(|c| c.id == id)
    }

    /// A run's verdict on check `id` (ignored if the check is gone: a run that raced its
    /// removal); answers whether a status changed.
    pub fn observe(&mut self, id: &str, result: Health, output: String, now: Instant) -> bool {
        let Some(def) = self.check(id).cloned() else {
            return false;
        };
        self.states
            .get_mut(id)
            .is_some_and(|s| s.observe(&def, result, output, now))
    }

    /// An application's report on TTL check `id`.
    pub fn report(
        &mut self,
        id: &str,
        status: Health,
        note: String,
        now: Instant,
    ) -> Result<bool, ReportError> {
        let def = self
            .check(id)
            .cloned()
            .ok_or_else(|| ReportError::Unknown(id.to_string()))?;
        if !matches!(def.kind, CheckKind::Ttl { .. }) {
            return Err(ReportError::NotTtl(id.to_string()));
        }
        Ok(self
            .states
            .get_mut(id)
            .is_some_and(|s| s.report(&def, status, note, now)))
    }

    /// Expires TTL checks not reported in time and finds the services to reap; the caller
    /// removes those (through [`Self::without`], persisting the list).
    pub fn tick(&mut self, now: Instant) -> Tick {
        let mut tick = Tick::default();
        for service in &self.defs {
            let mut reap = false;
            for check in &service.checks {
                if let Some(state) = self.states.get_mut(&check.id) {
                    tick.changed |= state.expire(check, now);
                    reap |= state.reap_due(check, now);
                }
            }
            if reap {
                tick.reaped.push(service.id.clone());
            }
        }
        tick
    }

    /// The services as the host record carries them.
    pub fn wire(&self) -> Vec<Service> {
        let statuses: BTreeMap<String, CheckStatus> = self
            .defs
            .iter()
            .flat_map(|s| &s.checks)
            .filter_map(|c| Some((c.id.clone(), self.states.get(&c.id)?.wire(c))))
            .collect();
        self.defs.iter().map(|s| s.wire(&statuses)).collect()
    }

    /// Every check with its service and state, for the agent API and the metrics.
    pub fn checks(&self) -> impl Iterator<Item = (&ServiceDef, &CheckDef, &CheckState)> {
        self.defs.iter().flat_map(move |s| {
            s.checks
                .iter()
                .filter_map(move |c| Some((s, c, self.states.get(&c.id)?)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::parse_service;
    use serde_json::json;
    use std::time::Duration;

    fn service(value: serde_json::Value) -> ServiceDef {
        parse_service(&value, "s").unwrap()
    }

    #[test]
    fn a_critical_service_leaves_the_routable_set_and_comes_back() {
        let t0 = Instant::now();
        let api = service(
            json!({"name": "api", "port": 80, "check": {"http": "http://x/", "interval": "1s"}}),
        );
        let plain = service(json!({"name": "web", "port": 81}));
        let mut s = Services::new(vec![api, plain], t0);
        let serving = |s: &Services| -> Vec<String> {
            s.wire()
                .into_iter()
                .filter(|w| w.serves())
                .map(|w| w.name)
                .collect()
        };
        assert_eq!(serving(&s), ["web"], "a new check starts critical");
        assert!(s.observe("service:api", Health::Passing, "200".into(), t0));
        assert_eq!(serving(&s), ["api", "web"]);
        assert!(s.observe("service:api", Health::Critical, "refused".into(), t0));
        assert_eq!(serving(&s), ["web"]);
        assert!(!s.observe("gone", Health::Passing, String::new(), t0));
    }

    #[test]
    fn registering_one_service_replaces_by_id_and_keeps_check_states() {
        let t0 = Instant::now();
        let ttl = json!({"ttl": "10s"});
        let mut s = Services::new(
            vec![service(json!({"name": "a", "port": 1, "check": ttl}))],
            t0,
        );
        assert_eq!(
            s.report("service:a", Health::Passing, "up".into(), t0),
            Ok(true)
        );
        let again = service(json!({"name": "a", "port": 2, "check": ttl}));
        let defs = s.with_registered(again).unwrap();
        s.replace(defs, t0);
        assert_eq!(s.wire()[0].port, 2);
        assert_eq!(
            s.wire()[0].checks[0].status,
            Health::Passing,
            "kept across re-registration"
        );
        let clash =
            service(json!({"name": "b", "port": 3, "check": {"ttl": "5s", "id": "service:a"}}));
        assert!(s
            .with_registered(clash)
            .unwrap_err()
            .contains("listed twice"));
        assert_eq!(s.without("nope"), None);
        assert_eq!(s.without("a").unwrap(), vec![]);
    }

    #[test]
    fn saved_statuses_restore_after_a_restart() {
        let t0 = Instant::now();
        let def =
            service(json!({"name": "a", "port": 1, "check": {"tcp": "x:1", "interval": "1s"}}));
        let mut before = Services::new(vec![def.clone()], t0);
        before.observe("service:a", Health::Passing, "ok".into(), t0);
        let saved = before.saved();
        let mut after = Services::new(vec![def], t0);
        assert_eq!(
            after.wire()[0].health(),
            Health::Critical,
            "a new check starts critical"
        );
        after.restore(saved, t0);
        assert_eq!(after.wire(), before.wire());
    }

    #[test]
    fn reports_on_unknown_or_run_checks_are_refused() {
        let t0 = Instant::now();
        let s0 =
            service(json!({"name": "a", "port": 1, "check": {"tcp": "x:1", "interval": "1s"}}));
        let mut s = Services::new(vec![s0], t0);
        assert_eq!(
            s.report("nope", Health::Passing, String::new(), t0),
            Err(ReportError::Unknown("nope".into()))
        );
        assert_eq!(
            s.report("service:a", Health::Passing, String::new(), t0),
            Err(ReportError::NotTtl("service:a".into()))
        );
    }

    #[test]
    fn ticks_expire_ttls_and_reap_what_stayed_critical() {
        let t0 = Instant::now();
        let a = service(json!({"name": "a", "port": 1,
            "check": {"ttl": "2s", "status": "passing", "deregister_critical_after": "3s"}}));
        let b =
            service(json!({"name": "b", "port": 2, "check": {"ttl": "2s", "status": "passing"}}));
        let mut s = Services::new(vec![a, b], t0);
        assert_eq!(s.tick(t0 + Duration::from_secs(1)), Tick::default());
        let expired = s.tick(t0 + Duration::from_secs(2));
        assert!(expired.changed && expired.reaped.is_empty());
        assert_eq!(s.wire()[0].health(), Health::Critical);
        assert_eq!(
            s.tick(t0 + Duration::from_secs(5)).reaped,
            ["a"],
            "b has no deregister"
        );
    }
}
