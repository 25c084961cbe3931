//! `GET /metrics`: Prometheus text, encoded by `prometheus-client` from the counters the member
//! already keeps (gossip, feed, joins, Raft), read at scrape time so that nothing on a hot path
//! pays for metrics twice.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use hivemind_common::role::Sample;

#[cfg(feature = "control-plane")]
use crate::cp::cp_access::CpAccess;
use crate::http::metric_families::{counter, gauge, histogram};
use crate::state::Agent;

/// Reads the agent at scrape time (weakly: the registry must not keep a stopped agent alive).
struct AgentCollector(Weak<Agent>);

impl std::fmt::Debug for AgentCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentCollector")
    }
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(agent) = self.0.upgrade() else {
            return Ok(());
        };
        let e = &mut encoder;
        let g = &agent.gossip.counters;
        counter(
            e,
            "hivemind_gossip_packets",
            "Gossip packets received and sent.",
            &[
                (&[("direction", "in")], g.packets_in.load(Ordering::Relaxed)),
                (
                    &[("direction", "out")],
                    g.packets_out.load(Ordering::Relaxed),
                ),
            ],
        )?;
        counter(
            e,
            "hivemind_gossip_dropped",
            "Gossip packets dropped: not sealed with our key (unopened) or refused by SWIM.",
            &[
                (
                    &[("reason", "unopened")],
                    g.dropped_unopened.load(Ordering::Relaxed),
                ),
                (
                    &[("reason", "rejected")],
                    g.rejected_by_foca.load(Ordering::Relaxed),
                ),
            ],
        )?;
        let (mut alive, mut suspect, mut down) = (0, 0, 0);
        for (_, state) in agent.gossip.view.borrow().values() {
            match state {
                foca::State::Alive => alive += 1,
                foca::State::Suspect => suspect += 1,
                foca::State::Down => down += 1,
            }
        }
        gauge(
            e,
            "hivemind_gossip_members",
            "Other members in this member's SWIM view, by state.",
            &[
                (&[("state", "alive")], alive),
                (&[("state", "suspect")], suspect),
                (&[("state", "down")], down),
            ],
        )?;
        let f = agent.membership.counts();
        counter(
            e,
            "hivemind_feed_events_applied",
            "Registry events applied to this member's membership view.",
            &[(&[], f.events_applied)],
        )?;
        counter(
            e,
            "hivemind_feed_errors",
            "Failed reads of the event feed (retried with backoff).",
            &[(&[], f.errors)],
        )?;
        counter(
            e,
            "hivemind_feed_rebootstraps",
            "Membership view rebuilt from a registry snapshot (epoch changed).",
            &[(&[], f.rebootstraps)],
        )?;
        let view = agent.membership.view();
        gauge(
            e,
            "hivemind_feed_index",
            "Feed position of this member's membership view.",
            &[(&[], view.index as i64)],
        )?;
        gauge(
            e,
            "hivemind_epoch",
            "Epoch of this member's membership view.",
            &[(&[], view.epoch as i64)],
        )?;
        let joins = agent.join_outcomes.snapshot();
        let joins: Vec<([(&str, &str); 1], u64)> = joins
            .iter()
            .map(|(outcome, n)| ([("outcome", outcome.as_str())], *n))
            .collect();
        let joins: Vec<(&[(&str, &str)], u64)> = joins.iter().map(|(l, n)| (&l[..], *n)).collect();
        counter(
            e,
            "hivemind_joins",
            "Join requests this member answered, by outcome (accepted or the rejection code).",
            &joins,
        )?;
        let answers = &agent.http_answers;
        counter(
            e,
            "hivemind_http_unavailable",
            "HTTP answers 503 (no quorum, leader change, cut off: the client retries).",
            &[(&[], answers.unavailable.load(Ordering::Relaxed))],
        )?;
        counter(
            e,
            "hivemind_http_server_errors",
            "HTTP answers with another 5xx or no status (logged at ERROR).",
            &[(&[], answers.server_errors.load(Ordering::Relaxed))],
        )?;
        gauge(
            e,
            "hivemind_http_connections",
            "HTTP connections open on this member's listener (members, clients, peers' streams).",
            &[(
                &[],
                agent.listener_counters.open.load(Ordering::Relaxed) as i64,
            )],
        )?;
        counter(
            e,
            "hivemind_tls_handshake_failures",
            "TLS handshakes the HTTP listener refused or that timed out (plaintext, another CA, expired).",
            &[(
                &[],
                agent
                    .listener_counters
                    .handshake_failures
                    .load(Ordering::Relaxed),
            )],
        )?;
        counter(
            e,
            "hivemind_tls_reload_failures",
            "SIGHUP reloads of the TLS files that failed their checks (the old files stay).",
            &[(
                &[],
                agent
                    .config
                    .tls
                    .as_ref()
                    .map_or(0, |t| t.reload_failures.load(Ordering::Relaxed)),
            )],
        )?;
        counter(
            e,
            "hivemind_acl_table_read_failures",
            "Reads of the ACL table from the control plane that failed (the last table stays).",
            &[(&[], agent.acl.failures.load(Ordering::Relaxed))],
        )?;
        // Each role's samples, one family per (role, name).
        for (role, samples) in agent.roles.metrics() {
            let mut families: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
            for sample in &samples {
                families.entry(sample.name).or_default().push(sample);
            }
            for (name, samples) in families {
                let first = samples[0];
                let labeled: Vec<(Vec<(&str, &str)>, u64)> = samples
                    .iter()
                    .map(|s| {
                        (
                            s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect(),
                            s.value,
                        )
                    })
                    .collect();
                let labeled: Vec<(&[(&str, &str)], u64)> =
                    labeled.iter().map(|(l, v)| (&l[..], *v)).collect();
                let name = format!("hivemind_{role}_{name}");
                if first.counter {
                    counter(e, &name, first.help, &labeled)?;
                } else {
                    let labeled: Vec<(&[(&str, &str)], i64)> =
                        labeled.iter().map(|(l, v)| (*l, *v as i64)).collect();
                    gauge(e, &name, first.help, &labeled)?;
                }
            }
        }
        for (role, histograms) in agent.roles.histograms() {
            for h in histograms {
                histogram(
                    e,
                    &format!("hivemind_{role}_{}", h.name),
                    h.help,
                    &h.snapshot,
                )?;
            }
        }
        #[cfg(feature = "control-plane")]
        if let CpAccess::Member(cp) = agent.cp.as_ref() {
            super::metrics_cp::encode(e, cp)?;
        }
        Ok(())
    }
}

/// The registry of one agent (several agents may share a process, as in `hivemind dev`).
pub(crate) fn registry(agent: &Arc<Agent>) -> Arc<Registry> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentCollector(Arc::downgrade(agent))));
    Arc::new(registry)
}

/// Prometheus text (OpenMetrics).
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Every metric of this member and its roles",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub(crate) async fn route(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
