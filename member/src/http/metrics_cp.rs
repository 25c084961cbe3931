//! The control plane's part of `GET /metrics` (a CP member's Raft, feed, lease and read
//! counters), read from the running [`ControlPlane`] at scrape time.

use hivemind_control_plane::ControlPlane;
use prometheus_client::encoding::DescriptorEncoder;

use super::metric_families::{counter, gauge, histogram};

/// Encodes the control plane's metrics of this member.
pub(super) fn encode(e: &mut DescriptorEncoder, cp: &ControlPlane) -> Result<(), std::fmt::Error> {
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
    Ok(())
}
