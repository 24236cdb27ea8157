set -u
mkdir -p "$OUT"
export CUDA_CACHE_PATH=/tmp/jit-cache-flash
for side in before after; do
  src=.gpu/before.xz; [ $side = after ] && src=.gpu/lychee-rerank.xz
  xz -dc $src > /tmp/lychee-$side && chmod +x /tmp/lychee-$side
done
for side in before after; do
  timeout 120 /tmp/lychee-$side bench --photos 16 --batch 8 --json /tmp/w.json > /dev/null 2>&1 || echo "WARM $side FAILED"
done
echo "=== in-process, 256 photos, batch 8 $(date +%T)"
for round in 1 2; do
  for side in before after; do
    timeout 150 /tmp/lychee-$side bench --photos 256 --batch 8 --json "$OUT/ip_${side}_$round.json" > /dev/null 2>&1
    python3 -c "import json;d=json.load(open('$OUT/ip_${side}_$round.json'));print('$side', $round, d['photos_per_s'])"
  done
done
for side in before after; do
  LYCHEE_GAPS=1 timeout 150 /tmp/lychee-$side bench --photos 256 --batch 8 --json "$OUT/gaps_$side.json" > /dev/null 2>&1
  python3 -c "
import json;d=json.load(open('$OUT/gaps_$side.json'));print('$side gaps', d['photos_per_s'])
for k,v in d['device_gaps'].items(): print('  %-18s device %7.3f host %7.3f ms/photo' % (k, v['ms_per_photo'], v['host_ms_per_photo']))"
done
OUT=$OUT STEPS="ab" PHOTOS=256 BATCHES="8" BATCHES_1280="8" TILES="full=4x64x32,windows=4x64,causal=4x32" \
  bash scripts/gpu_flash.sh > /dev/null 2>&1
grep -E "^===|^\{" "$OUT/flash-log.txt" | cut -c1-260
cd "$OUT" && ls && tar cJf /tmp/runs.tar.xz --exclude=flash-log.txt . && find . -type f ! -name flash-log.txt ! -name "gaps_*" -delete && mv /tmp/runs.tar.xz . && ls
