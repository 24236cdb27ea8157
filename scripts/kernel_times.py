#!/usr/bin/env python3
"""Where a batch's device time goes, from Nsight Compute's per-kernel durations.

    ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
        lychee-rerank bench --photos 8 --batch 8 ... > a.csv      # and --photos 16 > b.csv
    python3 scripts/kernel_times.py a.csv b.csv --photos 8

Two runs that differ only in the number of photos: the difference is the extra photos'
work alone (loading, the warm-up and the query prefix cancel out). Prints milliseconds per
photo by kind of kernel, then the kernels that take the most time.
"""
import argparse
import csv
import re
import sys
from collections import defaultdict

KINDS = [
    ("matrix products (cuBLAS)", re.compile(r"gemm|cutlass|xmma|nvjet|cublas|sm90_", re.I)),
    ("attention, vision (flash d80)", re.compile(r"flash_attention_d80")),
    ("attention, text (flash d128)", re.compile(r"flash_attention_d128")),
    ("attention, other", re.compile(r"flash_attention|segment_attention|softmax")),
    ("rms norm", re.compile(r"rms", re.I)),
    ("fused bias / swiglu / residual", re.compile(r"bias_|swiglu|residual")),
    ("rotary and q/k/v epilogue", re.compile(r"rope|rotary|qkv")),
    ("copies and casts", re.compile(r"copy|cast|convert|to_", re.I)),
]


def kind(name):
    for label, pat in KINDS:
        if pat.search(name):
            return label
    return "other"


def read(path):
    """{(kernel name, grid, block): [count, total ns]} from one ncu --csv file."""
    out = defaultdict(lambda: [0, 0.0])
    with open(path, newline="", errors="replace") as f:
        rows = csv.reader(line for line in f if line.startswith('"'))
        header = None
        for row in rows:
            if header is None:
                if "Kernel Name" in row and "Metric Value" in row:
                    header = {h: i for i, h in enumerate(row)}
                continue
            if len(row) != len(header) or row[header["Metric Name"]] != "gpu__time_duration.sum":
                continue
            try:
                ns = float(row[header["Metric Value"]].replace(",", ""))
            except ValueError:
                continue
            name = row[header["Kernel Name"]]
            key = (name, row[header.get("Grid Size", 0)], row[header.get("Block Size", 0)])
            out[key][0] += 1
            out[key][1] += ns
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="ncu CSV of the shorter run")
    ap.add_argument("more", nargs="?", help="ncu CSV of the run with --photos more")
    ap.add_argument("--photos", type=int, required=True, help="photos the second run has beyond the first (or, alone, the photos of the one run)")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    a = read(args.base)
    if not a:
        sys.exit(f"{args.base}: no kernel durations found")
    if args.more:
        b = read(args.more)
        diff = {k: [b[k][0] - a.get(k, [0, 0.0])[0], b[k][1] - a.get(k, [0, 0.0])[1]] for k in b}
    else:
        diff = dict(a)
    per = args.photos
    by_kind = defaultdict(float)
    for (name, _, _), (_, ns) in diff.items():
        by_kind[kind(name)] += ns
    total = sum(by_kind.values())
    print(f"device time per photo: {total / per / 1e6:.2f} ms (kernels only, {'difference of two runs' if args.more else 'one run'})")
    for label, ns in sorted(by_kind.items(), key=lambda x: -x[1]):
        print(f"  {label:<34} {ns / per / 1e6:7.2f} ms  {100 * ns / total:5.1f} %")
    print(f"\nthe {args.top} costliest kernels (ms per photo, launches per photo, grid, block):")
    for (name, grid, block), (count, ns) in sorted(diff.items(), key=lambda x: -x[1][1])[: args.top]:
        short = name if len(name) < 90 else name[:87] + "..."
        print(f"  {ns / per / 1e6:7.3f}  {count / per:6.1f}  {grid:>16} {block:>12}  {short}")


if __name__ == "__main__":
    main()
