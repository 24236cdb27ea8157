#!/usr/bin/env bash
# On the GPU machine: one change measured side by side. transformers on random 7B-shaped
# weights (the peer), then `bench` of two builds of lychee-rerank on the same weights and
# photo size, each at the same batch sizes, one after the other in the same run.
#
#   (device) OUT=/tmp/out BEFORE=.gpu/before.xz AFTER=.gpu/lychee-rerank.xz bash scripts/gpu_ab.sh
set -u
. scripts/gpu_session.sh ab-log.txt
export CUDA_CACHE_PATH=/tmp/jit-cache-ab
PHOTOS=${PHOTOS:-64}
BATCHES=${BATCHES:-1 8}
unpack_builds
step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step "transformers, random 7B-shaped weights (saved to $R7B)"
rm -rf "$R7B"
timeout 420 python3 scripts/bench_transformers.py --save-random "$R7B" --photos "$PHOTOS" \
  --batches "$(echo $BATCHES | tr ' ' ,)" --json "$OUT/ab_transformers.json" | tail -n 3
for side in before after; do
  for b in $BATCHES; do
    step "lychee-rerank $side, batch $b"
    timeout 300 "/tmp/lychee-$side" bench --model "$R7B" --photos "$PHOTOS" --batch "$b" --json "$OUT/ab_${side}_b$b.json" > /dev/null
    python3 -c "import json; r=json.load(open('$OUT/ab_${side}_b$b.json')); print(json.dumps({k: r.get(k) for k in ['photos','batch','visual_tokens','photos_per_s','ms_per_photo','first_score_ms']}))"
  done
done
step "the same scores? both builds rank the same 32 photos"
mkdir -p /tmp/ab-photos && python3 -c "import sys; sys.path.insert(0, 'scripts'); from bench_transformers import synthetic_photos; from pathlib import Path; synthetic_photos(Path('/tmp/ab-photos'), 32, 1024, 768)"
for side in before after; do
  timeout 300 "/tmp/lychee-$side" rank --model "$R7B" --no-cache --batch 8 --query "a red umbrella on a sunny beach" --json /tmp/ab-photos > "$OUT/ab_rank_$side.jsonl" 2> /dev/null
done
python3 - "$OUT/ab_rank_before.jsonl" "$OUT/ab_rank_after.jsonl" <<'PY'
import json, sys
a, b = [{(l := json.loads(s))["path"]: l["score"] for s in open(f) if '"score"' in s} for f in sys.argv[1:]]
print(json.dumps({"photos": len(a), "identical": sum(a[p] == b.get(p) for p in a),
                  "max_abs_diff": max(abs(a[p] - b[p]) for p in a if p in b)}))
PY
step done
