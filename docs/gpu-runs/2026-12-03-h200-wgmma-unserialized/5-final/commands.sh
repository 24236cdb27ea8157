# Run 6 (2026-12-03, fourth session): the build of main at 01d8a87 (full blocks on 16x64h by
# default) through the whole judge beside the build of da2d242 and transformers in the same
# run, on the saved 7B-shaped checkpoint, 256 photos at batch 8, alternating twice; 1280
# tokens once; the 32 photos both builds ranked; then the fidelity on 48 photos.
set -u
OUT=$OUT STEPS="warm ab" PHOTOS=256 BATCHES="8 8" BATCHES_1280="8" bash scripts/gpu_flash.sh
OUT=$OUT bash scripts/gpu_start.sh fidelity
