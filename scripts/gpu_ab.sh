#!/usr/bin/env bash
# On the GPU machine: one change measured side by side. transformers on random 7B-shaped
# weights (the peer), then `bench` of two builds of lychee-rerank on the same weights and
# photo size, each at the same batch sizes, one after the other in the same run.
#
#   (device) OUT=/tmp/out BEFORE=.gpu/before.xz AFTER=.gpu/lychee-rerank.xz bash scripts/gpu_ab.sh
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/ab-log.txt") 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CUDA_CACHE_PATH=/tmp/jit-cache-ab
R7B=/tmp/rand7b
PHOTOS=${PHOTOS:-64}
BATCHES=${BATCHES:-1 8}
step() { echo; echo "=== $* ($(date +%T))"; }
for side in before after; do
  src=${BEFORE:-.gpu/before.xz}; [ "$side" = after ] && src=${AFTER:-.gpu/lychee-rerank.xz}
  xz -dc "$src" > "/tmp/lychee-$side" && chmod +x "/tmp/lychee-$side"
done
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
step done
