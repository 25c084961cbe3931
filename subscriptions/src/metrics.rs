//! The intake's samples, which every consuming role reports under its own prefix
//! (`hivemind_<role>_records_applied_total`, ...).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use hivemind_common::role::Sample;

use crate::intake::ClaimState;
use crate::intake::Intake;

/// Records applied and refused, streams, claims; records and keygroups held.
pub fn samples(intake: &Intake) -> Vec<Sample> {
    let held = intake
        .book
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .records()
        .count() as u64;
    let keygroups_held = intake
        .positions
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|p| p.claim == ClaimState::Mine)
        .count() as u64;
    let c = &intake.counters;
    let counters: [(&'static str, &'static str, &AtomicU64); 6] = [
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
    let counters = counters
        .into_iter()
        .map(|(name, help, value)| sample(name, help, true, value.load(Ordering::Relaxed)));
    let gauges = gauges
        .into_iter()
        .map(|(name, help, value)| sample(name, help, false, value));
    counters.chain(gauges).collect()
}

/// An unlabelled sample.
pub fn sample(name: &'static str, help: &'static str, counter: bool, value: u64) -> Sample {
    Sample {
        name,
        help,
        counter,
        labels: vec![],
        value,
    }
}
