OUT=$OUT STEPS="warm ab" PHOTOS=256 BATCHES="8" BATCHES_1280="8" bash scripts/gpu_flash.sh
