#!/usr/bin/env python3
"""Compares two rankings of the same photos (JSON lines with path, score, logit_yes,
logit_no): the largest differences of the logit difference z_yes - z_no and of the
score, and whether pairs of photos that one side separates clearly keep their order.

    python3 scripts/compare_scores.py ours.jsonl theirs.jsonl [--label NAME] [--gap 0.02]
"""

import argparse
import json
from pathlib import Path


def load(path: Path) -> dict:
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip().startswith("{"):
            r = json.loads(line)
            if "score" in r:
                rows[Path(r["path"]).name] = r
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ours", type=Path)
    ap.add_argument("theirs", type=Path)
    ap.add_argument("--label", default="")
    ap.add_argument("--gap", type=float, default=0.02, help="score gap that counts as clearly separated")
    args = ap.parse_args()
    ours, theirs = load(args.ours), load(args.theirs)
    common = sorted(set(ours) & set(theirs))
    if not common:
        raise SystemExit("no photo in common")
    d_logit = [abs((ours[p]["logit_yes"] - ours[p]["logit_no"]) - (theirs[p]["logit_yes"] - theirs[p]["logit_no"])) for p in common]
    d_score = [abs(ours[p]["score"] - theirs[p]["score"]) for p in common]
    spread = max(theirs[p]["score"] for p in common) - min(theirs[p]["score"] for p in common)
    pairs = inverted = 0
    for a in common:
        for b in common:
            if theirs[a]["score"] > theirs[b]["score"] + args.gap:
                pairs += 1
                inverted += ours[a]["score"] <= ours[b]["score"]
    same_top = max(common, key=lambda p: ours[p]["score"]) == max(common, key=lambda p: theirs[p]["score"])
    result = {
        "label": args.label,
        "photos": len(common),
        "max_abs_diff_logit_gap": max(d_logit),
        "mean_abs_diff_logit_gap": sum(d_logit) / len(d_logit),
        "max_abs_diff_score": max(d_score),
        "score_spread": spread,
        "separated_pairs": pairs,
        "inverted_pairs": inverted,
        "same_best_photo": same_top,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
