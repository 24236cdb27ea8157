set -u
. scripts/gpu_session.sh log.txt
export CUDA_CACHE_PATH=/tmp/jit-cache
unpack_builds
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv,noheader
step ops
timeout 240 /tmp/lychee-after bench --ops > "$OUT/ops.txt" 2>&1; echo "ops exit $?"
grep -E "vision|text|rror|differs" "$OUT/ops.txt" | cut -c1-160
step warm
for b in before after; do timeout 120 /tmp/lychee-$b bench --photos 16 --batch 8 > /dev/null 2>&1; echo "warm $b $?"; done
run() { local name=$1 bin=$2; shift 2; env "$@" timeout 120 /tmp/lychee-$bin bench --photos 256 --batch 8 --json /tmp/r.json > /dev/null 2>&1; echo "$name $* $?"; python3 -c "import json; r=json.load(open('/tmp/r.json')); print(round(r['photos_per_s'],2), json.dumps(r.get('device_gaps')) if r.get('device_gaps') else '')"; }
run before before
run after after
run mma after LYCHEE_FLASH_TILES=full=4x64x32
run before before
run after after
run hostwait after LYCHEE_UPLOAD_WAIT=host
run gaps after LYCHEE_GAPS=1
run gapshost after LYCHEE_GAPS=1 LYCHEE_UPLOAD_WAIT=host
step done
