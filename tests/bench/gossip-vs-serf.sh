#!/usr/bin/env bash
# Gossip next to serf: failure detection and join dissemination for N = 10 and 50 with the
# lan and local profiles, both systems in the same run on this machine (processes on loopback).
# Needs `serf` (apt-get install serf). Prints one line per (system, profile, N); JSON with JSON=1.
# TRIALS (default 5) kills per configuration.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p hivemind -p hivemind-bench
TRIALS="${TRIALS:-5}"
json=()
[[ "${JSON:-0}" == 1 ]] && json=(--json)
for n in 10 50; do
  for profile in local lan; do
    "${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind-bench" gossip "${json[@]}" --members "$n" --profile "$profile" \
      --systems hivemind,serf --trials "$TRIALS"
  done
done
