#!/usr/bin/env bash
# A hivemind cluster of separate processes on loopback: 3 control-plane members, $HOSTS host
# members (web-1..) and 2 dns machines sharing node "ns" (one holds the keygroup, the other
# follows it and takes over if it fails).
#
#   deploy/local-cluster.sh up       start it and wait until it is healthy
#   deploy/local-cluster.sh status   processes, `hivemind status` and `hivemind members`;
#                                    exit 0 only when every process runs and the cluster is healthy
#   deploy/local-cluster.sh down     stop every process it started (SIGTERM, then SIGKILL after
#                                    20 s); `down --purge` also removes the data
#
# Settings (environment):
#   HIVEMIND_BIN   the binary (default: target/release/hivemind, target/debug/hivemind, or
#                  `hivemind` on PATH)
#   CLUSTER_DIR    data, logs and pid files (default: ${TMPDIR:-/tmp}/hivemind-local-cluster)
#   BASE_PORT      first port (default 7800): member i listens on BASE_PORT+10*i (HTTP) and +1
#                  (gossip); the dns machines answer DNS on BASE_PORT+10*i+3
#   HOSTS          host members (default 2)
#   PROFILE        gossip profile (default local)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
CLUSTER_DIR="${CLUSTER_DIR:-${TMPDIR:-/tmp}/hivemind-local-cluster}"
BASE_PORT="${BASE_PORT:-7800}"
HOSTS="${HOSTS:-2}"
PROFILE="${PROFILE:-local}"

find_bin() {
  if [[ -n "${HIVEMIND_BIN:-}" ]]; then echo "$HIVEMIND_BIN"; return; fi
  for candidate in "$repo/target/release/hivemind" "$repo/target/debug/hivemind"; do
    if [[ -x "$candidate" ]]; then echo "$candidate"; return; fi
  done
  if command -v hivemind >/dev/null; then command -v hivemind; return; fi
  echo "no hivemind binary: run 'cargo build --release' or set HIVEMIND_BIN" >&2
  exit 1
}

# name, roles, node, extra flags... in start order (control plane first).
members() {
  echo "cp1 - cp1"
  echo "cp2 - cp2"
  echo "cp3 - cp3"
  for i in $(seq 1 "$HOSTS"); do echo "web-$i host web-$i"; done
  echo "ns-1 dns ns"
  echo "ns-2 dns ns"
}

http_port() { echo $((BASE_PORT + 10 * $1)); }
cp_joins() { echo "127.0.0.1:$(http_port 0),127.0.0.1:$(http_port 1),127.0.0.1:$(http_port 2)"; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_member() {
  local index="$1" name="$2" roles="$3" node="$4"
  local port; port="$(http_port "$index")"
  local args=(agent --name "$name" --node "$node" --data-dir "$CLUSTER_DIR/$name"
    --http-port "$port" --gossip-port $((port + 1)) --gossip-profile "$PROFILE"
    --join "$(cp_joins)")
  if [[ "$roles" == "-" ]]; then
    args+=(--control-plane --bootstrap-expect 3)
  else
    args+=(--roles "$roles")
  fi
  if [[ "$roles" == "dns" ]]; then args+=(--dns-port $((port + 3))); fi
  nohup "$BIN" "${args[@]}" >"$CLUSTER_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$CLUSTER_DIR/$name.pid"
}

# Polls "$@" (a command) until it succeeds, for at most $1 seconds.
wait_until() {
  local seconds="$1"; shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then return 1; fi
    sleep 0.2
  done
}

all_alive() {
  local want; want="$(members | wc -l)"
  local got
  got="$("$BIN" members --json --http-addr "127.0.0.1:$(http_port 0)" |
    grep -o '"state": *"alive"' | wc -l)"
  [[ "$got" -eq "$want" ]]
}

up() {
  mkdir -p "$CLUSTER_DIR"
  for pid in "$CLUSTER_DIR"/*.pid; do
    if alive "$pid"; then
      echo "already up ($(basename "$pid" .pid) runs); run '$0 down' first" >&2
      exit 1
    fi
  done
  local index=0
  while read -r name roles node; do
    start_member "$index" "$name" "$roles" "$node"
    index=$((index + 1))
  done < <(members)
  local cp="127.0.0.1:$(http_port 0)"
  if ! wait_until 60 "$BIN" status --http-addr "$cp"; then
    echo "the control plane did not become healthy within 60 s; logs in $CLUSTER_DIR" >&2
    exit 1
  fi
  if ! wait_until 60 all_alive; then
    echo "not every member was admitted within 60 s; logs in $CLUSTER_DIR" >&2
    exit 1
  fi
  echo "hivemind local cluster up: $(members | wc -l) members, data and logs in $CLUSTER_DIR"
  echo "  HTTP (any member): http://$cp/   dashboard: http://$cp/"
  local ns1=$((HOSTS + 3))
  echo "  DNS: 127.0.0.1:$(( $(http_port "$ns1") + 3 )) and 127.0.0.1:$(( $(http_port $((ns1 + 1))) + 3 ))"
  echo "  try: $BIN members --http-addr $cp"
  echo "       dig @127.0.0.1 -p $(( $(http_port "$ns1") + 3 )) web-1.host.hivemind."
}

status() {
  local missing=0
  local index=0
  while read -r name _ _; do
    local pid="$CLUSTER_DIR/$name.pid"
    if alive "$pid"; then
      printf '  %-8s pid %-8s running   http 127.0.0.1:%s\n' "$name" "$(cat "$pid")" "$(http_port "$index")"
    else
      printf '  %-8s %-12s not running\n' "$name" ""
      missing=$((missing + 1))
    fi
    index=$((index + 1))
  done < <(members)
  echo
  local healthy=0
  "$BIN" status --http-addr "127.0.0.1:$(http_port 0)" || healthy=$?
  echo
  "$BIN" members --http-addr "127.0.0.1:$(http_port 0)" || true
  if ((missing > 0 || healthy != 0)); then
    exit 1
  fi
}

down() {
  # Role members first, the control plane last (it commits their leaves).
  local pids=()
  for name in $(members | awk '{print $1}' | tac); do
    local pid="$CLUSTER_DIR/$name.pid"
    if alive "$pid"; then
      pids+=("$(cat "$pid")")
      kill -TERM "$(cat "$pid")" 2>/dev/null || true
    fi
  done
  local deadline=$((SECONDS + 20))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "pid $pid still runs after 20 s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$CLUSTER_DIR"/*.pid
  if [[ "${1:-}" == "--purge" ]]; then
    rm -rf "$CLUSTER_DIR"
    echo "down; $CLUSTER_DIR removed"
  else
    echo "down (${#pids[@]} processes stopped); data and logs kept in $CLUSTER_DIR"
  fi
}

BIN="$(find_bin)"
case "${1:-}" in
  up) up ;;
  status) status ;;
  down) shift; down "$@" ;;
  *) echo "usage: $0 up|status|down [--purge]" >&2; exit 2 ;;
esac
