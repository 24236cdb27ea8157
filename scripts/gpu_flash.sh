#!/usr/bin/env bash
# On the GPU machine: the flash-attention tilings, from the single kernel to the whole
# ranking, in one run. `bench --ops` times every compiled tiling at the model's shapes
# (each checked against an f32 reference); the fastest per use is then run through the
# whole judge beside the default tiling and the build before (BEFORE), on the same random
# 7B-shaped weights with transformers as the peer, at 999 and at 1280 visual tokens; last,
# where Nsight Compute reads the counters, each kernel's time in one batch of eight.
#
#   (device) OUT=/tmp/out BEFORE=.gpu/before.xz AFTER=.gpu/lychee-rerank.xz bash scripts/gpu_flash.sh
#   TILES="full=8x64,..." skips the choice from `bench --ops`; STEPS="ops ab dmon profile" by default,
#   "long" adds 256-photo rankings at LONG_BATCHES, "warm" one untimed run of each build first; BATCHES and BATCHES_1280 set the A/B's
#   batch sizes; OPS_BEFORE=1 runs `bench --ops` of the build before too. With tilings
#   chosen, the build after also runs with its defaults ("default") at BATCHES, and with
#   each of VARIANTS="name:VAR=value ..." set.
set -u
. scripts/gpu_session.sh flash-log.txt
export CUDA_CACHE_PATH=/tmp/jit-cache-flash
PHOTOS=${PHOTOS:-64}
STEPS=${STEPS:-ops ab dmon profile}
KEYS="'photos','batch','visual_tokens','photos_per_s','ms_per_photo','first_score_ms','pool_mib_used_peak'"
unpack_builds
step machine
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
uname -r

TILES=${TILES:-}
if has ops; then
  step "single operations, every tiling (bench --ops)"
  timeout 300 /tmp/lychee-after bench --ops > "$OUT/ops.txt"
  grep -E "vision|text|product" "$OUT/ops.txt"
  if [ -n "${OPS_BEFORE:-}" ]; then
    step "the same, the build before"
    timeout 300 /tmp/lychee-before bench --ops > "$OUT/ops-before.txt"
    grep -E "vision|text" "$OUT/ops-before.txt"
  fi
  if [ -z "$TILES" ]; then
    # The fastest tiling per use at the shapes of a batch of eight.
    TILES=$(python3 - "$OUT/ops.txt" <<'PY'
import re, sys
best = {}
pat = re.compile(r"^(vision full 8|vision windows 8|text causal 8) .*?, (\d+x\d+(?:x\d+)?h?)(?:, blocks by \w+)?\s+([\d.]+) us")
for line in open(sys.argv[1]):
    m = pat.match(line)
    if m:
        use = {"vision full 8": "full", "vision windows 8": "windows", "text causal 8": "causal"}[m[1]]
        if use not in best or float(m[3]) < best[use][1]:
            best[use] = (m[2], float(m[3]))
print(",".join(f"{u}={t}" for u, (t, _) in best.items()))
PY
)
  fi
fi
echo "tiles: ${TILES:-(defaults)}"

bench() { # name binary size batch [env...]
  local name=$1 bin=$2 size=$3 b=$4; shift 4
  step "$name: ${size}, batch $b ${*:-}"
  env "$@" timeout 300 "/tmp/lychee-$bin" bench --model "$R7B" --photos "$PHOTOS" --batch "$b" --size "$size" --json "$OUT/b_${name}_${size}_b$b.json" > /dev/null
  python3 -c "import json; r=json.load(open('$OUT/b_${name}_${size}_b$b.json')); print(json.dumps({k: r.get(k) for k in [$KEYS]}))"
}

if has ab; then
  step "transformers, random 7B-shaped weights (saved to $R7B)"
  rm -rf "$R7B"
  timeout 420 python3 scripts/bench_transformers.py --save-random "$R7B" --photos "$PHOTOS" \
    --batches "$(echo ${BATCHES:-1 8} | tr ' ' ,)" --json "$OUT/transformers.json" | tail -n 3
  if has warm; then
    # The driver compiles the kernels' PTX on a fresh machine during the first run: each
    # build runs once untimed, so that no timed run pays for it.
    for bin in before after; do
      step "warm-up run, $bin"
      timeout 300 "/tmp/lychee-$bin" bench --model "$R7B" --photos 16 --batch 8 --json /tmp/warm.json > /dev/null
    done
  fi
  for b in ${BATCHES:-1 8}; do
    bench before before 1024x768 "$b"
    bench after after 1024x768 "$b" LYCHEE_FLASH_TILES="$TILES"
    # The build after with its default tilings, where the chosen ones differ.
    [ -n "$TILES" ] && bench default after 1024x768 "$b"
    # VARIANTS="name:VAR=value ...": the build after with the chosen tilings and one
    # setting changed.
    for v in ${VARIANTS:-}; do
      bench "${v%%:*}" after 1024x768 "$b" LYCHEE_FLASH_TILES="$TILES" "${v#*:}"
    done
  done
  for b in ${BATCHES_1280:-4 8}; do
    bench before before 1280x1024 "$b"
    bench after after 1280x1024 "$b" LYCHEE_FLASH_TILES="$TILES"
  done
  step "the same scores? before and after rank the same 32 photos"
  mkdir -p /tmp/ab-photos && python3 -c "import sys; sys.path.insert(0, 'scripts'); from bench_transformers import synthetic_photos; from pathlib import Path; synthetic_photos(Path('/tmp/ab-photos'), 32, 1024, 768)"
  timeout 300 /tmp/lychee-before rank --model "$R7B" --no-cache --batch 8 --query "a red umbrella on a sunny beach" --json /tmp/ab-photos > "$OUT/rank_before.jsonl" 2> /dev/null
  LYCHEE_FLASH_TILES="$TILES" timeout 300 /tmp/lychee-after rank --model "$R7B" --no-cache --batch 8 --query "a red umbrella on a sunny beach" --json /tmp/ab-photos > "$OUT/rank_after.jsonl" 2> /dev/null
  python3 - "$OUT/rank_before.jsonl" "$OUT/rank_after.jsonl" <<'PY'
import json, sys
a, b = [{(l := json.loads(s))["path"]: l["score"] for s in open(f) if '"score"' in s} for f in sys.argv[1:]]
print(json.dumps({"photos": len(a), "identical": sum(a[p] == b.get(p) for p in a),
                  "max_abs_diff": max(abs(a[p] - b[p]) for p in a if p in b)}))
PY
fi

if has long; then
  # Long rankings (256 photos) at the batch sizes a large GPU chooses.
  for b in ${LONG_BATCHES:-16}; do
    PHOTOS=256 bench long after 1024x768 "$b" LYCHEE_FLASH_TILES="$TILES"
  done
fi

if has dmon; then
  # The GPU's own view of a long ranking: how busy the multiprocessors are, clocks, power.
  step "nvidia-smi dmon during 256 photos at batch 8"
  nvidia-smi dmon -s puc -d 1 > "$OUT/dmon.txt" 2>&1 &
  dmon=$!
  sleep 1
  LYCHEE_FLASH_TILES="$TILES" timeout 300 /tmp/lychee-after bench --model "$R7B" --photos 256 --batch 8 --json /tmp/dmon-bench.json > /dev/null
  sleep 1; kill $dmon
  python3 -c "import json; r=json.load(open('/tmp/dmon-bench.json')); print(json.dumps({k: r.get(k) for k in [$KEYS]}))"
  cat "$OUT/dmon.txt"
fi

if has profile; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  step "each kernel's time, 16 photos at batch 8 (ncu: ${NCU:-none})"
  if [ -n "$NCU" ] && [ -d "$R7B" ]; then
    # Two runs, 8 and 16 photos: their difference is one batch of eight alone.
    for n in 8 16; do
      LYCHEE_FLASH_TILES="$TILES" timeout 240 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
        /tmp/lychee-after bench --model "$R7B" --photos $n --batch 8 --json /tmp/ncu-bench.json > /tmp/ncu-$n.csv 2> "$OUT/ncu-err.txt"
      echo "ncu, $n photos: exit $?"; tail -n 3 "$OUT/ncu-err.txt"
    done
    tar -C /tmp -cJf "$OUT/ncu.tar.xz" ncu-8.csv ncu-16.csv
    python3 scripts/kernel_times.py /tmp/ncu-8.csv /tmp/ncu-16.csv --photos 8 | tee "$OUT/kernel-times.txt"
  fi
fi
# The device returns few files: the per-run JSON in one archive.
(cd "$OUT" && runs=$(ls b_*.json transformers.json rank_*.jsonl ops-before.txt 2> /dev/null || true) && [ -n "$runs" ] && tar -cJf runs.tar.xz $runs && rm -f $runs)
step done
