set -u
. scripts/gpu_session.sh log.txt
export CUDA_CACHE_PATH=/tmp/jit-cache
unpack_build
step "ops"
timeout 240 $BIN bench --ops > "$OUT/ops.txt" 2>&1; echo "exit $?"
grep -E "^product|products of|vision (full|windows) 8|text causal 8|rror|differs" "$OUT/ops.txt" | cut -c1-400
step "warm"
timeout 120 $BIN bench --photos 16 --batch 8 2>&1 | tail -2
step "gaps 256 b8"
LYCHEE_GAPS=1 timeout 200 $BIN bench --photos 256 --batch 8 --json "$OUT/gaps.json" 2>&1 | tail -3
python3 -c "import json;d=json.load(open('$OUT/gaps.json'));print(d.get('photos_per_s'));g=d.get('device_gaps');print(json.dumps(g,indent=0) if g else d.keys())"
step done
