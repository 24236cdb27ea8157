#!/usr/bin/env python3
"""Where the GPU waits, from an Nsight Systems timeline exported to SQLite.

    nsys profile -o /tmp/tl --trace cuda --sample none --cpuctxsw none lychee-rerank bench ...
    nsys export --type sqlite -o /tmp/tl.sqlite /tmp/tl.nsys-rep
    python3 scripts/timeline_gaps.py /tmp/tl.sqlite [--skip-s 2]

Takes every kernel, copy and memset the device ran, merges their intervals, and reports
the time between them: the total, the share of the span, and the longest gaps with what
ran before and after each (the pixel upload, the score read-back, the first kernel of a
batch). `--skip-s` leaves out the first seconds (loading and warm-up).
"""
import argparse
import sqlite3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--skip-s", type=float, default=0.0)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--min-us", type=float, default=20.0)
    args = ap.parse_args()
    con = sqlite3.connect(args.db)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    names = dict(con.execute("select id, value from StringIds")) if "StringIds" in tables else {}
    events = []  # (start, end, label)
    if "CUPTI_ACTIVITY_KIND_KERNEL" in tables:
        for start, end, name in con.execute(
            "select start, end, shortName from CUPTI_ACTIVITY_KIND_KERNEL"
        ):
            events.append((start, end, names.get(name, str(name))))
    kinds = {1: "copy to device", 2: "copy to host", 8: "copy on device"}
    copied = {}
    if "CUPTI_ACTIVITY_KIND_MEMCPY" in tables:
        for start, end, size, kind in con.execute(
            "select start, end, bytes, copyKind from CUPTI_ACTIVITY_KIND_MEMCPY"
        ):
            label = kinds.get(kind, f"copy kind {kind}")
            events.append((start, end, f"{label} {size / 1e6:.2f} MB"))
            total = copied.setdefault(label, [0, 0.0])
            total[0] += size
            total[1] += (end - start) / 1e3
    if "CUPTI_ACTIVITY_KIND_MEMSET" in tables:
        for start, end in con.execute("select start, end from CUPTI_ACTIVITY_KIND_MEMSET"):
            events.append((start, end, "memset"))
    if not events:
        raise SystemExit("no device activity in the timeline")
    events.sort()
    first = events[0][0] + int(args.skip_s * 1e9)
    events = [e for e in events if e[0] >= first]
    gaps = []
    busy_end, last_label = events[0][1], events[0][2]
    span_start = events[0][0]
    for start, end, label in events[1:]:
        if start > busy_end:
            gaps.append(((start - busy_end) / 1e3, last_label, label))
        if end >= busy_end:
            busy_end, last_label = end, label
    span = (busy_end - span_start) / 1e3
    idle = sum(g[0] for g in gaps)
    print(f"span {span / 1e3:.1f} ms, device idle {idle / 1e3:.2f} ms ({100 * idle / span:.1f} %), "
          f"in {len(gaps)} gaps; of them over {args.min_us:.0f} us: "
          f"{sum(g[0] for g in gaps if g[0] > args.min_us) / 1e3:.2f} ms in "
          f"{sum(1 for g in gaps if g[0] > args.min_us)}")
    for label, (size, us) in sorted(copied.items()):
        print(f"{label}: {size / 1e6:.1f} MB in {us / 1e3:.2f} ms")
    print(f"the {args.top} longest gaps (us, after, before):")
    for us, before, after in sorted(gaps, reverse=True)[: args.top]:
        print(f"  {us:9.1f}  after {before[:60]:60s}  before {after[:60]}")


if __name__ == "__main__":
    main()
