# Shared by the benchmark scripts (sourced): waiting for a member and for idle processes.

wait_http() { # url python-predicate-on-d [curl args...]
  local url=$1 pred=$2; shift 2
  for _ in $(seq 1 300); do
    if curl -fsS "$@" "$url" 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($pred) else 1)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2; return 1
}

wait_idle() { # until the given processes used under 20% of a core over one second (30 s at most)
  python3 - "$@" <<'IDLE'
import sys, time
def ticks():
    total = 0
    for pid in sys.argv[1:]:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total
for _ in range(30):
    before = ticks(); time.sleep(1)
    if ticks() - before < 20:
        break
IDLE
}
