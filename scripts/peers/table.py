#!/usr/bin/env python3
"""Side-by-side table of `scripts/peers/workloads.sh` results.

    scripts/peers/table.py KURA_DIR PEER_DIR [PEER_DIR...]

Each DIR holds one store's `<workload>.json` files (kura bench --json). Prints a markdown
table per workload: the first store's figure, each peer's, and first / best peer; then the
stores' own CPU per MiB (or per request) where the runs recorded it.
"""
import json
import os
import sys

WORKLOADS = [
    ("put-4KiB", "ops/s"), ("get-4KiB", "ops/s"), ("put-64KiB", "ops/s"),
    ("put-1MiB", "MiB/s"), ("get-1MiB", "MiB/s"), ("put-64MiB", "MiB/s"),
    ("get-64MiB", "MiB/s"), ("delete-objects", "keys/s"),
]


def load(d, name):
    p = os.path.join(d, name + ".json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def figure(r, unit):
    t = r["total"]
    if unit == "MiB/s":
        return t["mib_per_s"]
    return t["ops_per_s"]


def cpu(r, unit):
    c = r.get("server_cpu")
    if not c:
        return ""
    if unit == "MiB/s":
        return "%.2f ms/MiB" % c["per_mib_ms"]
    return "%.0f µs/op" % c["per_request_us"]


def main(dirs):
    if len(dirs) < 2:
        print(__doc__)
        return 2
    runs = {d: {w: load(d, w) for w, _ in WORKLOADS} for d in dirs}
    labels = []
    for d in dirs:
        any_run = next((r for r in runs[d].values() if r), None)
        labels.append(any_run["label"] if any_run else os.path.basename(d))
    head = "| workload | unit | " + " | ".join(labels) + " | %s ÷ best peer |" % labels[0]
    print(head)
    print("|" + "---|" * (len(dirs) + 3))
    for w, unit in WORKLOADS:
        vals = [runs[d][w] for d in dirs]
        if vals[0] is None:
            continue
        cells = []
        for r in vals:
            if r is None:
                cells.append("–")
                continue
            f = figure(r, unit)
            p50 = r["total"]["latency_ms"]["p50"]
            err = r["total"]["errors"]
            cells.append("%s (p50 %.1f ms%s)" % (fmt(f), p50, ", %d errors" % err if err else ""))
        peers = [figure(r, unit) for r in vals[1:] if r is not None]
        best = max(peers) if peers else 0
        ratio = "%.2f" % (figure(vals[0], unit) / best) if best > 0 else "–"
        print("| %s | %s | %s | %s |" % (w, unit, " | ".join(cells), ratio))
    print()
    print("Server CPU of each store during the run (where its processes were known):")
    print()
    print("| workload | " + " | ".join(labels) + " |")
    print("|" + "---|" * (len(dirs) + 1))
    for w, unit in WORKLOADS:
        vals = [runs[d][w] for d in dirs]
        if vals[0] is None:
            continue
        print("| %s | %s |" % (w, " | ".join(cpu(r, unit) if r else "–" for r in vals)))
    return 0


def fmt(x):
    return "{:,.0f}".format(x) if x >= 100 else "{:.1f}".format(x)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
