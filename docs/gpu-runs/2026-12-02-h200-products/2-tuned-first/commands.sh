set -u
export CUDA_CACHE_PATH=/tmp/jit-cache-flash
mkdir -p "$OUT"
xz -dc .gpu/lychee-rerank.xz > /tmp/q && chmod +x /tmp/q
echo "=== ops $(date +%T)"
timeout 200 /tmp/q bench --ops > "$OUT/ops.txt" 2>&1; echo "exit $?"
grep -E "^product|products of|rror|differs" "$OUT/ops.txt" | cut -c1-330
echo "=== quick $(date +%T)"
timeout 120 /tmp/q bench --photos 16 --batch 8 --json /tmp/quick.json > /tmp/quick.log 2>&1 || { echo QUICK FAILED; tail -20 /tmp/quick.log; exit 1; }
python3 -c "import json;d=json.load(open('/tmp/quick.json'));print(d['photos_per_s'], d['first_score_ms'], d['load_to_first_score_s'])"
OUT=$OUT STEPS="warm ab" PHOTOS=256 BATCHES="8" BATCHES_1280="8" TILES="full=4x64x32,windows=4x64,causal=4x32" \
  VARIANTS="notuned:LYCHEE_TUNED_PRODUCTS=0" bash scripts/gpu_flash.sh > /dev/null 2>&1
grep -E "^===|^\{" "$OUT/flash-log.txt" | cut -c1-300
cd "$OUT" && tar cJf runs.tar.xz b_*.json transformers.json rank_*.jsonl && rm -f b_*.json rank_*.jsonl
