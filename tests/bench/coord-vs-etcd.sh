#!/usr/bin/env bash
# Coordination primitives: hivemind vs etcd, both as 3-member clusters on 127.0.0.1, driven by
# `hivemind-bench coord` (hivemind over HTTP/1.1, etcd over gRPC with the etcd-client crate):
# watch delivery to WATCHERS watchers, lock hand-off between two clients, LEASES leases kept
# alive for LEASE_SECONDS with each member's CPU. One run of each, hivemind first.
# Needs: etcd (Debian etcd-server), protoc and its includes (protobuf-compiler, libprotobuf-dev).
# Usage: tests/bench/coord-vs-etcd.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
WATCHERS=${WATCHERS:-1000}
WRITES=${WRITES:-50}
HANDOFFS=${HANDOFFS:-50}
LEASES=${LEASES:-10000}
LEASE_SECONDS=${LEASE_SECONDS:-30}
command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
cargo build --release --quiet -p hivemind -p hivemind-bench --features hivemind-bench/etcd
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind
BENCH=${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind-bench
WORK=$(mktemp -d /var/tmp/hivemind-coord.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 || true

HM_PORTS=(17800 17810 17820); HM_PIDS=()
HM_JOIN=""; for p in "${HM_PORTS[@]}"; do HM_JOIN="$HM_JOIN --join 127.0.0.1:$p"; done
for i in 0 1 2; do
  p=${HM_PORTS[$i]}
  $BIN agent --name "cp$i" --data-dir "$WORK/hm$i" --http-port "$p" --gossip-port $((p+1)) \
    --control-plane --bootstrap-expect 3 $HM_JOIN --log-level warn >>"$WORK/hm$i.log" 2>&1 &
  PIDS+=($!); HM_PIDS+=($!)
done
for i in 0 1 2; do wait_http "http://127.0.0.1:${HM_PORTS[$i]}/v1/cp/status" 'd["health"]=="healthy" and d["leader"]'; done

E_CLUSTER="e0=http://127.0.0.1:22480,e1=http://127.0.0.1:22490,e2=http://127.0.0.1:22500"; E_PIDS=()
for i in 0 1 2; do
  cp=$((22479 + 10*i)); pp=$((22480 + 10*i))
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "$E_CLUSTER" --initial-cluster-state new --log-level error >"$WORK/etcd$i.log" 2>&1 &
  PIDS+=($!); E_PIDS+=($!)
done
for _ in $(seq 1 100); do curl -fsS -X POST -d '{"key":"a2V5","value":"dg=="}' http://127.0.0.1:22479/v3/kv/put >/dev/null 2>&1 && break; sleep 0.2; done

join() { local IFS=,; echo "$*"; }
common=(--watchers "$WATCHERS" --writes "$WRITES" --handoffs "$HANDOFFS" --leases "$LEASES" --lease-seconds "$LEASE_SECONDS")
wait_idle "${PIDS[@]}"
echo "== hivemind"
$BENCH coord --target hivemind --endpoints "$(join 127.0.0.1:17800 127.0.0.1:17810 127.0.0.1:17820)" \
  --pids "$(join "${HM_PIDS[@]}")" "${common[@]}"
wait_idle "${PIDS[@]}"
echo "== etcd $(etcd --version | head -1)"
$BENCH coord --target etcd --endpoints "$(join 127.0.0.1:22479 127.0.0.1:22489 127.0.0.1:22499)" \
  --pids "$(join "${E_PIDS[@]}")" "${common[@]}"
