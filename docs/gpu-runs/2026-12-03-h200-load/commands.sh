# Here: the two CUDA builds of each run (see docs/PERFORMANCE.md, "The command").
#   1-staged: .gpu/before.xz = 1c3e665 (memory-mapped safetensors); .gpu/lychee-rerank.xz =
#             the positioned-read loader with 4 MiB pieces
#   2-pieces: .gpu/piece4.xz = that loader; .gpu/lychee-rerank.xz = 1 MiB pieces (kept)
# On the GPU machine (nvidia-h200, carrying .gpu):
OUT=/tmp/o bash scripts/gpu_start.sh loadab                          # 1-staged/start-log.txt
BEFORE=.gpu/piece4.xz OUT=/tmp/o bash scripts/gpu_start.sh loadab    # 2-pieces/start-log.txt
