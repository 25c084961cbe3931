//! openraft's transient errors, counted (sans-IO).
//!
//! openraft 0.9 logs a peer that does not answer (`RPCError`, `timeout while confirming
//! leadership for read request`, `while requesting vote`) at ERROR: thousands of lines per
//! minute while a member is down or partitioned away, none of which an operator must act on.
//! The binary's log setup takes openraft's ERROR events out of the log, notes them here, and
//! logs a rate-limited WARN with the count instead; `/metrics` exports the count
//! (`hivemind_raft_transient_errors_total`). A member that cannot make progress still shows it
//! through health, `no_quorum` answers and the errors hivemind logs itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static TOTAL: AtomicU64 = AtomicU64::new(0);
static LAST: Mutex<String> = Mutex::new(String::new());

/// Whether an event of `target` at `level` is one of openraft's errors noted here.
pub fn is_openraft_error(target: &str, level: &tracing::Level) -> bool {
    *level == tracing::Level::ERROR && (target == "openraft" || target.starts_with("openraft::"))
}

/// Notes one of openraft's errors and its message.
pub fn note(message: String) {
    TOTAL.fetch_add(1, Ordering::Relaxed);
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = message;
}

/// openraft errors noted since the process started, and the last one's message.
pub fn noted() -> (u64, String) {
    let last = LAST.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (TOTAL.load(Ordering::Relaxed), last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_openraft_errors_are_noted() {
        assert!(is_openraft_error(
            "openraft::replication",
            &tracing::Level::ERROR
        ));
        assert!(is_openraft_error("openraft", &tracing::Level::ERROR));
        assert!(!is_openraft_error(
            "openraft::replication",
            &tracing::Level::WARN
        ));
        assert!(!is_openraft_error("openraftish", &tracing::Level::ERROR));
        assert!(!is_openraft_error(
            "hivemind_control_plane::store",
            &tracing::Level::ERROR
        ));
    }

    #[test]
    fn notes_count_and_keep_the_last_message() {
        let (before, _) = noted();
        note("RPCError: a".into());
        note("RPCError: b".into());
        let (after, last) = noted();
        assert!(after >= before + 2);
        assert!(!last.is_empty());
    }
}
