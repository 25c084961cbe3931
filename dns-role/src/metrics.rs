//! The dns role's samples for `/metrics`: queries by response code and their latency, and the
//! intake's samples (records held and applied, streams, claims).

use hivemind_common::role::HistogramSample;
use hivemind_common::role::RoleMetrics;
use hivemind_common::role::Sample;

use crate::RoleState;

pub(crate) struct DnsMetrics(pub(crate) RoleState);

impl RoleMetrics for DnsMetrics {
    fn histograms(&self) -> Vec<HistogramSample> {
        vec![HistogramSample {
            name: "query_duration_seconds",
            help: "Time from reading a DNS query to handing its answer to the socket.",
            snapshot: self.0.zone.queries.latency.snapshot(),
        }]
    }

    fn samples(&self) -> Vec<Sample> {
        let queries = self
            .0
            .zone
            .queries
            .snapshot()
            .into_iter()
            .map(|(rcode, n)| Sample {
                name: "queries",
                help: "DNS queries answered, by response code.",
                counter: true,
                labels: vec![("rcode", rcode)],
                value: n,
            });
        queries
            .chain(hivemind_subscriptions::metrics::samples(&self.0.intake))
            .collect()
    }
}
