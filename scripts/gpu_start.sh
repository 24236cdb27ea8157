#!/usr/bin/env bash
# On the GPU machine: how long a start takes (the 7B checkpoint from the page cache to the
# first score, with the driver's kernel cache empty and then filled), a 24 GB card (all of
# the GPU but ROOM_MIB held by another process) ranking 1280-token photos with the batch
# size chosen automatically, and the fidelity of bf16 scores against transformers f32 on
# photos of mixed sizes. The CUDA binary is carried as for scripts/gpu_run.sh.
#
#   (device) OUT=/tmp/out bash scripts/gpu_start.sh [start] [budget] [fidelity] [loadab]
#
# loadab: two builds' starts side by side ($BEFORE, $AFTER as for scripts/gpu_ab.sh),
# alternating, with the kernel cache filled first, then whether they score the same.
set -u
. scripts/gpu_session.sh start-log.txt
unpack_build
STEPS=${*:-start budget fidelity}
. scripts/ballast.sh
QUERY="a red umbrella on a sunny beach"

step machine
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
echo "cores: $(nproc); CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-unset}"

step "random 7B weights in the published layout (transformers, saved)"
[ -f "$R7B/config.json" ] || timeout 420 python3 scripts/bench_transformers_text.py --save-random "$R7B" \
  --documents 4 --tokens 20 --batches 4 > /dev/null
du -sh "$R7B"
/usr/bin/time -f "read into the page cache: %e s" cat "$R7B"/*.safetensors > /dev/null

# Photos of mixed sizes and content (the fixtures' 12 and MIXED synthetic ones).
mkdir -p /tmp/mixed && cp tests/fixtures/photos/* /tmp/mixed/
python3 - "${MIXED:-36}" <<'PY'
import sys, numpy as np
from PIL import Image
rng = np.random.default_rng(7)
sizes = [(640, 480), (800, 600), (1024, 768), (768, 1024), (1280, 960), (1600, 1200),
         (1920, 1080), (2048, 1536), (500, 500), (3000, 2000), (1080, 1920), (400, 300)]
for i in range(int(sys.argv[1])):
    w, h = sizes[i % len(sizes)]
    base = rng.uniform(0, 255, 3)
    y = np.linspace(0, 1, h)[:, None, None]; x = np.linspace(0, 1, w)[None, :, None]
    img = base + rng.uniform(-80, 80, 3) * x + rng.uniform(-80, 80, 3) * y + rng.normal(0, 10, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(1, 6)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        img[((xx - cx) ** 2 + (yy - cy) ** 2) < r * r] = rng.uniform(0, 255, 3)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f"/tmp/mixed/mixed-{i:03d}-{w}x{h}.jpg", quality=90)
PY
echo "$(ls /tmp/mixed | wc -l) photos in /tmp/mixed"

if has start; then
  mkdir -p /tmp/start-photos && cp /tmp/mixed/mixed-00[0-7]* /tmp/start-photos/
  JIT=/tmp/jit-cache-$$
  for run in "empty kernel cache" "kernel cache filled by the run before" "again"; do
    step "start: $run"
    s=$(date +%s.%N)
    CUDA_CACHE_PATH=$JIT timeout 300 "$BIN" rank --model "$R7B" --no-cache --query "$QUERY" --json /tmp/start-photos > /dev/null 2> /tmp/start.err
    e=$(date +%s.%N)
    grep -E "ready|ranked" /tmp/start.err
    python3 -c "print('rank of 8 photos, process start to exit: %.2f s' % ($e - $s))"
    du -sh "$JIT"
    CUDA_CACHE_PATH=$JIT timeout 300 "$BIN" bench --model "$R7B" --photos 8 --batch 1 --json "$OUT/start.json" > /dev/null
    python3 -c "import json; r=json.load(open('$OUT/start.json')); print(json.dumps({'run': 'bench after: $run', **{k: r.get(k) for k in ['load_s','warmup_s','first_score_ms','load_to_first_score_s','photos_per_s']}}))"
  done
fi

if has loadab; then
  unpack_builds
  export CUDA_CACHE_PATH=/tmp/jit-cache-loadab
  mkdir -p /tmp/start-photos && cp /tmp/mixed/mixed-00[0-7]* /tmp/start-photos/
  step "loadab: the kernel cache filled by both builds"
  for side in before after; do
    timeout 300 "/tmp/lychee-$side" bench --model "$R7B" --photos 8 --batch 1 --json "$OUT/loadab_fill_$side.json" > /dev/null
  done
  for round in 1 2 3; do
    for side in before after; do
      step "loadab: start $round, $side"
      s=$(date +%s.%N)
      timeout 300 "/tmp/lychee-$side" rank --model "$R7B" --no-cache --query "$QUERY" --json /tmp/start-photos > /dev/null 2> /tmp/start.err
      e=$(date +%s.%N)
      grep -E "ready" /tmp/start.err
      python3 -c "print('rank of 8 photos, process start to exit: %.2f s' % ($e - $s))"
      timeout 300 "/tmp/lychee-$side" bench --model "$R7B" --photos 8 --batch 1 --json "$OUT/loadab_$side.json" > /dev/null
      python3 -c "import json; r=json.load(open('$OUT/loadab_$side.json')); print(json.dumps({'side': '$side', **{k: r.get(k) for k in ['load_s','warmup_s','first_score_ms','load_to_first_score_s']}}))"
    done
  done
  step "loadab: the same scores? both builds rank $(ls /tmp/mixed | wc -l) photos of mixed sizes"
  for side in before after; do
    timeout 300 "/tmp/lychee-$side" rank --model "$R7B" --no-cache --query "$QUERY" --json /tmp/mixed > "$OUT/loadab_rank_$side.jsonl" 2> /dev/null
  done
  python3 - "$OUT/loadab_rank_before.jsonl" "$OUT/loadab_rank_after.jsonl" <<'PY'
import json, sys
a, b = [{(l := json.loads(s))["path"]: l["score"] for s in open(f) if '"score"' in s} for f in sys.argv[1:]]
print(json.dumps({"photos": len(a), "identical": sum(a[p] == b.get(p) for p in a),
                  "max_abs_diff": max(abs(a[p] - b[p]) for p in a if p in b)}))
PY
  for side in before after; do
    step "loadab: $side, 256 photos at batch 8"
    timeout 300 "/tmp/lychee-$side" bench --model "$R7B" --photos 256 --batch 8 --json "$OUT/loadab_b8_$side.json" > /dev/null
    python3 -c "import json; r=json.load(open('$OUT/loadab_b8_$side.json')); print(json.dumps({'side': '$side', **{k: r.get(k) for k in ['photos','batch','photos_per_s','load_s']}}))"
  done
fi

if has budget; then
  ROOM_MIB=${ROOM_MIB:-22528}
  step "a 24 GB card: all of the GPU but $ROOM_MIB MiB held by another process"
  hold_all_but "$ROOM_MIB"
  KEYS="'photos','failed','visual_tokens','batch','notices','lowered_resolution','photos_per_s','gpu_mib_after_load','pool_mib_after_load','pool_mib_used_peak','pool_mib_reserved_peak','measured_mib_per_photo','estimated_mib_per_photo','load_s','warmup_s'"
  export CUDA_CACHE_PATH=/tmp/jit-cache-budget
  # what batches of 1, 2 and 4 really take (the memory pool's high-water mark)
  for b in ${BUDGET_BATCHES-1 2 4}; do
    timeout 200 "$BIN" bench --model "$R7B" --photos 8 --batch "$b" --size 1280x1024 --json "$OUT/budget_b$b.json" > /dev/null
    python3 -c "import json; r=json.load(open('$OUT/budget_b$b.json')); print(json.dumps({k: r.get(k) for k in [$KEYS]}))"
  done
  # the batch size chosen from the free memory
  timeout 400 "$BIN" bench --model "$R7B" --photos "${BUDGET_PHOTOS:-64}" --size 1280x1024 --json "$OUT/budget_1280.json" > /dev/null
  python3 -c "import json; r=json.load(open('$OUT/budget_1280.json')); print(json.dumps({k: r.get(k) for k in [$KEYS]}))"
  kill "$ballast"; wait "$ballast" 2>/dev/null
fi

if has peaks; then
  # What batches take with the whole GPU free: the pool's high-water mark by batch size,
  # and over a longer run (the visual tokens kept for later queries fill their share).
  KEYS="'photos','batch','notices','photos_per_s','pool_mib_after_load','pool_mib_used_peak','pool_mib_reserved_peak','measured_mib_per_photo'"
  export CUDA_CACHE_PATH=/tmp/jit-cache-peaks
  for run in "8 4" "8 8" "16 16" "64 4"; do
    set -- $run
    step "peaks: $1 photos of 1280x1024, batch $2"
    timeout 200 "$BIN" bench --model "$R7B" --photos "$1" --batch "$2" --size 1280x1024 --json "$OUT/peaks_$1_$2.json" > /dev/null
    python3 -c "import json; r=json.load(open('$OUT/peaks_$1_$2.json')); print(json.dumps({k: r.get(k) for k in [$KEYS]}))"
  done
fi

if has fidelity; then
  step "fidelity: candle bf16, transformers bf16 and f32 on $(ls /tmp/mixed | wc -l) photos of mixed sizes"
  timeout 300 "$BIN" rank --model "$R7B" --no-cache --query "$QUERY" --json /tmp/mixed > "$OUT/fid_candle_bf16.jsonl" 2> /tmp/fid.err
  grep -E "ranked|failed" /tmp/fid.err
  timeout 400 python3 scripts/reference_scores.py --model "$R7B" --dtype bf16 --query "$QUERY" /tmp/mixed > "$OUT/fid_tf_bf16.jsonl"
  timeout 500 python3 scripts/reference_scores.py --model "$R7B" --dtype f32 --query "$QUERY" /tmp/mixed > "$OUT/fid_tf_f32.jsonl"
  python3 scripts/compare_scores.py "$OUT/fid_candle_bf16.jsonl" "$OUT/fid_tf_f32.jsonl" --label "candle bf16 vs transformers f32"
  python3 scripts/compare_scores.py "$OUT/fid_tf_bf16.jsonl" "$OUT/fid_tf_f32.jsonl" --label "transformers bf16 vs transformers f32"
  python3 scripts/compare_scores.py "$OUT/fid_candle_bf16.jsonl" "$OUT/fid_tf_bf16.jsonl" --label "candle bf16 vs transformers bf16"
fi
step done
