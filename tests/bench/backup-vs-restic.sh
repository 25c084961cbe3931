#!/usr/bin/env bash
# The backup role against restic (DESIGN.md §6d-2), back to back on the same real tree: a copy
# of cargo registry sources (about SOURCES_MIB) plus /usr/lib/python3. restic (Debian's) backs
# up into a local repository (format v2: compressed); hivemind backs up from an owner member
# onto 3 spaces with R=2, every process on 127.0.0.1, one control-plane member. Per round, on a
# fresh copy of the tree, a fresh repository and a fresh cluster:
#   first backup (both), restore (both, checked identical with diff -r), ~1% change (every
#   100th file gets a line, 20 files are added), second backup (both), an unchanged rerun
#   (hivemind: bytes sent), and the owner's peak RSS (VmHWM) over the whole round.
# Bytes per copy: restic's repository size (du), hivemind's pack bytes on the spaces / R.
# Writes the results into BENCHMARKS.md (or $OUT) between the backup-vs-restic markers.
#
# Usage: tests/bench/backup-vs-restic.sh   (ROUNDS=3 SOURCES_MIB=150)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
ROUNDS=${ROUNDS:-3}
SOURCES_MIB=${SOURCES_MIB:-150}
OUT=${OUT:-BENCHMARKS.md}
command -v restic >/dev/null || { echo "restic is not installed (apt-get install restic)" >&2; exit 1; }
cargo build --release --quiet -p hivemind
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/hivemind
WORK=$(mktemp -d /var/tmp/hivemind-backup-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
RESULTS=$WORK/results.jsonl

# The source tree, built once: whole crates until SOURCES_MIB, then /usr/lib/python3.
SRC=$WORK/source
mkdir -p "$SRC/cargo" "$SRC/python3"
total=0 # KiB
for crate in "$HOME"/.cargo/registry/src/*/*/; do
  size=$(du -sk "$crate" | cut -f1)
  [ $((total + size)) -gt $((SOURCES_MIB * 1024)) ] && continue
  cp -a "$crate" "$SRC/cargo/"
  total=$((total + size))
  [ "$total" -ge $((SOURCES_MIB * 1024 - 1024)) ] && break
done
cp -a /usr/lib/python3/. "$SRC/python3/"
TREE_BYTES=$(find "$SRC" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
TREE_FILES=$(find "$SRC" -type f | wc -l)
echo "tree: $TREE_FILES files, $TREE_BYTES bytes"

secs() { python3 -c 'import time; print(time.monotonic())'; }
elapsed() { python3 -c "import time; print(round(time.monotonic() - $1, 2))"; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# ~1%: a line appended to every 100th file (sorted), 20 new files of 10 KiB.
change_tree() { # dir
  find "$1" -type f | sort | awk 'NR % 100 == 0' | while read -r f; do echo "changed by the benchmark" >>"$f"; done
  mkdir -p "$1/added"
  for i in $(seq 1 20); do head -c 10240 /dev/urandom >"$1/added/f$i"; done
}

for round in $(seq 1 "$ROUNDS"); do
  R=$WORK/round$round
  mkdir -p "$R"
  TREE=$R/tree
  # Earlier rounds' writes flushed and the cache emptied, then the copy warms it for both.
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  cp -a "$SRC" "$TREE"

  # --- restic, local repository ---
  export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$R/restic
  restic init --repository-version 2 -q
  t=$(secs); restic backup -q "$TREE"; restic_first=$(elapsed "$t")
  restic_repo1=$(du -sb "$R/restic" | cut -f1)
  t=$(secs); restic restore latest -q --target "$R/restic-restored"; restic_restore=$(elapsed "$t")
  diff -r --no-dereference "$TREE" "$R/restic-restored$TREE" >/dev/null

  # --- hivemind: 1 CP member, 3 spaces, an owner ---
  base=$((19000 + round * 100))
  $BIN agent --name cp0 --data-dir "$R/cp0" --http-port "$base" --gossip-port $((base + 1)) \
    --dns-port $((base + 3)) --control-plane --bootstrap-expect 1 --log-level warn >>"$R/cp0.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$base/v1/cp/status" 'd["health"]=="healthy" and d["leader"]'
  for i in 1 2 3; do
    p=$((base + 10 * i))
    $BIN agent --name "space-$i" --data-dir "$R/space-$i" --http-port "$p" --gossip-port $((p + 1)) \
      --dns-port $((p + 3)) --join "127.0.0.1:$base" --gossip-profile local --roles backup \
      --backup-space 4GiB --log-level warn >>"$R/space-$i.log" 2>&1 &
    PIDS+=($!)
  done
  op=$((base + 50))
  $BIN agent --name owner --data-dir "$R/owner" --http-port "$op" --gossip-port $((op + 1)) \
    --dns-port $((op + 3)) --join "127.0.0.1:$base" --gossip-profile local --roles backup \
    --backup-path "$TREE" --log-level warn >>"$R/owner.log" 2>&1 &
  OWNER_PID=$!; PIDS+=($OWNER_PID)
  wait_http "http://127.0.0.1:$base/v1/backup/spaces" 'len(d)==3'
  wait_http "http://127.0.0.1:$op/v1/roles/backup/status" 'd["owner"]'
  wait_idle "${PIDS[@]: -5}"
  rss_idle_kib=$(awk '/VmRSS/ {print $2}' "/proc/$OWNER_PID/status")
  hm() { $BIN backup "$@" --http-addr "127.0.0.1:$op"; }
  stored() { curl -fsS "http://127.0.0.1:$base/v1/backup/spaces" | python3 -c 'import json,sys; print(sum(s["stored"] for s in json.load(sys.stdin)))'; }

  t=$(secs); first=$(hm run --json); hm_first=$(elapsed "$t")
  hm_sent1=$(echo "$first" | json_field '["bytes_sent"]')
  snap=$(echo "$first" | json_field '["snapshot"]')
  rss_backup_kib=$(awk '/VmHWM/ {print $2}' "/proc/$OWNER_PID/status")
  sleep 3 # the spaces report their stored bytes every 2 s
  hm_stored1=$(stored)
  t=$(secs); hm restore "$snap" --to "$R/hm-restored" --json >/dev/null; hm_restore=$(elapsed "$t")
  diff -r --no-dereference "$TREE" "$R/hm-restored$TREE" >/dev/null

  # --- the ~1% change, both ---
  change_tree "$TREE"
  t=$(secs); restic backup -q "$TREE"; restic_second=$(elapsed "$t")
  restic_repo2=$(du -sb "$R/restic" | cut -f1)
  t=$(secs); second=$(hm run --json); hm_second=$(elapsed "$t")
  hm_sent2=$(echo "$second" | json_field '["bytes_sent"]')
  sleep 3
  hm_stored2=$(stored)
  t=$(secs); third=$(hm run --json); hm_unchanged=$(elapsed "$t")
  hm_sent3=$(echo "$third" | json_field '["bytes_sent"]')
  rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$OWNER_PID/status")

  python3 - "$round" "$restic_first" "$restic_restore" "$restic_second" "$restic_repo1" "$restic_repo2" \
    "$hm_first" "$hm_restore" "$hm_second" "$hm_unchanged" "$hm_sent1" "$hm_sent2" "$hm_sent3" \
    "$hm_stored1" "$hm_stored2" "$rss_kib" "$rss_idle_kib" "$rss_backup_kib" >>"$RESULTS" <<'PY'
import json, sys
a = sys.argv[1:]
keys = ["round", "restic_first", "restic_restore", "restic_second", "restic_repo1", "restic_repo2",
        "hm_first", "hm_restore", "hm_second", "hm_unchanged", "hm_sent1", "hm_sent2", "hm_sent3",
        "hm_stored1", "hm_stored2", "rss_kib", "rss_idle_kib", "rss_backup_kib"]
print(json.dumps({k: float(v) for k, v in zip(keys, a)}))
PY
  tail -1 "$RESULTS"
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
  rm -rf "$R"
done

# --- report ---
python3 - "$OUT" "$RESULTS" "$ROUNDS" "$TREE_FILES" "$TREE_BYTES" "$SOURCES_MIB" <<'PY'
import json, sys, statistics, datetime, re
out, results_path, rounds, files, tree_bytes, sources = sys.argv[1:7]
rs = [json.loads(l) for l in open(results_path)]
med = lambda k: statistics.median(r[k] for r in rs)
mib = lambda b: f"{b / 2**20:.1f} MiB"
R = 2
rows = [
    ("first backup", f"{med('restic_first'):.1f} s", f"{med('hm_first'):.1f} s",
     med('hm_first') / med('restic_first'), "≤ 1.5x"),
    ("restore", f"{med('restic_restore'):.1f} s", f"{med('hm_restore'):.1f} s",
     med('hm_restore') / med('restic_restore'), "≤ 1.2x"),
    ("second backup (~1% changed)", f"{med('restic_second'):.1f} s", f"{med('hm_second'):.1f} s",
     med('hm_second') / med('restic_second'), "—"),
    ("bytes per copy, first backup", f"repository {mib(med('restic_repo1'))}",
     f"{mib(med('hm_stored1') / R)} on the spaces ({mib(med('hm_sent1') / R)} sent)",
     med('hm_stored1') / R / med('restic_repo1'), "≤ 1.1x"),
    ("bytes per copy after the change", f"repository +{mib(med('restic_repo2') - med('restic_repo1'))}",
     f"+{mib((med('hm_stored2') - med('hm_stored1')) / R)} on the spaces ({mib(med('hm_sent2') / R)} sent)",
     (med('hm_sent2') / R) / (med('restic_repo2') - med('restic_repo1')), "≤ 1.1x (sent)"),
]
table = "\n".join(f"| {a} | {b} | {c} | {d:.2f}x | {e} |" for a, b, c, d, e in rows)
every = "\n".join(
    f"| {int(r['round'])} | {r['restic_first']:.1f} / {r['hm_first']:.1f} | {r['restic_restore']:.1f} / {r['hm_restore']:.1f} "
    f"| {r['restic_second']:.1f} / {r['hm_second']:.1f} | {mib(r['restic_repo1'])} / {mib(r['hm_stored1'] / R)} "
    f"| +{mib(r['restic_repo2'] - r['restic_repo1'])} / {mib(r['hm_sent2'] / R)} sent | {r['hm_sent3'] / 1024:.1f} KiB in {r['hm_unchanged']:.1f} s | {r['rss_backup_kib'] / 1024:.0f} / {r['rss_kib'] / 1024:.0f} MiB |"
    for r in rs)
text = f"""<!-- backup-vs-restic:begin (written by tests/bench/backup-vs-restic.sh) -->
## Backup: the backup role vs restic (issue 30)

Command: `tests/bench/backup-vs-restic.sh` (ROUNDS={rounds}, SOURCES_MIB={sources}), on this
project's 2-core machine, {datetime.date.today()}. The tree: whole crates from the cargo registry
sources (about {sources} MiB) plus `/usr/lib/python3`, {int(files):,} files, {int(tree_bytes) / 2**20:.0f} MiB,
copied afresh each round. restic {{restic_version}} backs up into a local repository (format v2,
compression `auto`, its defaults otherwise); hivemind backs up from an owner member onto 3 spaces
with R=2, one control-plane member, all on 127.0.0.1 (so hivemind also writes every byte twice
and sends it over loopback). Both restores are checked identical with `diff -r`. The change:
a line appended to every 100th file, 20 new files of 10 KiB. Bytes per copy: restic's
repository size (`du -sb`); hivemind's pack bytes on the spaces (the ledger's `stored`) / R,
and what the run sent / R. Median of {rounds} rounds.

| step | restic | hivemind | ratio | target |
|---|---|---|---|---|
{table}
| unchanged rerun, bytes sent | — | {med('hm_sent3') / 1024:.1f} KiB | — | ≤ 64 KiB |
| owner peak RSS during the first backup (VmHWM; idle: {med('rss_idle_kib') / 1024:.0f} MiB) | — | {med('rss_backup_kib') / 1024:.0f} MiB | — | ≤ 100 MiB |
| owner peak RSS over the round, with the restore | — | {med('rss_kib') / 1024:.0f} MiB | — | — |

The restore raises the owner's peak: glibc's per-thread arenas keep what one thread freed
(75 MiB over the round with `MALLOC_ARENA_MAX=1`; jemalloc and mimalloc measured no better).

Every round (restic / hivemind):

| round | first backup s | restore s | second backup s | per copy, first | per copy, change | unchanged rerun | owner RSS backup / round |
|---|---|---|---|---|---|---|---|
{every}
<!-- backup-vs-restic:end -->"""
import subprocess
text = text.replace("{restic_version}", subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.split()[1])
import os
doc = open(out).read() if os.path.exists(out) else ""
if "<!-- backup-vs-restic:begin" in doc:
    doc = re.sub(r"<!-- backup-vs-restic:begin.*?<!-- backup-vs-restic:end -->", lambda _: text, doc, flags=re.S)
else:
    doc = doc.rstrip("\n") + "\n\n" + text + "\n"
open(out, "w").write(doc)
print(text)
PY
