set -u
mkdir -p "$OUT"
export CUDA_CACHE_PATH=/tmp/jit-cache-flash
for side in before after; do
  src=.gpu/before.xz; [ $side = after ] && src=.gpu/lychee-rerank.xz
  xz -dc $src > /tmp/lychee-$side && chmod +x /tmp/lychee-$side
done
rm -f ~/.cache/lychee-rerank/products.json
for side in before after; do
  timeout 100 /tmp/lychee-$side bench --photos 16 --batch 8 --json "$OUT/warm_$side.json" > /dev/null 2>&1 || echo "WARM $side FAILED"
  python3 -c "import json;d=json.load(open('$OUT/warm_$side.json'));print('warm $side', d['photos_per_s'], d['first_score_ms'])"
done
cp ~/.cache/lychee-rerank/products.json "$OUT/products.json"; cat "$OUT/products.json" | cut -c1-200
echo "=== in-process, 256 photos, batch 8 $(date +%T)"
for round in 1 2; do
  for side in before after; do
    timeout 100 /tmp/lychee-$side bench --photos 256 --batch 8 --json "$OUT/ip_${side}_$round.json" > /dev/null 2>&1
    python3 -c "import json;d=json.load(open('$OUT/ip_${side}_$round.json'));print('$side', $round, d['photos_per_s'], d['first_score_ms'])"
  done
done
echo "=== done $(date +%T)"
cd "$OUT" && tar cJf /tmp/runs.tar.xz ip_*.json warm_*.json && rm -f ip_*.json warm_*.json && mv /tmp/runs.tar.xz .
