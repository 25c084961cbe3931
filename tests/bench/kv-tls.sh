#!/usr/bin/env bash
# What TLS costs (DESIGN.md §6e): two 3-member hivemind clusters on 127.0.0.1, one plain and one
# with TLS (certificates from `hivemind tls`, mutual TLS between members), driven by the same
# load generator (`hivemind-bench kv`, over https with the cluster CA for the TLS one), 1/16/64
# clients, DURATION seconds per phase (writes, then linearizable reads), in interleaved rounds
# as tests/bench/kv-vs-etcd.sh does. Then the join time of a host member, plain and TLS, TRIALS
# times each: from the process start until the member answers `admitted` (polled every 10 ms).
# Writes the results into BENCHMARKS.md (or $OUT) between the kv-tls markers.
#
# Usage: tests/bench/kv-tls.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-3}
TRIALS=${TRIALS:-5}
CLIENTS=${CLIENTS:-"1 16 64"}
OUT=${OUT:-BENCHMARKS.md}
cargo build --release --quiet -p hivemind -p hivemind-bench
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind
BENCH=${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind-bench
WORK=$(mktemp -d /var/tmp/hivemind-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

PKI=$WORK/pki
$BIN tls ca create --dir "$PKI" >/dev/null
# Each member its own certificate (DESIGN.md §6e-2): the CP members' marked --control-plane,
# each joining host's its own name.
for n in cp0 cp1 cp2; do $BIN tls cert create --server --control-plane --name "$n" --dir "$PKI" >/dev/null; done
for t in $(seq 1 "$TRIALS"); do $BIN tls cert create --server --name "host-$t" --dir "$PKI" >/dev/null; done
CA=$PKI/ca.pem


# plain: 17700.., tls: 18700..
declare -A BASE=([plain]=17700 [tls]=18700)
declare -A SCHEME=([plain]=http [tls]=https)
tls_args() { # name
  echo "--tls-cert $PKI/$1.pem --tls-key $PKI/$1-key.pem --tls-ca $CA"
}
CP_PIDS=()
for kind in plain tls; do
  b=${BASE[$kind]}
  join=""; for i in 0 1 2; do join="$join --join 127.0.0.1:$((b + 10*i))"; done
  for i in 0 1 2; do
    extra=""; [ "$kind" = tls ] && extra=$(tls_args "cp$i")
    # shellcheck disable=SC2086
    $BIN agent --name "cp$i" --data-dir "$WORK/$kind$i" --http-port $((b + 10*i)) --gossip-port $((b + 10*i + 1)) \
      --dns-port $((b + 10*i + 3)) --control-plane --bootstrap-expect 3 $join $extra --log-level warn \
      >>"$WORK/$kind$i.log" 2>&1 &
    PIDS+=($!); CP_PIDS+=($!)
  done
done
for kind in plain tls; do
  for i in 0 1 2; do
    wait_http "${SCHEME[$kind]}://127.0.0.1:$((${BASE[$kind]} + 10*i))/v1/cp/status" 'd["health"]=="healthy" and d["leader"]' --cacert "$CA"
  done
done

endpoints() { # kind -> endpoints, followers first
  local b=${BASE[$1]} leader eps="" last=""
  leader=$(curl -fsS --cacert "$CA" "${SCHEME[$1]}://127.0.0.1:$b/v1/cp/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["name"][2:])')
  for i in 0 1 2; do
    if [ "$i" = "$leader" ]; then last="127.0.0.1:$((b + 10*i))"; else eps="${eps}127.0.0.1:$((b + 10*i)),"; fi
  done
  echo "$eps$last"
}
declare -A EPS=([plain]=$(endpoints plain) [tls]=$(endpoints tls))
echo "plain endpoints ${EPS[plain]}; tls endpoints ${EPS[tls]}"

run_bench() { # kind clients
  local ca=""; [ "$1" = tls ] && ca="--ca-file $CA"
  # shellcheck disable=SC2086
  $BENCH kv --target hivemind --endpoints "${EPS[$1]}" --clients "$2" --duration "${DURATION}s" --value-size 256 $ca --json
}
RESULTS=$WORK/results.jsonl
for r in $(seq 1 "$ROUNDS"); do
  order="plain tls"; [ $((r % 2)) = 0 ] && order="tls plain"
  for c in $CLIENTS; do
    for kind in $order; do
      wait_idle "${CP_PIDS[@]}"
      echo "round $r, $kind, $c clients"
      run_bench "$kind" "$c" | python3 -c "import json,sys; d=json.load(sys.stdin); d['round']=$r; d['kind']='$kind'; print(json.dumps(d))" | tee -a "$RESULTS"
    done
  done
done

# join time: a host member started and admitted, TRIALS times per kind (interleaved)
JOINS=$WORK/joins.txt
for t in $(seq 1 "$TRIALS"); do
  for kind in plain tls; do
    b=${BASE[$kind]}
    port=$((b + 50 + t))
    extra=""; [ "$kind" = tls ] && extra=$(tls_args "host-$t")
    start=$(date +%s%N)
    # shellcheck disable=SC2086
    $BIN agent --name "host-$t" --data-dir "$WORK/join-$kind-$t" --http-port "$port" --gossip-port $((port + 100)) \
      --dns-port $((port + 200)) --roles host --join "127.0.0.1:$b" $extra --log-level warn >>"$WORK/join.log" 2>&1 &
    pid=$!; PIDS+=($pid)
    for _ in $(seq 1 3000); do
      if curl -fsS --cacert "$CA" "${SCHEME[$kind]}://127.0.0.1:$port/v1/status" 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["admitted"] else 1)' 2>/dev/null; then break; fi
      sleep 0.01
    done
    end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    echo "join $kind trial $t: $ms ms"
    echo "$kind $ms" >>"$JOINS"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  done
done

# --- report ---
python3 - "$OUT" "$RESULTS" "$JOINS" "$DURATION" "$ROUNDS" "$TRIALS" <<'PY'
import json, sys, statistics, datetime, re
out, results_path, joins_path, duration, rounds, trials = sys.argv[1:7]
runs = {}
for line in open(results_path):
    d = json.loads(line)
    runs.setdefault((d["kind"], d["clients"]), []).append(d)
def median_run(kind, clients, phase):
    rs = sorted(runs[(kind, clients)], key=lambda d: d[phase]["ops_per_sec"])
    return rs[len(rs) // 2][phase]
rows = []
for c in sorted({c for _, c in runs}):
    for phase in ("writes", "reads"):
        p, t = median_run("plain", c, phase), median_run("tls", c, phase)
        errors = p["errors"] + t["errors"]
        rows.append(f"| {c} | {phase} | {p['ops_per_sec']:,.0f}/s | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} "
                    f"| {t['ops_per_sec']:,.0f}/s | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} "
                    f"| {t['ops_per_sec'] / p['ops_per_sec']:.2f}x | {errors} |")
joins = {}
for line in open(joins_path):
    kind, ms = line.split()
    joins.setdefault(kind, []).append(int(ms))
def join_row(kind):
    xs = sorted(joins[kind])
    return f"| {kind} | {xs[len(xs) // 2]} | {xs[0]} | {xs[-1]} | {', '.join(map(str, joins[kind]))} |"
text = f"""<!-- kv-tls:begin (written by tests/bench/kv-tls.sh) -->
## KV with TLS against without (3 members each)

Command: `tests/bench/kv-tls.sh` (DURATION={duration} s per phase, ROUNDS={rounds}, TRIALS={trials}),
on this project's 2-core machine, {datetime.date.today()}. Two 3-member hivemind clusters on
127.0.0.1 for the whole benchmark, one plain, one with TLS from `hivemind tls` (every client
connection, internal route and Raft stream TLS 1.3, mutual between members), driven in turn by
`hivemind-bench kv` (interleaved rounds, each phase starting once the six members are idle; the
TLS cluster over `https://` with `--ca-file`). Every member holds a certificate naming it (the
CP members' marked `--control-plane`), and the control plane checks that identity on every
internal call (DESIGN.md §6e-2). Each client keeps one connection (the handshake
is paid once per client), 256-byte values, members ordered followers first. Median round of
{rounds} by ops/s; errors summed over both. Six members share the two cores here (three in the etcd
comparison), so the absolute rates are lower than there; the ratio is what this measures.

| clients | phase | plain | p50 ms | p99 ms | TLS | p50 ms | p99 ms | TLS/plain | errors |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

Join time of a host member (process start until its `/v1/status` says `admitted`, polled every
10 ms; includes the process start), {trials} trials each, interleaved:

| cluster | median ms | min ms | max ms | every trial (ms) |
|---|---|---|---|---|
{join_row("plain")}
{join_row("tls")}
<!-- kv-tls:end -->"""
doc = open(out).read()
if "<!-- kv-tls:begin" in doc:
    doc = re.sub(r"<!-- kv-tls:begin.*?<!-- kv-tls:end -->", lambda _: text, doc, flags=re.S)
else:
    doc = doc.rstrip("\n") + "\n\n" + text + "\n"
open(out, "w").write(doc)
print(text)
PY
