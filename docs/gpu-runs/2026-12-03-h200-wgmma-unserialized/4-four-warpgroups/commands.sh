# Run 4: four warpgroups per block (16x64h) for the full blocks beside 8x64h and 12x64h:
# bench --ops, every tiling checked against the f32 reference.
set -u
. scripts/gpu_session.sh run4-log.txt
unpack_builds
export CUDA_CACHE_PATH=/tmp/jit-cache-run4
step "bench --ops, after"
timeout 200 /tmp/lychee-after bench --ops > "$OUT/ops.txt"; echo "rc=$?"
grep -E "vision full [28]|text causal 8" "$OUT/ops.txt" | sed -E 's/ +/ /g'
# Then, on the same machine (run5-log.txt, b_*.json): the whole judge in-process, random
# 7B-shaped weights, 256 photos at batch 8, the build before (da2d242) and the build after
# with the full blocks on 12x64h (the kept default then) and on 16x64h, twice alternating:
set -u; . scripts/gpu_session.sh run5-log.txt; unpack_builds; export CUDA_CACHE_PATH=/tmp/jit-cache-run5; for b in before after; do timeout 60 /tmp/lychee-$b bench --photos 16 --batch 8 --json /tmp/w.json > /dev/null; done; for r in 1 2; do for v in before:x 12:full=12x64h 16:full=16x64h; do n=${v%%:*}; t=${v#*:}; bin=after; [ $n = before ] && bin=before; step "$n round $r"; LYCHEE_FLASH_TILES=$t timeout 80 /tmp/lychee-$bin bench --photos 256 --batch 8 --json "$OUT/b_${n}_$r.json" > /dev/null; python3 -c "import json; r=json.load(open('$OUT/b_${n}_$r.json')); print(r['photos_per_s'], r['ms_per_photo'])"; done; done
