//! Metric families in Prometheus text (prometheus-client's encoder): a counter, a gauge or a
//! histogram per name, with a value per label set. Shared by `metrics.rs` (the member's and its
//! roles' metrics) and `metrics_cp.rs` (a CP member's).

use hivemind_common::histogram::HistogramSnapshot;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

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

pub(crate) fn counter(
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

pub(crate) fn gauge(
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

pub(crate) fn histogram(
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
