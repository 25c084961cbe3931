//! openraft's transient errors and per-attempt warnings, counted (sans-IO).
//!
//! openraft 0.9 logs a peer that does not answer (`RPCError`, `timeout while confirming
//! leadership for read request`, `while requesting vote`) at ERROR, and every failed
//! replication attempt, its backoff, a progress update that failed and a message ignored because
//! the vote changed at WARN: thousands of lines per minute while a member is down or
//! partitioned away, none of which an operator must act on. The binary's log setup takes these
//! events out of the log, notes them here, and logs a rate-limited WARN with the count per peer
//! instead; `/metrics` exports the count (`hivemind_raft_transient_errors_total`). A member that
//! cannot make progress still shows it through health, `no_quorum` answers and the errors
//! hivemind logs itself; openraft's other warnings (a snapshot that cannot be built, a removed
//! target, a double shutdown) stay in the log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static TOTAL: AtomicU64 = AtomicU64::new(0);
static LAST: Mutex<String> = Mutex::new(String::new());
static BY_PEER: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Where openraft logs, at WARN, what happens on every replication attempt and every stale
/// message: the replication stream, the leader's handling of its answers, and the core's check
/// that a message belongs to the current vote.
const PER_ATTEMPT_TARGETS: [&str; 3] = [
    "openraft::replication",
    "openraft::engine::handler::replication_handler",
    "openraft::core::raft_core",
];

/// Whether an event of `target` at `level` is one of openraft's transient events noted here:
/// any of its errors, and its per-attempt warnings.
pub fn is_openraft_transient(target: &str, level: &tracing::Level) -> bool {
    let openraft = target == "openraft" || target.starts_with("openraft::");
    match *level {
        tracing::Level::ERROR => openraft,
        tracing::Level::WARN => PER_ATTEMPT_TARGETS.contains(&target),
        _ => false,
    }
}

/// The peer an openraft message is about (`target=<id>` in it), if it names one.
fn peer_of(message: &str) -> Option<String> {
    let at = message.find("target=")? + "target=".len();
    let id: String = message[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

/// Notes one of openraft's transient events and its message.
pub fn note(message: String) {
    TOTAL.fetch_add(1, Ordering::Relaxed);
    let peer = peer_of(&message).unwrap_or_else(|| "-".to_string());
    *BY_PEER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(peer)
        .or_default() += 1;
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = message;
}

/// Events noted since the process started, and the last one's message.
pub fn noted() -> (u64, String) {
    let last = LAST.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (TOTAL.load(Ordering::Relaxed), last)
}

/// The events noted per peer (`-`: none named) since the last call, which starts a new count.
pub fn take_by_peer() -> BTreeMap<String, u64> {
    std::mem::take(&mut *BY_PEER.lock().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn openraft_errors_and_per_attempt_warnings_are_noted_and_nothing_else() {
        assert!(is_openraft_transient(
            "openraft::replication",
            &Level::ERROR
        ));
        assert!(is_openraft_transient("openraft", &Level::ERROR));
        assert!(is_openraft_transient("openraft::network::x", &Level::ERROR));
        for target in PER_ATTEMPT_TARGETS {
            assert!(is_openraft_transient(target, &Level::WARN), "{target}");
            assert!(!is_openraft_transient(target, &Level::INFO), "{target}");
        }
        // openraft's other warnings stay in the log.
        assert!(!is_openraft_transient("openraft::core::tick", &Level::WARN));
        assert!(!is_openraft_transient(
            "openraft::network::snapshot_transport",
            &Level::WARN
        ));
        assert!(!is_openraft_transient("openraftish", &Level::ERROR));
        assert!(!is_openraft_transient(
            "hivemind_control_plane::store",
            &Level::ERROR
        ));
        assert!(!is_openraft_transient(
            "hivemind_control_plane::stream",
            &Level::WARN
        ));
    }

    #[test]
    fn notes_count_per_peer_and_keep_the_last_message() {
        let (before, _) = noted();
        note("error=Unreachable node: x message=error replication to target=1234".into());
        note("error=Unreachable node: x message=error replication to target=1234".into());
        note("message=A message will be ignored because vote changed".into());
        let (after, last) = noted();
        assert!(after >= before + 3);
        assert!(last.contains("vote changed"));
        let by_peer = take_by_peer();
        assert!(by_peer.get("1234").is_some_and(|n| *n >= 2), "{by_peer:?}");
        assert!(by_peer.contains_key("-"), "{by_peer:?}");
        assert_eq!(peer_of("target=abc12 more"), Some("abc12".into()));
        assert_eq!(peer_of("no peer"), None);
    }
}
