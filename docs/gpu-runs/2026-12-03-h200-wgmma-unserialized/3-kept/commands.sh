# Run 3: the kept build (exp2 in one instruction in both flash kernels; the vision tower's
# full blocks on the warpgroup kernel, 12x64h, by default) through the whole judge beside the
# build before (main before this change), twice alternating, transformers as the peer, on
# the saved 7B-shaped checkpoint, 256 photos at batch 8; 1280 tokens once; the 32 photos
# both builds ranked; then the fidelity of bf16 against transformers f32 on 48 photos.
set -u
OUT=$OUT STEPS="warm ab" PHOTOS=256 BATCHES="8 8" BATCHES_1280="8" timeout 400 bash scripts/gpu_flash.sh > /dev/null 2>&1
grep -E "^===|photos_per_s|identical|it/s|photos/s|^tiles" "$OUT/flash-log.txt" | grep -v "^=== warm" | head -40
OUT=$OUT timeout 180 bash scripts/gpu_start.sh fidelity > /dev/null 2>&1
grep -E "^===|vs|ranked" "$OUT/start-log.txt" | tail -12
