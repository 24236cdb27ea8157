# On the GPU machine (nvidia-h200, carrying .gpu: the build of 3f86ad3)
OUT=$OUT bash scripts/gpu_start.sh start                   # start-log.txt
OUT=$OUT ROUNDS=1 BATCHES=auto bash scripts/gpu_batches.sh  # batches-log.txt
