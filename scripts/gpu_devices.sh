#!/usr/bin/env bash
# Several copies of the model in one ranking, on the GPU machine: random 7B weights,
# 256 photos of 1024x768 in batches of 8, ranked twice with one copy (run to run) and
# then with `--gpus LIST` (by default two copies on GPU 0, the test of the dealing code
# on a machine of one GPU; LIST=0,1 on a machine of two), the scores compared photo by
# photo with the first run's.
# The CUDA binary is carried as for scripts/gpu_run.sh (.gpu/lychee-rerank.xz).
#
#   (device) OUT=/tmp/out LIST=0,0 bash scripts/gpu_devices.sh
set -u
. scripts/gpu_session.sh devices-log.txt
LIST=${LIST:-0,0}
PHOTOS=${PHOTOS:-256}
unpack_build

step machine
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader

saved_weights
step "$PHOTOS photos of 1024x768"
mkdir -p /tmp/photos && python3 -c "import sys; sys.path.insert(0, 'scripts'); from bench_transformers import synthetic_photos; from pathlib import Path; synthetic_photos(Path('/tmp/photos'), $PHOTOS, 1024, 768)"

step "one copy of the model"
timeout 300 "$BIN" rank --model "$R7B" --no-cache --batch 8 --query "boats in the harbour" --json /tmp/photos \
  > "$OUT/one.jsonl" 2> "$OUT/one.err"; echo "rc=$?"; grep -E "ranked|ready" "$OUT/one.err"
step "one copy of the model, again (run to run)"
timeout 300 "$BIN" rank --model "$R7B" --no-cache --batch 8 --query "boats in the harbour" --json /tmp/photos \
  > "$OUT/again.jsonl" 2> "$OUT/again.err"; echo "rc=$?"; grep -E "ranked" "$OUT/again.err"
step "--gpus $LIST"
timeout 300 "$BIN" rank --model "$R7B" --no-cache --batch 8 --gpus "$LIST" --query "boats in the harbour" --json /tmp/photos \
  > "$OUT/many.jsonl" 2> "$OUT/many.err"; echo "rc=$?"; grep -E "ranked|ready|note|loading|stopped|warning" "$OUT/many.err"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader

step "the runs' scores, photo by photo, against the first"
python3 - "$OUT/one.jsonl" "$OUT/again.jsonl" "$OUT/many.jsonl" <<'PY'
import json, sys
one, *others = [{(l := json.loads(s))["path"]: l for s in open(f) if '"score"' in s} for f in sys.argv[1:]]
for name, run in zip(["one copy again", "--gpus"], others):
    diffs = [abs(one[p]["score"] - run[p]["score"]) for p in one if p in run]
    same = sum(one[p]["score"] == run[p]["score"] for p in one if p in run)
    print(json.dumps({"run": name, "photos": len(run), "of": len(one), "identical": same,
                      "max_abs_diff": max(diffs) if diffs else None}))
PY
step done
