#!/usr/bin/env bash
# Connections a member holds to the control plane in steady state (issue 21): 3 CP members and
# MEMBERS (default 5) members with no roles on 127.0.0.1, then each member's established TCP
# connections to the CP members' HTTP ports, counted with `ss` 10 s after they start and again
# after WAIT s (default 180: reqwest drops an idle pooled connection after 90 s, checked every
# 90 s). Every process is stopped by its PID. HIVEMIND_BIN: another build to measure.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
if [[ -z "${HIVEMIND_BIN:-}" ]]; then cargo build --release --quiet -p hivemind; fi
BIN=${HIVEMIND_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind}
MEMBERS=${MEMBERS:-5}
WAIT=${WAIT:-180}
BASE=${BASE_PORT:-7711}
dir=$(mktemp -d)
pids=()
stop() {
  exec 2>/dev/null # bash reports each killed job otherwise
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap stop EXIT
joins=()
for i in 0 1 2; do joins+=(--join "127.0.0.1:$((BASE + i))"); done
for i in 0 1 2; do
  "$BIN" agent --name "cp$i" --data-dir "$dir/cp$i" --http-port $((BASE + i)) \
    --gossip-port $((BASE + 100 + i)) --control-plane --bootstrap-expect 3 "${joins[@]}" \
    --gossip-profile local >"$dir/cp$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  wait_http "http://127.0.0.1:$((BASE + i))/v1/cp/status" 'd["health"]=="healthy" and d["leader"]'
done
members=()
for i in $(seq 0 $((MEMBERS - 1))); do
  "$BIN" agent --name "m$i" --data-dir "$dir/m$i" --http-port $((BASE + 10 + i)) \
    --gossip-port $((BASE + 110 + i)) --join "127.0.0.1:$BASE" --gossip-profile local \
    >"$dir/m$i.log" 2>&1 &
  pids+=($!)
  members+=($!)
done
cp_ports="^127\.0\.0\.1:($BASE|$((BASE + 1))|$((BASE + 2)))$"
count() {
  local counts=()
  for pid in "${members[@]}"; do
    counts+=("$(ss -tnpH state established | grep "pid=$pid," | awk '{print $4}' | grep -cE "$cp_ports" || true)")
  done
  echo "${counts[*]}"
}
sleep 10
echo "10 s after the members started: connections to the CP members per member: $(count)"
sleep $((WAIT - 10))
echo "$WAIT s after the members started: connections to the CP members per member: $(count)"
