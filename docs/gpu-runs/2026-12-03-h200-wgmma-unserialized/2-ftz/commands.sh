# Run 2: exp2 as one instruction (ex2.approx.ftz) in both flash kernels; the warpgroup kernel
# with the masks decided per block and no branch in its softmax. bench --ops of both builds
# (every tiling checked against the f32 reference), after / before / after.
set -u
. scripts/gpu_session.sh run2-log.txt
unpack_builds
export CUDA_CACHE_PATH=/tmp/jit-cache-run2
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv,noheader
step "bench --ops, after"
timeout 200 /tmp/lychee-after bench --ops > "$OUT/ops.txt"; echo "rc=$?"
step "bench --ops, before"
timeout 200 /tmp/lychee-before bench --ops > "$OUT/ops-before.txt"; echo "rc=$?"
step "bench --ops, after again"
timeout 200 /tmp/lychee-after bench --ops > "$OUT/ops2.txt"; echo "rc=$?"
for f in ops ops-before ops2; do echo "--- $f"; grep -E "vision (full|windows) 8|text causal 8|attention full|fused window" "$OUT/$f.txt" | sed -E 's/ +/ /g'; done
