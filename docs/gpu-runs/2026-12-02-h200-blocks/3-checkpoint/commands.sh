# Run 3: the whole judge beside transformers on the saved 7B-shaped checkpoint
# (scripts/gpu_flash.sh STEPS="warm ab", before = 0a54d40), then the fidelity of bf16
# scores against transformers f32 on 48 photos of mixed sizes, with the products as by
# default and as measured (LYCHEE_TUNED_PRODUCTS=1).
set -u
OUT=$OUT STEPS="warm ab" PHOTOS=256 BATCHES="8" BATCHES_1280="8" bash scripts/gpu_flash.sh > /dev/null 2>&1
grep -E "^===|photos_per_s|identical|it/s|photos/s" "$OUT/flash-log.txt" | grep -v "^=== warm" | head -40
exec > >(tee -a "$OUT/fid-log.txt") 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false CUDA_CACHE_PATH=/tmp/jit-cache-flash
R7B=/tmp/rand7b
QUERY="a red umbrella on a sunny beach"
echo "=== photos $(date +%T)"
mkdir -p /tmp/mixed && cp tests/fixtures/photos/* /tmp/mixed/
python3 - 36 <<'PY'
import sys, numpy as np
from PIL import Image
rng = np.random.default_rng(7)
sizes = [(640, 480), (800, 600), (1024, 768), (768, 1024), (1280, 960), (1600, 1200),
         (1920, 1080), (2048, 1536), (500, 500), (3000, 2000), (1080, 1920), (400, 300)]
for i in range(int(sys.argv[1])):
    w, h = sizes[i % len(sizes)]
    base = rng.uniform(0, 255, 3)
    y = np.linspace(0, 1, h)[:, None, None]; x = np.linspace(0, 1, w)[None, :, None]
    img = base + rng.uniform(-80, 80, 3) * x + rng.uniform(-80, 80, 3) * y + rng.normal(0, 10, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(1, 6)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        img[((xx - cx) ** 2 + (yy - cy) ** 2) < r * r] = rng.uniform(0, 255, 3)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f"/tmp/mixed/mixed-{i:03d}-{w}x{h}.jpg", quality=90)
PY
ls /tmp/mixed | wc -l
echo "=== candle bf16, default and measured products $(date +%T)"
timeout 200 /tmp/lychee-after rank --model "$R7B" --no-cache --query "$QUERY" --json /tmp/mixed > "$OUT/fid_candle.jsonl" 2> /tmp/fid.err; grep -E "ranked|failed" /tmp/fid.err
LYCHEE_TUNED_PRODUCTS=1 timeout 200 /tmp/lychee-after rank --model "$R7B" --no-cache --query "$QUERY" --json /tmp/mixed > "$OUT/fid_tuned.jsonl" 2> /tmp/fid.err; grep -E "ranked|failed" /tmp/fid.err
echo "=== transformers f32 $(date +%T)"
timeout 300 python3 scripts/reference_scores.py --model "$R7B" --dtype f32 --query "$QUERY" /tmp/mixed > "$OUT/fid_tf_f32.jsonl"
python3 scripts/compare_scores.py "$OUT/fid_candle.jsonl" "$OUT/fid_tf_f32.jsonl" --label "candle bf16 vs transformers f32"
python3 scripts/compare_scores.py "$OUT/fid_tuned.jsonl" "$OUT/fid_tf_f32.jsonl" --label "candle bf16, measured products, vs transformers f32"
echo "=== done $(date +%T)"
cd "$OUT" && tar cJf fid.tar.xz fid_*.jsonl && rm -f fid_*.jsonl
