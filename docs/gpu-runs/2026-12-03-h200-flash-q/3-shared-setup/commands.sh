# Run 3: the flash kernels' block setup shared (FlashBlock in flash.cuh) against the kept
# build: bench --ops of both (every tiling, the Hopper ones too, checked against the f32
# reference), then in-process random 7B weights, 256 photos at batch 8, once each.
set -u
. scripts/gpu_session.sh run3-log.txt
BEFORE=.gpu/kept.xz unpack_builds
export CUDA_CACHE_PATH=/tmp/jit-cache-run3
step "bench --ops, shared block setup"
timeout 200 /tmp/lychee-after bench --ops > "$OUT/ops.txt"; echo "rc=$?"
step "bench --ops, kept build"
timeout 200 /tmp/lychee-before bench --ops > "$OUT/ops-kept.txt"; echo "rc=$?"
for r in 1; do for side in before after; do
  step "$side, in-process random weights, 256 photos, batch 8, round $r"
  timeout 150 /tmp/lychee-$side bench --photos 256 --batch 8 --json "$OUT/b_${side}_$r.json" > /dev/null
  python3 -c "import json; r=json.load(open('$OUT/b_${side}_$r.json')); print(r['photos_per_s'], r['ms_per_photo'])"
done; done
for f in ops ops-kept; do echo "--- $f"; grep -E "vision (full|windows) 8|text causal 8" "$OUT/$f.txt"; done
