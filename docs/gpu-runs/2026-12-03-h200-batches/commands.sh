# On the GPU machine (nvidia-h200, carrying .gpu: the build of 39beb6a)
OUT=$OUT ROUNDS=2 bash scripts/gpu_batches.sh    # batches-log.txt
