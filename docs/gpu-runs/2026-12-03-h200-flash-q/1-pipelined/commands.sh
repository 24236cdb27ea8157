# Run 1: the pipelined flash tilings and q copied with the first keys. bench --ops of both builds (every tiling checked
# against the f32 reference), the fastest per use through the whole judge beside the build
# before and the build after's defaults, twice alternating, on the saved 7B-shaped
# checkpoint with transformers as the peer; 1280 tokens once; the same 32 photos ranked by both.
set -u
OUT=$OUT STEPS="ops warm ab" OPS_BEFORE=1 PHOTOS=256 BATCHES="8 8" BATCHES_1280="8" bash scripts/gpu_flash.sh > /dev/null 2>&1
grep -E "^===|photos_per_s|identical|it/s|photos/s|^tiles" "$OUT/flash-log.txt" | grep -v "^=== warm" | head -60
grep -E "vision (full|windows) 8|text causal 8" "$OUT/ops.txt"
echo "--- before"
grep -E "vision (full|windows) 8|text causal 8" "$OUT/ops-before.txt"
