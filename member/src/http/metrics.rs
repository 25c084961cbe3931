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
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use hivemind_common::histogram::HistogramSnapshot;
use hivemind_common::role::Sample;

use crate::cp::cp_access::CpAccess;
use crate::state::Agent;

/// Reads the agent at scrape time (weakly: the registry must not keep a stopped agent alive).
struct AgentCollector(Weak<Agent>);

impl std::fmt::Debug for AgentCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentCollector")
    }
}

/// One metric family: a value per label set (an unlabeled family holds one value).
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: prometheus_client::metrics::MetricType,
    labeled: Vec<(&[(&str, &str)], M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    if let [(&[], _)] = labeled.as_slice() {
        let (_, metric) = labeled.into_iter().next().expect("one value");
        return metric.encode(family);
    }
    for (labels, metric) in labeled {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labeled: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    let metrics = labeled
        .iter()
        .map(|(l, v)| (*l, ConstCounter::new(*v)))
        .collect();
    family(
        encoder,
        name,
        help,
        prometheus_client::metrics::MetricType::Counter,
        metrics,
    )
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labeled: &[(&[(&str, &str)], i64)],
) -> Result<(), std::fmt::Error> {
    let metrics = labeled
        .iter()
        .map(|(l, v)| (*l, ConstGauge::new(*v)))
        .collect();
    family(
        encoder,
        name,
        help,
        prometheus_client::metrics::MetricType::Gauge,
        metrics,
    )
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Histogram,
    )?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        snapshot.sum,
        snapshot.count,
        &snapshot.buckets,
        None,
    )
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
        let f = &agent.counters;
        counter(
            e,
            "hivemind_feed_events_applied",
            "Registry events applied to this member's membership view.",
            &[(&[], f.events_applied.load(Ordering::Relaxed))],
        )?;
        counter(
            e,
            "hivemind_feed_errors",
            "Failed reads of the event feed (retried with backoff).",
            &[(&[], f.feed_errors.load(Ordering::Relaxed))],
        )?;
        counter(
            e,
            "hivemind_feed_rebootstraps",
            "Membership view rebuilt from a registry snapshot (epoch changed).",
            &[(&[], f.rebootstraps.load(Ordering::Relaxed))],
        )?;
        let view = agent.view.borrow().clone();
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
        if let CpAccess::Member(cp) = agent.cp.as_ref() {
            histogram(
                e,
                "hivemind_raft_append_duration_seconds",
                "Time from a Raft log append to the flush that made it durable.",
                &cp.append_latency().snapshot(),
            )?;
            let m = cp.raft().metrics().borrow().clone();
            gauge(
                e,
                "hivemind_feed_followers",
                "Feed long-polls of members outside the control plane waiting on this CP member: \
                 how many of them chose it (DESIGN.md §6f).",
                &[(&[], cp.feed_followers() as i64)],
            )?;
            let (leases, keys) = {
                let state = cp.state().read();
                let kv = state.registry.kv();
                (kv.leases().len(), kv.len())
            };
            gauge(
                e,
                "hivemind_kv_keys",
                "Keys in the KV namespace as this CP member applied it.",
                &[(&[], keys as i64)],
            )?;
            gauge(
                e,
                "hivemind_leases",
                "Leases granted and not yet revoked or expired (DESIGN.md §6h).",
                &[(&[], leases as i64)],
            )?;
            counter(
                e,
                "hivemind_leases_expired",
                "Leases this member, as leader, expired (no keep-alive within the TTL).",
                &[(&[], cp.leases_expired())],
            )?;
            let (encoded, shared) = cp.feed_pages_counts();
            counter(
                e,
                "hivemind_feed_pages",
                "Feed pages answered to members outside the control plane: `encoded` built one, \
                 `shared` reused the encoding of a long-poll that asked for the same page.",
                &[
                    (&[("how", "encoded")], encoded),
                    (&[("how", "shared")], shared),
                ],
            )?;
            gauge(
                e,
                "hivemind_raft_term",
                "Current Raft term.",
                &[(&[], m.current_term as i64)],
            )?;
            gauge(
                e,
                "hivemind_raft_is_leader",
                "1 on the Raft leader.",
                &[(&[], i64::from(m.state == openraft::ServerState::Leader))],
            )?;
            counter(
                e,
                "hivemind_raft_leader_changes",
                "Times this member saw the Raft leader change.",
                &[(&[], cp.leader_changes())],
            )?;
            counter(
                e,
                "hivemind_raft_linearizable_reads",
                "Linearizable reads on this member (each waits for a read-index round).",
                &[(&[], cp.linearizable_reads())],
            )?;
            counter(
                e,
                "hivemind_raft_read_index_rounds",
                "Read-index rounds this member ran; concurrent linearizable reads share one.",
                &[(&[], cp.read_index_rounds())],
            )?;
            let (pre_votes, pre_votes_won) = cp.elections().pre_votes();
            counter(
                e,
                "hivemind_raft_pre_votes",
                "Pre-vote rounds this member ran because its leader was silent (a real election \
                 follows only when a majority would grant it).",
                &[(&[], pre_votes)],
            )?;
            counter(
                e,
                "hivemind_raft_pre_votes_won",
                "Pre-vote rounds a majority granted; each started a real election.",
                &[(&[], pre_votes_won)],
            )?;
            counter(
                e,
                "hivemind_raft_transient_errors",
                "Errors and per-attempt warnings openraft reported talking to peers (unreachable, \
                 timed out, replication backoff, stale messages): counted and summarized in a WARN \
                 every 10 s rather than logged one by one.",
                &[(&[], hivemind_control_plane::raft_errors::noted().0)],
            )?;
            let (cut_off, abandoned) = cp.fast_failures();
            counter(
                e,
                "hivemind_raft_cut_off_answers",
                "Requests answered no_quorum at once because this member knew it was cut off \
                 from a majority.",
                &[(&[], cut_off)],
            )?;
            counter(
                e,
                "hivemind_raft_abandoned_forwards",
                "Requests forwarded to a leader and given up because leadership moved meanwhile \
                 (reads retried on the new leader, writes answered no_quorum).",
                &[(&[], abandoned)],
            )?;
            counter(
                e,
                "hivemind_raft_commits_withheld",
                "AppendEntries whose commit index was lowered to this leader's durable log end \
                 (its own fsync was slower than a follower's).",
                &[(&[], cp.commits_withheld())],
            )?;
            counter(
                e,
                "hivemind_raft_purge_failures",
                "Removals of purged Raft log entries that failed (logged; the next purge retries).",
                &[(&[], cp.purge_failures())],
            )?;
            gauge(
                e,
                "hivemind_raft_commit_index",
                "Index of the last entry known committed.",
                &[(&[], cp.commit_index() as i64)],
            )?;
            gauge(
                e,
                "hivemind_raft_last_log_index",
                "Index of the last entry in this member's Raft log.",
                &[(&[], m.last_log_index.unwrap_or(0) as i64)],
            )?;
            gauge(
                e,
                "hivemind_raft_applied_index",
                "Index of the last entry applied to the registry.",
                &[(&[], m.last_applied.map_or(0, |l| l.index) as i64)],
            )?;
            gauge(
                e,
                "hivemind_control_plane_healthy",
                "1 while the control plane is healthy as this member sees it.",
                &[(
                    &[],
                    i64::from(cp.health() == hivemind_control_plane::Health::Healthy),
                )],
            )?;
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
