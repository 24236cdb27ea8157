#!/usr/bin/env bash
# On the GPU machine: which batch size ranks fastest, the one `bench` picks from the free
# memory ("auto") beside fixed ones, alternating, on the saved random 7B-shaped checkpoint.
#
#   (device) OUT=/tmp/out ROUNDS=2 BATCHES="8 12 16 auto" bash scripts/gpu_batches.sh
set -u
. scripts/gpu_session.sh batches-log.txt
unpack_build
export CUDA_CACHE_PATH=/tmp/jit-cache-batches
PHOTOS=${PHOTOS:-256}
step machine
nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader
step "random 7B weights in the published layout (transformers, saved)"
[ -f "$R7B/config.json" ] || timeout 420 python3 scripts/bench_transformers_text.py --save-random "$R7B" \
  --documents 4 --tokens 20 --batches 4 > /dev/null
cat "$R7B"/*.safetensors > /dev/null
timeout 300 "$BIN" bench --model "$R7B" --photos 16 --batch 8 --json /tmp/warm.json > /dev/null
for size in ${SIZES:-1024x768 1280x1024}; do
  for round in $(seq "${ROUNDS:-2}"); do
    for b in ${BATCHES:-8 12 16 auto}; do
      arg="--batch $b"; [ "$b" = auto ] && arg=""
      timeout 300 "$BIN" bench --model "$R7B" --photos "$PHOTOS" --size "$size" $arg --json /tmp/b.json > /dev/null
      python3 -c "import json; r=json.load(open('/tmp/b.json')); print(json.dumps({'size': '$size', 'round': $round, 'asked': '$b', **{k: r.get(k) for k in ['batch','photos_per_s','first_score_ms','pool_mib_used_peak']}}))"
    done
  done
done
step done
