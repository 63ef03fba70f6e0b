#!/usr/bin/env bash
# PUT latency while the bench's region splits, beside the same load without splits
# (issue 17: "p99 PUT during a region split <= 2x the steady p99, 0 errors").
#
#   scripts/bench/split_p99.sh [DATA_DIR]
#
# Needs a running `kura dev --data-dir DATA_DIR` (a release build for real figures; the
# `kura` on PATH, or KURA=path). Runs `kura bench put` twice with the same load (4 KiB
# objects, 16 concurrent, bucket `split-p99`): a steady phase, then a phase during which
# the region holding the run's keys is split every SPLIT_EVERY seconds (SPLITS times),
# online, through `pdctl operator add split-region`. Prints both reports and
# `kura bench compare steady split`; the JSON files stay in OUT (default: a temp dir).
set -euo pipefail

DATA_DIR=${1:-./kura-data}
KURA=${KURA:-kura}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
SECS=${SECS:-30}
SPLITS=${SPLITS:-6}
SPLIT_EVERY=${SPLIT_EVERY:-4}
BUCKET=split-p99

pdctl() { "$KURA" pdctl --cluster "$DATA_DIR/cluster.json" "$@"; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
load=(--data-dir "$DATA_DIR" --bucket "$BUCKET" --obj.size 4KiB --concurrent 16
      --duration "${SECS}s" --no-limits)

echo "== steady: ${SECS} s of PUTs, no split"
"$KURA" bench put "${load[@]}" --prefix steady/ --json "$OUT/steady.json"

echo "== the same load, splitting the region of the run's keys $SPLITS times, every ${SPLIT_EVERY} s"
"$KURA" bench put "${load[@]}" --prefix split/ --json "$OUT/split.json" &
bench=$!
sleep "$SPLIT_EVERY"
for i in $(seq 1 "$SPLITS"); do
  # The region holding the newest keys: the writes land there.
  region=$(pdctl region key "$BUCKET" "split/obj-~" | json_field '["id"]')
  if out=$(pdctl operator add split-region "$region" 2>&1); then
    echo "split $i: region $region -> $(echo "$out" | json_field '["regions"][1]["id"]')"
  else
    echo "split $i: region $region not split: $out"
  fi
  sleep "$SPLIT_EVERY"
done
wait "$bench"

echo "== steady vs during splits"
"$KURA" bench compare "$OUT/steady.json" "$OUT/split.json"
echo "results: $OUT"
