#!/usr/bin/env bash
# DNS benchmarks on this machine, all in one run (processes on 127.0.0.1):
#  1. propagation: 3 CP, HOSTS (default 50) host members, 2 dns members; `hivemind-bench
#     propagation` changes one host's services CHANGES (default 200) times and measures until
#     both dns members answer the new SRV record.
#  2. query rate: 1000 synthetic hosts (`hivemind-bench dns-publishers`) served by a dns member,
#     next to nsd and bind9 serving the same 1000 names as a static zone; the same dnsperf
#     command for all three. Each at equal parallelism: the dns role answers UDP on one thread
#     per core, so nsd runs that many server processes (`server-count`) and named that many
#     worker threads (`-n`).
# Needs Debian's dnsperf, nsd and bind9. Prints the results; stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
# HIVEMIND_BIN / HIVEMIND_BENCH: other builds to measure (e.g. before and after a change).
if [[ -z "${HIVEMIND_BIN:-}" ]]; then cargo build --release --quiet -p hivemind -p hivemind-bench; fi
B="${HIVEMIND_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind}"
BENCH="${HIVEMIND_BENCH:-${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind-bench}"
HOSTS="${HOSTS:-50}"
CHANGES="${CHANGES:-200}"
SYNTHETIC="${SYNTHETIC:-1000}"
DURATION="${DURATION:-15}"
# The dns role's UDP threads: one per core the process may use (dns-role/src/server.rs).
CORES="$(nproc)"
DIR="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
start() { # name, args...
  local name="$1"; shift
  "$B" agent --name "$name" --data-dir "$DIR/$name" --gossip-profile local "$@" >"$DIR/$name.log" 2>&1 &
  PIDS+=($!)
}
ready() { # http port
  for _ in $(seq 1 300); do
    curl -sf "127.0.0.1:$1/v1/status" | grep -q '"ready":true' && return 0
    sleep 0.1
  done
  echo "member on $1 not ready" >&2; return 1
}
JOIN="--join 127.0.0.1:16100 --join 127.0.0.1:16102 --join 127.0.0.1:16104"
for i in 0 1 2; do
  start "cp$i" --http-port $((16100 + 2*i)) --gossip-port $((16101 + 2*i)) --control-plane --bootstrap-expect 3 --fail-unheard-after 0 $JOIN
done
ready 16100
for i in 0 1; do
  start "ns$i" --http-port $((16200 + 2*i)) --gossip-port $((16201 + 2*i)) --roles dns --dns-port $((16253 + i)) --join 127.0.0.1:16100
done
for i in $(seq 0 $((HOSTS - 1))); do
  start "web-$i" --http-port $((16300 + 2*i)) --gossip-port $((16301 + 2*i)) --roles host --join 127.0.0.1:16100
done
ready 16200
for port in 16200 16202; do
  for _ in $(seq 1 600); do
    n=$(curl -sf "127.0.0.1:$port/v1/roles/dns/records" | grep -o '"host":' | wc -l || true)
    [[ "$n" -ge "$HOSTS" ]] && break
    sleep 0.1
  done
done
echo "== propagation ($HOSTS hosts, 2 dns members, $CHANGES changes)"
"$BENCH" propagation --host 127.0.0.1:16300 --host-name web-0 --dns-ports 16253,16254 --changes "$CHANGES"

# The hosts served their purpose; a quieter machine for the query-rate runs of all three.
for pid in "${PIDS[@]:5}"; do kill -9 "$pid" 2>/dev/null || true; done
echo "== query rate ($SYNTHETIC host records, dnsperf -l $DURATION -c 4)"
"$BENCH" dns-publishers --via 127.0.0.1:16200 --hosts "$SYNTHETIC" --listen 127.0.0.1:16090 >"$DIR/publishers.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do
  n=$(curl -sf "127.0.0.1:16200/v1/roles/dns/records" | grep -o '"host":"bench-' | wc -l || true)
  [[ "$n" -ge "$SYNTHETIC" ]] && break
  sleep 0.2
done
echo "dns member holds $n synthetic records"
QUERIES="$DIR/queries.txt"
ZONE="$DIR/hivemind.zone"
{
  echo '$TTL 5'
  echo '@ IN SOA ns.hivemind. hostmaster.hivemind. 1 60 30 600 5'
  echo '@ IN NS ns.hivemind.'
  echo 'ns IN A 127.0.0.1'
} >"$ZONE"
for i in $(seq 0 $((SYNTHETIC - 1))); do
  echo "bench-$i.host.hivemind. A" >>"$QUERIES"
  echo "bench-$i.host IN A 10.77.$((i / 250)).$((i % 250 + 1))" >>"$ZONE"
done
perf() { # label port
  local qps
  qps=$(dnsperf -s 127.0.0.1 -p "$2" -d "$QUERIES" -l "$DURATION" -c 4 2>&1 | tee "$DIR/dnsperf-$1.txt" | awk '/Queries per second/ {print $4}')
  local lat
  lat=$(awk '/Average Latency/ {print $4, $5, $6, $7, $8}' "$DIR/dnsperf-$1.txt")
  local lost
  lost=$(awk '/Queries lost/ {print $3, $4}' "$DIR/dnsperf-$1.txt")
  echo "$1: $qps queries/s, average latency $lat, lost $lost"
}
perf hivemind 16253

# nsd: the same names as a static zone.
mkdir -p "$DIR/nsd"
cat >"$DIR/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@15353
  port: 15353
  username: ""
  zonesdir: "$DIR"
  database: ""
  pidfile: "$DIR/nsd/nsd.pid"
  xfrdfile: "$DIR/nsd/xfrd.state"
  zonelistfile: "$DIR/nsd/zone.list"
  server-count: $CORES
  logfile: "$DIR/nsd/nsd.log"
remote-control:
  control-enable: no
zone:
  name: hivemind.
  zonefile: "$ZONE"
CONF
nsd -d -c "$DIR/nsd/nsd.conf" >"$DIR/nsd/out.log" 2>&1 &
PIDS+=($!)
sleep 1
perf nsd 15353

# bind9 (named), same zone.
mkdir -p "$DIR/bind"
cat >"$DIR/bind/named.conf" <<CONF
options {
  directory "$DIR/bind";
  listen-on port 15453 { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  pid-file "$DIR/bind/named.pid";
};
zone "hivemind." { type master; file "$ZONE"; };
CONF
named -g -n "$CORES" -c "$DIR/bind/named.conf" -u root >"$DIR/bind/out.log" 2>&1 &
PIDS+=($!)
sleep 2
perf bind9 15453
