# Run 1: bench --ops (the windows in the tower's own layout, blocks by row and by window),
# then in-process A/B of whole rankings: before (0a54d40), after, after with
# LYCHEE_FLASH_BLOCKS=rows, after with LYCHEE_TUNED_PRODUCTS=1.
set -u
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export CUDA_CACHE_PATH=/tmp/jit-cache-flash
for side in before after; do
  src=.gpu/before.xz; [ $side = after ] && src=.gpu/lychee-rerank.xz
  xz -dc $src > /tmp/lychee-$side && chmod +x /tmp/lychee-$side
done
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
echo "=== bench --ops $(date +%T)"
timeout 300 /tmp/lychee-after bench --ops > "$OUT/ops.txt" 2>&1 || echo "OPS FAILED $?"
grep -E "vision|text causal 8|product" "$OUT/ops.txt" | head -80
run() { # name binary json [env...]
  local name=$1 bin=$2 json=$3; shift 3
  env "$@" timeout 100 /tmp/lychee-$bin bench --photos 256 --batch 8 --json "$OUT/$json" > /dev/null 2> /tmp/err.txt || { echo "$name FAILED"; tail -3 /tmp/err.txt; }
  python3 -c "import json;d=json.load(open('$OUT/$json'));print('$name', round(d['photos_per_s'],3), d['first_score_ms'])"
}
echo "=== warm-up $(date +%T)"
rm -f ~/.cache/lychee-rerank/products.json
for side in before after; do
  timeout 100 /tmp/lychee-$side bench --photos 16 --batch 8 --json /tmp/w.json > /dev/null 2>&1 || echo "WARM $side FAILED"
done
LYCHEE_TUNED_PRODUCTS=1 timeout 100 /tmp/lychee-after bench --photos 16 --batch 8 --json /tmp/w.json > /dev/null 2>&1 || echo "WARM tuned FAILED"
echo "=== in-process, 256 photos, batch 8 $(date +%T)"
for round in 1 2; do
  run before before ip_before_$round.json
  run after after ip_after_$round.json
  run rows after ip_rows_$round.json LYCHEE_FLASH_BLOCKS=rows
  run tuned after ip_tuned_$round.json LYCHEE_TUNED_PRODUCTS=1
done
echo "=== done $(date +%T)"
cd "$OUT" && tar cJf /tmp/runs.tar.xz ip_*.json && rm -f ip_*.json && mv /tmp/runs.tar.xz .
