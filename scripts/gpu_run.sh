#!/usr/bin/env bash
# One GPU session: correctness of the CUDA build against transformers and the side-by-side
# benchmark, on the GPU machine (CUDA 13 driver, PyTorch + transformers, no Rust, no
# network). The CUDA binary is built here with ../shared/tools/cuda-build.sh, stripped,
# compressed to .gpu/lychee-rerank.xz and carried:
#
#   ../shared/tools/cuda-build.sh build --release --no-default-features --features cuda && git checkout Cargo.lock
#   mkdir -p .gpu && strip -o .gpu/lychee-rerank target/cuda/release/lychee-rerank && xz -f .gpu/lychee-rerank
#   (device) bash scripts/gpu_run.sh [steps...]
#   steps: ops tiny speed index bench7b memory parity7b oom (default: all but speed)
#
# Everything it measures lands in $OUT (or ./gpu-out): JSON lines per step and log.txt.
set -u
. scripts/gpu_session.sh log.txt
# Where the per-photo JSON lines of the comparisons go (the device returns few files).
SCRATCH=${SCRATCH:-$OUT}
unpack_build
STEPS=${*:-ops tiny index bench7b memory parity7b oom}
QUERY="a red umbrella on a sunny beach"
PHOTOS=${PHOTOS:-64}
P7B=/tmp/photos7b
. scripts/ballast.sh

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

if has ops; then
  # Single operations at the model's shapes; ends with the flash-attention kernel checked
  # against an f32 reference (the command fails if they differ beyond bf16 rounding).
  step "single operations, bf16"
  timeout 300 "$BIN" bench --ops
fi

if has tiny; then
  step "tiny fixture: candle f32 / bf16 and transformers f32 / bf16 on the GPU"
  for dt in f32 bf16; do
    timeout 120 "$BIN" rank --model tests/fixtures/tiny-model --dtype $dt --query "$QUERY" --json tests/fixtures/photos > "$SCRATCH/tiny_candle_$dt.jsonl"
    timeout 180 python3 scripts/reference_scores.py --model tests/fixtures/tiny-model --dtype $dt --query "$QUERY" tests/fixtures/photos > "$SCRATCH/tiny_tf_$dt.jsonl"
  done
  for dt in f32 bf16; do
    python3 scripts/compare_scores.py "$SCRATCH/tiny_candle_$dt.jsonl" "$SCRATCH/tiny_tf_$dt.jsonl" --label "tiny $dt: candle vs transformers"
  done
  python3 scripts/compare_scores.py "$SCRATCH/tiny_candle_bf16.jsonl" "$SCRATCH/tiny_tf_f32.jsonl" --label "tiny: candle bf16 vs transformers f32"
  python3 scripts/compare_scores.py "$SCRATCH/tiny_tf_bf16.jsonl" "$SCRATCH/tiny_tf_f32.jsonl" --label "tiny: transformers bf16 vs transformers f32"
fi

if has speed; then
  # The judge alone on random 7B weights made on the device (no transformers peer; a quick
  # check against the numbers of docs/PERFORMANCE.md).
  step "candle, random 7B weights, batches 1 and 8"
  for b in 1 8; do
    timeout 300 "$BIN" bench --photos "$PHOTOS" --batch "$b" --json "$OUT/speed_b$b.json"
  done
fi

if has index; then
  # The first stage: query embedding, search over 100,000 and 1,000,000 vectors (GPU and
  # the 16 CPU cores), indexing of synthetic JPEGs, then both stages with the 7B judge.
  step "first stage on the GPU, and two stages with the random 7B judge"
  timeout 480 "$BIN" bench-index --vectors 100000,1000000 --photos 1024 --two-stage --shortlist 200 --json "$OUT/bench_index_gpu.json" > /dev/null
  step "first stage on the CPU cores of this machine"
  timeout 300 "$BIN" bench-index --cpu --vectors 100000,1000000 --photos 64 --json "$OUT/bench_index_cpu.json" > /dev/null
  step "the tiny embedder on the GPU (bf16) against the CPU (f32): same order"
  LYCHEE_CACHE_DIR=/tmp/idx-gpu timeout 120 "$BIN" search --json --query "$QUERY" --embedder tests/fixtures/tiny-siglip tests/fixtures/photos > /tmp/search_gpu.jsonl
  LYCHEE_CACHE_DIR=/tmp/idx-cpu timeout 120 "$BIN" search --cpu --json --query "$QUERY" --embedder tests/fixtures/tiny-siglip tests/fixtures/photos > /tmp/search_cpu.jsonl
  python3 - <<'PY'
import json
g=[json.loads(l) for l in open("/tmp/search_gpu.jsonl")]; c=[json.loads(l) for l in open("/tmp/search_cpu.jsonl")]
sim={x["path"]: x["similarity"] for x in c}
print("tiny embedder: GPU bf16 vs CPU f32: max similarity difference %.4f over %d photos, same order: %s" % (
    max(abs(x["similarity"]-sim[x["path"]]) for x in g), len(g), [x["path"] for x in g]==[x["path"] for x in c]))
PY
fi

if has bench7b; then
  step "transformers, random 7B-shaped weights (saved to $R7B for candle)"
  rm -rf "$R7B" "$P7B"
  timeout 420 python3 scripts/bench_transformers.py --save-random "$R7B" --photo-dir "$P7B" --photos "$PHOTOS" \
    --batches 1,2,4,8,16 --json "$OUT/bench_transformers.json" | tee "$OUT/bench_transformers.jsonl"
  step "candle, the same weights and photo size"
  for b in ${BATCHES:-1 4 8}; do
    timeout 300 "$BIN" bench --model "$R7B" --photos "$PHOTOS" --batch "$b" --json "$OUT/bench_candle_b$b.json"
  done
  step "candle without the flash-attention kernel (scores materialized), batch 1"
  LYCHEE_FLASH=0 timeout 300 "$BIN" bench --model "$R7B" --photos "$PHOTOS" --batch 1 --json "$OUT/bench_candle_b1_noflash.json"
fi

# Device memory as nvidia-smi sees it (CUDA context included), polled every 20 ms.
peak() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 > /tmp/mem.txt &
  local poller=$!
  "$@"
  kill "$poller"; wait "$poller" 2>/dev/null
  echo "peak device memory: $(sort -n /tmp/mem.txt | tail -1) MiB"
}

if has memory; then
  step "peak memory at batch 1 with 1280 visual tokens per photo (1280x1024 photos)"
  peak timeout 300 "$BIN" bench --model "$R7B" --photos 8 --batch 1 --size 1280x1024 --json "$OUT/bench_candle_1280.json"
fi

if has parity7b; then
  step "random 7B-shaped weights: candle bf16 vs transformers bf16 on the same photos"
  N=${PARITY_PHOTOS:-16}
  # the fixture photos (varied sizes and content) and some of the synthetic ones
  mkdir -p /tmp/p7b-sub && cp tests/fixtures/photos/* /tmp/p7b-sub/ && ls "$P7B"/*.jpg | head -n "$N" | xargs -I{} cp {} /tmp/p7b-sub/
  timeout 300 "$BIN" rank --model "$R7B" --query "$QUERY" --json /tmp/p7b-sub > "$SCRATCH/7b_candle_bf16.jsonl"
  timeout 300 python3 scripts/reference_scores.py --model "$R7B" --dtype bf16 --query "$QUERY" /tmp/p7b-sub > "$SCRATCH/7b_tf_bf16.jsonl"
  timeout 300 python3 scripts/reference_scores.py --model "$R7B" --dtype f32 --query "$QUERY" /tmp/p7b-sub > "$SCRATCH/7b_tf_f32.jsonl"
  python3 scripts/compare_scores.py "$SCRATCH/7b_candle_bf16.jsonl" "$SCRATCH/7b_tf_bf16.jsonl" --label "7B random: candle bf16 vs transformers bf16"
  python3 scripts/compare_scores.py "$SCRATCH/7b_candle_bf16.jsonl" "$SCRATCH/7b_tf_f32.jsonl" --label "7B random: candle bf16 vs transformers f32"
  python3 scripts/compare_scores.py "$SCRATCH/7b_tf_bf16.jsonl" "$SCRATCH/7b_tf_f32.jsonl" --label "7B random: transformers bf16 vs transformers f32"
fi
if has oom; then
  # Another process holds all of the GPU but ROOM_MIB (the weights take about 15 800 MiB
  # with the CUDA context), so that the ranking really runs out of memory: batches of 16
  # at 1280 visual tokens must shrink, and 16 384-token photos must be lowered.
  ROOM_MIB=${ROOM_MIB:-18432}
  step "out of memory: all but $ROOM_MIB MiB of the GPU held by another process"
  hold_all_but "$ROOM_MIB"
  timeout 300 "$BIN" bench --photos 24 --batch 16 --size 1280x1024 --json "$OUT/oom_batches.json"
  timeout 300 "$BIN" bench --photos 4 --batch 2 --size 4096x3072 --max-pixels 12845056 --json "$OUT/oom_resolution.json"
  kill "$ballast"; wait "$ballast" 2>/dev/null
fi
step done
