//! The binary's logging: which events reach stderr (`--log-level`, `--log-format`, `RUST_LOG`),
//! and openraft's ERROR events and per-attempt WARN events, which are counted and summarized
//! instead of printed (see `hivemind_control_plane::raft_errors`).
//!
//! Every filter here is a per-layer filter that knows its levels, so the subscriber's maximum
//! level is the most verbose one asked for (WARN for `--log-level warn`). A disabled `debug!`
//! then costs one comparison: openraft narrates each append and vote at DEBUG and TRACE, and
//! with a level-less filter in the stack every one of those was matched against the filters at
//! run time on the Raft core's thread (1.7% of a leader's CPU under writes, by perf).

use hivemind_control_plane::raft_errors;
use tracing::level_filters::LevelFilter;
use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::cli::LogFormat;

/// The subscriber for `--log-level level` (a level or tracing directives; `RUST_LOG` wins) in
/// `format`; an error names what is wrong with `level`.
pub fn subscriber(level: &str, format: LogFormat) -> Result<impl Subscriber + Send + Sync, String> {
    let levels = EnvFilter::try_from_default_env().or_else(|_| levels_for(level))?;
    Ok(with_levels(levels, format))
}

/// The filter `--log-level level` asks for.
fn levels_for(level: &str) -> Result<EnvFilter, String> {
    // openraft narrates every vote and append at info; keep it to warnings unless asked (and
    // never above the level asked for).
    let directive = if level.contains('=')
        || level.contains(',')
        || matches!(level, "debug" | "trace" | "error" | "off")
    {
        level.to_string()
    } else {
        format!("{level},openraft=warn,hickory_server=warn")
    };
    EnvFilter::try_new(&directive)
        .map_err(|_| format!("--log-level: {level:?} is not a level or tracing directive"))
}

/// Events within `levels` printed in `format`, except openraft's transient ones, which are
/// noted.
fn with_levels(levels: EnvFilter, format: LogFormat) -> impl Subscriber + Send + Sync {
    // openraft's transient errors and warnings are counted, not printed.
    let not_openraft_errors = tracing_subscriber::filter::filter_fn(|meta| {
        !raft_errors::is_openraft_transient(meta.target(), meta.level())
    })
    .with_max_level_hint(LevelFilter::TRACE); // no limit of its own: `levels` sets it
    let printed = levels.and(not_openraft_errors);
    // What is noted instead: decided per callsite, so every other event costs nothing here.
    let noted = tracing_subscriber::filter::filter_fn(|meta| {
        raft_errors::is_openraft_transient(meta.target(), meta.level())
    })
    .with_max_level_hint(LevelFilter::WARN);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(printed).boxed(),
        LogFormat::Json => fmt.json().with_filter(printed).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(OpenraftErrors.with_filter(noted))
}

/// Notes openraft's transient events (see `hivemind_control_plane::raft_errors`).
struct OpenraftErrors;

impl<S: Subscriber> Layer<S> for OpenraftErrors {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if raft_errors::is_openraft_transient(meta.target(), meta.level()) {
            let mut message = String::new();
            event.record(&mut MessageOf(&mut message));
            raft_errors::note(message);
        }
    }
}

/// Collects an event's fields as `name=value` text.
struct MessageOf<'a>(&'a mut String);

impl tracing::field::Visit for MessageOf<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let sep = if self.0.is_empty() { "" } else { " " };
        let _ = write!(self.0, "{sep}{}={value:?}", field.name());
    }
}

/// How often openraft's noted errors are summarized in the log (at most).
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs openraft's transient events noted since the last report as one WARN, at most every
/// [`REPORT_EVERY`], with the count per peer (`-`: events that name none).
pub async fn report_openraft_errors() {
    let mut reported = 0;
    loop {
        tokio::time::sleep(REPORT_EVERY).await;
        let (total, last) = raft_errors::noted();
        let by_peer = raft_errors::take_by_peer();
        if total > reported {
            let peers = by_peer
                .iter()
                .map(|(peer, n)| format!("{peer}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            tracing::warn!(
                events = total - reported,
                peers = %peers,
                last = %last,
                "openraft reported errors and failed attempts talking to peers (transient while a member is down or cut off; counted in hivemind_raft_transient_errors_total)"
            );
            reported = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subscriber `--log-level level` builds, whatever `RUST_LOG` says where the tests run.
    fn for_level(level: &str) -> impl Subscriber + Send + Sync {
        with_levels(levels_for(level).expect("a valid level"), LogFormat::Text)
    }

    fn max_level(level: &str) -> Option<LevelFilter> {
        for_level(level).max_level_hint()
    }

    #[test]
    fn the_subscriber_is_no_more_verbose_than_the_level_asked_for() {
        // Without a level on every filter the hint is TRACE or none, and each disabled event
        // is filtered at run time instead of by one comparison.
        assert_eq!(max_level("warn"), Some(LevelFilter::WARN));
        assert_eq!(max_level("info"), Some(LevelFilter::INFO));
        assert_eq!(max_level("debug"), Some(LevelFilter::DEBUG));
        // openraft's errors and per-attempt warnings are counted at any level; every other
        // warning's callsite is disabled for good on its first use.
        assert_eq!(max_level("error"), Some(LevelFilter::WARN));
        assert_eq!(max_level("off"), Some(LevelFilter::WARN));
    }

    #[test]
    fn openraft_errors_are_counted_not_printed_and_other_events_filter_by_level() {
        use tracing::Level;
        tracing::subscriber::with_default(for_level("warn"), || {
            let before = raft_errors::noted().0;
            tracing::error!(target: "openraft::network", "peer unreachable");
            assert_eq!(
                raft_errors::noted().0,
                before + 1,
                "the openraft error is noted"
            );
            tracing::warn!(target: "openraft::replication", "error replication to target=7");
            assert_eq!(
                raft_errors::noted().0,
                before + 2,
                "a per-attempt warning is noted too"
            );
            assert!(!tracing::enabled!(target: "openraft::core", Level::INFO));
            assert!(!tracing::enabled!(target: "hivemind", Level::INFO));
            assert!(tracing::enabled!(target: "hivemind", Level::WARN));
        });
    }

    #[test]
    fn a_bad_level_is_named() {
        let Err(message) = levels_for("=x=") else {
            panic!("a bad directive was accepted")
        };
        assert!(message.contains("--log-level"), "{message}");
    }
}
