#!/usr/bin/env bash
# The workload set of issue 17, run by `kura bench` against ONE store, each result saved as
# JSON for scripts/peers/table.py:
#
#   scripts/peers/workloads.sh LABEL OUTDIR [extra kura bench flags...]
#
# The store is whatever `kura bench` targets: the AWS_* variables printed by
# `scripts/peers/<peer>.sh env`, or a dev cluster (`--data-dir DIR`, and unset AWS_*).
# SERVER_PIDS (comma-separated) makes the reports state that store's own CPU; for a dev
# cluster it is read from cluster.json. KURA (default `kura`), SECS (10), CONC (16).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,11p' "$0"; exit 2; }
LABEL=$1
OUT=$2
shift 2
KURA=${KURA:-kura}
SECS=${SECS:-10}
CONC=${CONC:-16}
mkdir -p "$OUT"
common=(--label "$LABEL" --concurrent "$CONC" --duration "${SECS}s" --no-limits "$@")
if [ -n "${SERVER_PIDS:-}" ]; then common+=(--server-pids "$SERVER_PIDS"); fi

run() {
  local name=$1
  shift
  echo "== $LABEL: $name" >&2
  "$KURA" bench "$@" "${common[@]}" --json "$OUT/$name.json" |
    grep -E '^\| (PUT|GET|DELETE|LIST) |server CPU' || true
}

run put-4KiB put --obj.size 4KiB
run get-4KiB get --obj.size 4KiB --objects 2000
run put-64KiB put --obj.size 64KiB
run put-1MiB put --obj.size 1MiB
run get-1MiB get --obj.size 1MiB --objects 200
run put-64MiB put --obj.size 64MiB
run get-64MiB get --obj.size 64MiB --objects 16
run delete-objects delete --obj.size 1KiB --objects 10000 --batch 100
