#!/usr/bin/env bash
# PUT 1 MiB latency tail on a fresh `kura dev` after the earlier phases of the issue-17
# workload set left deleted bytes behind (each bench phase deletes what it wrote), so the
# data nodes' compaction runs while the PUTs do; and how many bodies were written degraded.
#
#   scripts/bench/put_tail.sh LABEL [OUTDIR]
#
# Starts `kura dev` (the `kura` on PATH, or KURA=path; release for real figures) in a
# temp data dir on port PORT (19500), runs PUT 4 KiB, GET 4 KiB, PUT 64 KiB and two PUT
# 1 MiB phases (c=16, SECS=10 each), stops the cluster and prints each PUT phase's
# p50/p99/max with the data nodes' "segment compacted" and the gateway's degraded-write
# counts. JSON per phase, and those log lines (events.log), in OUTDIR/LABEL (default a
# temp dir). Alternate builds, run each several times: compaction starts at a random
# point of its first interval.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,14p' "$0"; exit 2; }
LABEL=$1
OUT=${2:-$(mktemp -d)}/$LABEL
KURA=${KURA:-kura}
PORT=${PORT:-19500}
SECS=${SECS:-10}
mkdir -p "$OUT"
DATA=$(mktemp -d)
"$KURA" dev --data-dir "$DATA" --port "$PORT" > "$OUT/dev.log" 2>&1 &
DEV=$!
# Under `set -e` a failing command ends a trap too: each step may fail here.
cleanup() {
  kill "$DEV" 2>/dev/null || true
  wait "$DEV" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 120); do grep -q "cluster ready" "$OUT/dev.log" && break; sleep 1; done
sleep 3
phases=("put-4KiB put --obj.size 4KiB" "get-4KiB get --obj.size 4KiB --objects 2000"
        "put-64KiB put --obj.size 64KiB" "put-1MiB put --obj.size 1MiB"
        "put-1MiB-again put --obj.size 1MiB")
for ph in "${phases[@]}"; do
  read -r -a args <<< "$ph"
  "$KURA" bench "${args[@]:1}" --data-dir "$DATA" --concurrent 16 --duration "${SECS}s" \
    --no-limits --json "$OUT/${args[0]}.json" > "$OUT/${args[0]}.txt" 2>&1
done
kill $DEV; wait $DEV 2>/dev/null || true
logs() { sed 's/\x1b\[[0-9;]*m//g' "$DATA"/logs/*.log; }
logs | grep -h 'segment compacted\|missing fragments' | sort > "$OUT/events.log" || true
echo "$LABEL: compactions $(logs | grep -c 'segment compacted' || true)," \
  "degraded writes $(logs | grep -c 'missing fragments' || true)"
for f in put-64KiB put-1MiB put-1MiB-again; do
  python3 - "$OUT/$f.json" "$f" <<'PY'
import json, sys
def lat(o):
    if isinstance(o, dict):
        if "p99" in o and "p50" in o:
            return o
        o = list(o.values())
    if isinstance(o, list):
        for v in o:
            r = lat(v)
            if r:
                return r
r = lat(json.load(open(sys.argv[1])))
print(f"  {sys.argv[2]}: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms")
PY
done
