#!/usr/bin/env bash
# Control-plane load: `hivemind-bench members --members N` for N = 100, 1,000 and 5,000 (MEMBERS),
# EVENTS timed events each, one run per N on this machine. Each run starts its own 3 CP members
# and one real member on 127.0.0.1 and stops them. Writes the table into BENCHMARKS.md (or $OUT)
# between the bench-members markers.
set -euo pipefail
cd "$(dirname "$0")/../.."
MEMBERS=${MEMBERS:-"100 1000 5000"}
EVENTS=${EVENTS:-50}
OUT=${OUT:-BENCHMARKS.md}
# HIVEMIND_BENCH: another build to measure (it runs the hivemind binary beside it).
if [[ -z "${HIVEMIND_BENCH:-}" ]]; then cargo build --release --quiet -p hivemind -p hivemind-bench; fi
BENCH=${HIVEMIND_BENCH:-${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind-bench}
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
for n in $MEMBERS; do
  echo "== $n members" >&2
  "$BENCH" members --members "$n" --events "$EVENTS" --json | tee -a "$RESULTS"
done
python3 - "$OUT" "$RESULTS" "$EVENTS" <<'PY'
import json, sys, datetime, re
out, results, events = sys.argv[1:4]
rows = []
for line in open(results):
    d = json.loads(line)
    cps = d["control_plane"]
    share = " / ".join(str(c["assigned"]) for c in cps)
    conns = " / ".join("%d" % c["connections"] for c in cps)
    peak = max(cps, key=lambda c: c["peak_rss_mib"])
    rows.append(
        f"| {d['members']:,} | {d['admitted_s']:.1f} s ({d['join_retries']}) | {share} | {conns} "
        f"| {peak['peak_rss_mib']:.1f} MiB ({peak['anon_mib']:.1f} + {peak['file_mib']:.1f}) "
        f"| {d['member_peak_rss_mib']:.1f} MiB ({d['member_anon_mib']:.1f} + {d['member_file_mib']:.1f}) "
        f"| {d['feed_p50_ms']:.1f} / {d['feed_p99_ms']:.1f} ms | {d['errors']} | {d['rebootstraps']} |")
text = f"""<!-- bench-members:begin (written by tests/bench/members.sh) -->
## Control-plane load: members following the feed (issue 21)

Command: `tests/bench/members.sh` (`hivemind-bench members --members N --events {events}` per N),
on this project's 2-core machine, {datetime.date.today()}, one run per N. Each run starts 3 CP
members and one real member (no roles) on 127.0.0.1, then admits N synthetic members through
the real join path (16 at a time, retried as a member retries), each following the feed from
its join's index on one connection to the CP member it is assigned (`cp_choice`), as a member
does (re-bootstrapping from a registry snapshot, as a member does, should retention trim the
feed past it); all of them run in the bench's process, on the same two cores. Then {events} keygroup
writes, one at a time, each timed from sending it until every member's feed passed it.
RSS is VmHWM (peak) from `/proc`, split into the process's own pages and file-backed pages
(mostly the binary's code, shared by every member on a machine). Synthetic members do not
gossip; real members also hold a SWIM view and announce to each other.

| members | admitted in (join retries) | assigned per CP member | connections per CP member | CP member peak RSS (own + file) | real member peak RSS (own + file) | feed latency p50 / p99 | feed errors | re-bootstraps |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + """

Targets (issue 21): a CP member's peak RSS at most 48 MB at 1,000 members, a member's at most
20 MB. Connections include the CP members' own Raft streams and the join calls' pooled
connections.
<!-- bench-members:end -->"""
current = open(out).read()
section = re.compile(r"<!-- bench-members:begin.*?<!-- bench-members:end -->", re.S)
if not section.search(current):
    sys.exit(f"{out} has no bench-members markers: add them where the section belongs")
open(out, "w").write(section.sub(lambda _: text, current, count=1))
print(text)
PY
