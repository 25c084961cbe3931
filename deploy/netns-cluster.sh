#!/usr/bin/env bash
# A hivemind cluster where every member runs in its own network namespace with its own IP, as
# on separate machines (needs root and iproute2): 3 control-plane members, $HOSTS hosts and 2
# dns machines in node "ns", on a bridge `hm-br0` with 10.77.0.0/24 (the host is 10.77.0.1).
#
#   sudo deploy/netns-cluster.sh up       create the namespaces, start the members, wait
#   sudo deploy/netns-cluster.sh status   processes and `hivemind status`; exit 0 when healthy
#   sudo deploy/netns-cluster.sh down     stop the members, delete the namespaces and the bridge
#
# From the host, members are reachable at their IPs, e.g.
#   hivemind members --http-addr 10.77.0.11:7700
#   dig @10.77.0.31 web-1.host.hivemind.
# and a member can be cut off to see failure detection:
#   sudo ip netns exec hm-web-1 ip link set eth0 down
#
# Settings (environment): HIVEMIND_BIN, CLUSTER_DIR (default /tmp/hivemind-netns-cluster),
# HOSTS (default 2), PROFILE (default lan).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
CLUSTER_DIR="${CLUSTER_DIR:-/tmp/hivemind-netns-cluster}"
HOSTS="${HOSTS:-2}"
PROFILE="${PROFILE:-lan}"
BRIDGE=hm-br0

if [[ "$(id -u)" -ne 0 ]]; then
  echo "$0 needs root (network namespaces); run it with sudo" >&2
  exit 1
fi

find_bin() {
  if [[ -n "${HIVEMIND_BIN:-}" ]]; then echo "$HIVEMIND_BIN"; return; fi
  for candidate in "$repo/target/release/hivemind" "$repo/target/debug/hivemind"; do
    if [[ -x "$candidate" ]]; then echo "$candidate"; return; fi
  done
  command -v hivemind || { echo "no hivemind binary: cargo build --release" >&2; exit 1; }
}

# name roles node ip
members() {
  echo "cp1 - cp1 10.77.0.11"
  echo "cp2 - cp2 10.77.0.12"
  echo "cp3 - cp3 10.77.0.13"
  for i in $(seq 1 "$HOSTS"); do echo "web-$i host web-$i 10.77.0.$((20 + i))"; done
  echo "ns-1 dns ns 10.77.0.31"
  echo "ns-2 dns ns 10.77.0.32"
}

JOIN="10.77.0.11:7700,10.77.0.12:7700,10.77.0.13:7700"

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

make_namespace() {
  local name="$1" ip="$2"
  local ns="hm-$name" veth="hm-$name"
  ip netns add "$ns"
  # The host side keeps a short name (interface names are limited to 15 characters).
  ip link add "${veth:0:15}" type veth peer name eth0 netns "$ns"
  ip link set "${veth:0:15}" master "$BRIDGE" up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" route add default via 10.77.0.1
}

up() {
  mkdir -p "$CLUSTER_DIR"
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    echo "already up ($BRIDGE exists); run '$0 down' first" >&2
    exit 1
  fi
  ip link add "$BRIDGE" type bridge
  ip addr add 10.77.0.1/24 dev "$BRIDGE"
  ip link set "$BRIDGE" up
  while read -r name roles node ip; do
    make_namespace "$name" "$ip"
    local args=(agent --name "$name" --node "$node" --data-dir "$CLUSTER_DIR/$name"
      --bind "$ip" --http-port 7700 --gossip-port 7701 --gossip-profile "$PROFILE"
      --join "$JOIN"
      # Addresses on a bridge this script made, reachable from this machine only.
      --insecure)
    if [[ "$roles" == "-" ]]; then
      args+=(--control-plane --bootstrap-expect 3)
    else
      args+=(--roles "$roles")
    fi
    if [[ "$roles" == "dns" ]]; then args+=(--dns-port 53); fi
    nohup ip netns exec "hm-$name" "$BIN" "${args[@]}" >"$CLUSTER_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$CLUSTER_DIR/$name.pid"
  done < <(members)
  local deadline=$((SECONDS + 60))
  until "$BIN" status --http-addr 10.77.0.11:7700 >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "not healthy within 60 s; logs in $CLUSTER_DIR" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "hivemind netns cluster up: $(members | wc -l) members on $BRIDGE (10.77.0.0/24)"
  echo "  hivemind members --http-addr 10.77.0.11:7700"
  echo "  dig @10.77.0.31 web-1.host.hivemind."
}

status() {
  local missing=0
  while read -r name _ _ ip; do
    if alive "$CLUSTER_DIR/$name.pid"; then
      printf '  %-8s %-12s running\n' "$name" "$ip"
    else
      printf '  %-8s %-12s not running\n' "$name" "$ip"
      missing=$((missing + 1))
    fi
  done < <(members)
  local healthy=0
  "$BIN" status --http-addr 10.77.0.11:7700 || healthy=$?
  ((missing == 0 && healthy == 0))
}

down() {
  local pids=()
  while read -r name _ _ _; do
    if alive "$CLUSTER_DIR/$name.pid"; then
      pids+=("$(cat "$CLUSTER_DIR/$name.pid")")
      kill -TERM "${pids[-1]}" 2>/dev/null || true
    fi
  done < <(members | tac)
  local deadline=$((SECONDS + 20))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  while read -r name _ _ _; do
    ip netns del "hm-$name" 2>/dev/null || true
  done < <(members)
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -f "$CLUSTER_DIR"/*.pid
  echo "down (${#pids[@]} processes stopped); logs kept in $CLUSTER_DIR"
}

BIN="$(find_bin)"
case "${1:-}" in
  up) up ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 up|status|down" >&2; exit 2 ;;
esac
