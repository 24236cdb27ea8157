# Run 1: the warpgroup kernel with no product issued under a condition (C7514 gone), more
# tilings of it compiled: bench --ops, every tiling checked against the f32 reference.
set -u
. scripts/gpu_session.sh run1-log.txt
unpack_builds
export CUDA_CACHE_PATH=/tmp/jit-cache-run1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv,noheader
step "bench --ops, after"
timeout 200 /tmp/lychee-after bench --ops > "$OUT/ops.txt"; echo "rc=$?"
grep -E "vision (full|windows) 8|text causal 8" "$OUT/ops.txt"
