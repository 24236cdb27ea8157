set -u
. scripts/gpu_session.sh log.txt
export CUDA_CACHE_PATH=/tmp/jit-cache
unpack_builds
step ops
timeout 240 /tmp/lychee-after bench --ops > "$OUT/ops.txt" 2>&1; echo "ops exit $?"
grep -E "vision full|text causal|rror|differs" "$OUT/ops.txt" | cut -c1-130
TILES=$(python3 - "$OUT/ops.txt" <<'PY'
import re, sys
best = {}
pat = re.compile(r"^(vision full 8|text causal 8) .*?, (\d+x\d+(?:x\d+)?h?r?)\s+([\d.]+) us")
for line in open(sys.argv[1]):
    m = pat.match(line)
    if m:
        use = {"vision full 8": "full", "text causal 8": "causal"}[m[1]]
        if use not in best or float(m[3]) < best[use][1]:
            best[use] = (m[2], float(m[3]))
print(",".join(f"{u}={t}" for u, (t, _) in best.items()))
PY
)
echo "tiles: $TILES"
step warm
for b in before after; do timeout 120 /tmp/lychee-$b bench --photos 16 --batch 8 > /dev/null 2>&1; echo "warm $b $?"; done
LYCHEE_FLASH_TILES=$TILES timeout 120 /tmp/lychee-after bench --photos 16 --batch 8 > /dev/null 2>&1
run() { local name=$1 bin=$2; shift 2; env "$@" timeout 120 /tmp/lychee-$bin bench --photos 256 --batch 8 --json /tmp/r.json > /dev/null 2>&1; echo "$name $* $?"; python3 -c "import json; r=json.load(open('/tmp/r.json')); print(round(r['photos_per_s'],2))"; }
for i in 1 2; do
run before before
run best after LYCHEE_FLASH_TILES=$TILES
done
step done
