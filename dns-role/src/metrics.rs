//! The dns and trigger roles' samples for `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hivemind_common::role::HistogramSample;
use hivemind_common::role::RoleMetrics;
use hivemind_common::role::Sample;

use crate::intake::ClaimState;
use crate::intake::Shared;
use crate::Mode;

/// The dns role's metrics: queries by response code, records held, record intake.
pub(crate) struct DnsMetrics(pub(crate) Arc<Shared>);

impl RoleMetrics for DnsMetrics {
    fn histograms(&self) -> Vec<HistogramSample> {
        if self.0.mode != Mode::Dns {
            return Vec::new();
        }
        vec![HistogramSample {
            name: "query_duration_seconds",
            help: "Time from reading a DNS query to handing its answer to the socket.",
            snapshot: self.0.queries.latency.snapshot(),
        }]
    }

    fn samples(&self) -> Vec<Sample> {
        let shared = &self.0;
        let mut samples: Vec<Sample> = shared
            .queries
            .snapshot()
            .into_iter()
            .map(|(rcode, n)| Sample {
                name: "queries",
                help: "DNS queries answered, by response code.",
                counter: true,
                labels: vec![("rcode", rcode)],
                value: n,
            })
            .collect();
        let held = shared
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records()
            .count() as u64;
        let keygroups_held = shared
            .positions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|p| p.claim == ClaimState::Mine)
            .count() as u64;
        let c = &shared.counters;
        let counters: [(&'static str, &'static str, &AtomicU64); 9] = [
            (
                "records_applied",
                "Host records applied (newer seq).",
                &c.applied,
            ),
            (
                "records_refused",
                "Records refused: they did not open with the keygroup's secret.",
                &c.refused_sealed,
            ),
            (
                "stream_errors",
                "Subscription streams interrupted (and reconnected).",
                &c.stream_errors,
            ),
            (
                "received_from_hosts",
                "Records received on host streams (as the keygroup's holder).",
                &c.received_from_hosts,
            ),
            (
                "received_from_holder",
                "Records received on the intra-node stream from the keygroup's holder.",
                &c.received_from_holder,
            ),
            (
                "responsibility_claims",
                "Times this machine became responsible for a keygroup.",
                &c.claims,
            ),
            (
                "webhook_delivered",
                "Trigger changes POSTed to --trigger-webhook.",
                &c.webhook_delivered,
            ),
            (
                "webhook_failures",
                "Failed webhook POSTs (each retried with backoff).",
                &c.webhook_failures,
            ),
            (
                "webhook_dropped",
                "Trigger changes the webhook fell too far behind to deliver.",
                &c.webhook_dropped,
            ),
        ];
        let gauges = [
            ("records", "Host records held.", held),
            (
                "keygroups_held",
                "Keygroups this machine is responsible for now.",
                keygroups_held,
            ),
            (
                "subscriptions",
                "Subscription streams open now.",
                c.streams_open.load(Ordering::Relaxed),
            ),
        ];
        let sample = |name, help, counter, value| Sample {
            name,
            help,
            counter,
            labels: vec![],
            value,
        };
        samples.extend(
            counters
                .into_iter()
                .map(|(name, help, value)| sample(name, help, true, value.load(Ordering::Relaxed))),
        );
        samples.extend(
            gauges
                .into_iter()
                .map(|(name, help, value)| sample(name, help, false, value)),
        );
        samples
    }
}
