#!/usr/bin/env bash
# KV benchmark: hivemind vs etcd, both as 3-member clusters on 127.0.0.1, driven by the same load
# generator (`hivemind bench kv`), 1/16/64 clients, DURATION seconds per phase (writes, then
# linearizable reads). Then leader failover (kill -9 of the leader -> next successful write),
# TRIALS times. Writes the results to BENCHMARKS.md (or $OUT).
#
# Needs: etcd (Debian etcd-server), fio. Usage: tests/bench/kv-vs-etcd.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-15}
TRIALS=${TRIALS:-5}
CLIENTS=${CLIENTS:-"1 16 64"}
OUT=${OUT:-BENCHMARKS.md}
command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio not found: apt-get install fio" >&2; exit 1; }
cargo build --release --quiet
BIN=$PWD/target/release/hivemind
WORK=$(mktemp -d /var/tmp/hivemind-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# --- disk: one fsync'ed 4 KiB write ---
FIO_CMD="fio --name=fsync --directory=$WORK --rw=write --bs=4k --size=8m --fsync=1 --ioengine=sync --runtime=10 --time_based=0"
FSYNC=$($FIO_CMD --output-format=json | python3 -c '
import json,sys
j=json.load(sys.stdin)["jobs"][0]
s=j["sync"]["lat_ns"]
print("%.3f ms mean, %.3f ms p99" % (s["mean"]/1e6, s["percentile"]["99.000000"]/1e6))')
echo "fsync: $FSYNC"

wait_http() { # url jq-ish python predicate
  for _ in $(seq 1 300); do
    if curl -fsS "$1" 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($2) else 1)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; return 1
}

# --- hivemind ---
HM_PORTS=(17700 17710 17720)
HM_JOIN=""; for p in "${HM_PORTS[@]}"; do HM_JOIN="$HM_JOIN --join 127.0.0.1:$p"; done
declare -A HM_PID
start_hm() { # index
  local p=${HM_PORTS[$1]}
  $BIN agent --name "cp$1" --data-dir "$WORK/hm$1" --http-port "$p" --gossip-port $((p+1)) \
    --control-plane --bootstrap-expect 3 $HM_JOIN --log-level warn >>"$WORK/hm$1.log" 2>&1 &
  HM_PID[$1]=$!; PIDS+=($!)
}
for i in 0 1 2; do start_hm $i; done
HM_EPS=$(printf '127.0.0.1:%s,' "${HM_PORTS[@]}"); HM_EPS=${HM_EPS%,}
wait_http "http://127.0.0.1:${HM_PORTS[0]}/v1/status" 'd["ready"]'

run_bench() { # target endpoints clients
  $BIN bench kv --target "$1" --endpoints "$2" --clients "$3" --duration "${DURATION}s" --value-size 256 --json
}
declare -A RESULT
for c in $CLIENTS; do
  echo "hivemind, $c clients"; RESULT[hivemind,$c]=$(run_bench hivemind "$HM_EPS" "$c"); echo "${RESULT[hivemind,$c]}"
done

# failover: kill -9 the leader, time until a write through the survivors succeeds
FAILOVER=()
for t in $(seq 1 "$TRIALS"); do
  wait_http "http://127.0.0.1:${HM_PORTS[0]}/v1/cp/status" 'd["health"]=="healthy" and d["leader"]'
  for i in 0 1 2; do wait_http "http://127.0.0.1:${HM_PORTS[$i]}/v1/cp/status" 'd["health"]=="healthy"'; done
  leader_name=$(curl -fsS "http://127.0.0.1:${HM_PORTS[0]}/v1/cp/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["name"])')
  li=${leader_name#cp}
  survivors=""; for i in 0 1 2; do [ "$i" = "$li" ] || survivors="$survivors,127.0.0.1:${HM_PORTS[$i]}"; done
  kill -9 "${HM_PID[$li]}"
  ms=$($BIN bench kv --target hivemind --endpoints "${survivors#,}" --first-success --json | python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["first_success_ms"])')
  echo "failover trial $t: leader $leader_name killed, next write after $ms ms"
  FAILOVER+=("$ms")
  start_hm "$li"
done
for p in "${HM_PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done

# --- etcd ---
E_CLUSTER="e0=http://127.0.0.1:22380,e1=http://127.0.0.1:22390,e2=http://127.0.0.1:22400"
E_EPS="127.0.0.1:22379,127.0.0.1:22389,127.0.0.1:22399"
for i in 0 1 2; do
  cp=$((22379 + 10*i)); pp=$((22380 + 10*i))
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "$E_CLUSTER" --initial-cluster-state new --log-level error >"$WORK/etcd$i.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 1 100); do curl -fsS -X POST -d '{"key":"a2V5","value":"dg=="}' http://127.0.0.1:22379/v3/kv/put >/dev/null 2>&1 && break; sleep 0.2; done
for c in $CLIENTS; do
  echo "etcd, $c clients"; RESULT[etcd,$c]=$(run_bench etcd "$E_EPS" "$c"); echo "${RESULT[etcd,$c]}"
done

# --- report ---
python3 - "$OUT" "$FSYNC" "$DURATION" "$(etcd --version | head -1)" "${FAILOVER[*]}" <<PY
import json, sys, statistics, datetime, platform, os
out, fsync, duration, etcd_version, failover = sys.argv[1:6]
results = {}
$(for c in $CLIENTS; do echo "results[('hivemind',$c)] = json.loads('''${RESULT[hivemind,$c]}''')"; echo "results[('etcd',$c)] = json.loads('''${RESULT[etcd,$c]}''')"; done)
clients = sorted({c for _, c in results})
rows = []
for c in clients:
    h, e = results[('hivemind', c)], results[('etcd', c)]
    for phase in ('writes', 'reads'):
        hp, ep = h[phase], e[phase]
        rows.append(f"| {c} | {phase} | {hp['ops_per_sec']:,.0f}/s | {hp['p50_ms']:.2f} | {hp['p99_ms']:.2f} | {ep['ops_per_sec']:,.0f}/s | {ep['p50_ms']:.2f} | {ep['p99_ms']:.2f} | {hp['ops_per_sec']/ep['ops_per_sec']:.2f}x |")
fo = [float(x) for x in failover.split()]
text = f"""# Benchmarks

All numbers from one run on this project's 2-core machine, {datetime.date.today()}, both clusters on
127.0.0.1, one after the other, driven by the same load generator.

## KV: hivemind vs etcd (3 members each)

Command: \`tests/bench/kv-vs-etcd.sh\` (DURATION={duration} s per phase). Each row: N clients, each
with one keep-alive connection to one member (client i -> member i mod 3), 256-byte values; a
write phase, then a linearizable-read phase of the same keys. Per client and target:
\`hivemind bench kv --target hivemind|etcd --endpoints A,B,C --clients N --duration {duration}s --value-size 256\`.
etcd: {etcd_version} through its v3 JSON gateway (\`POST /v3/kv/put\`, \`/v3/kv/range\`).

Disk: one fsync'ed 4 KiB write takes {fsync}
(\`fio --name=fsync --rw=write --bs=4k --size=8m --fsync=1 --ioengine=sync\`).

| clients | phase | hivemind | p50 ms | p99 ms | etcd | p50 ms | p99 ms | hivemind/etcd |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

Target (issue 2): at least 1.5x etcd's writes/s at every concurrency with p99 no worse than etcd's.

## Leader failover

kill -9 of the hivemind leader, then \`hivemind bench kv --first-success --endpoints <survivors>\`
retries one write (5 ms apart) until it succeeds; the time includes starting that process.
{len(fo)} trials: {', '.join(f'{x:.0f} ms' for x in fo)}; median **{statistics.median(fo):.0f} ms**.
Target: under 1 s median. Settings: heartbeat 50 ms, election timeout 200–400 ms.
"""
open(out, 'w').write(text)
print(text)
PY
