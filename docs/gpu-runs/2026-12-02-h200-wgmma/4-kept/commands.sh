set -u
. scripts/gpu_session.sh log.txt
export CUDA_CACHE_PATH=/tmp/jit-cache
unpack_builds
step "ops, before"
timeout 200 /tmp/lychee-before bench --ops > "$OUT/ops-before.txt" 2>&1; echo "exit $?"
step "ops, after"
timeout 200 /tmp/lychee-after bench --ops > "$OUT/ops.txt" 2>&1; echo "exit $?"
grep -E "vision (full|windows) 8|text causal 8|rror|differs" "$OUT/ops-before.txt" "$OUT/ops.txt" | cut -c1-150
step done
