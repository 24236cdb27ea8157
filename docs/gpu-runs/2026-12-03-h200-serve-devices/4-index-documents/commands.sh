# The dealing of the index's and the documents' batches on CUDA: two copies on the one
# GPU against one, the tiny fixtures (the code path, not a speed).
set -u
. scripts/gpu_session.sh run5-log.txt
unpack_build
step "256 synthetic photos"
mkdir -p /tmp/p && python3 -c "import sys; sys.path.insert(0, 'scripts'); from bench_transformers import synthetic_photos; from pathlib import Path; synthetic_photos(Path('/tmp/p'), 256, 1024, 768)"
for g in 0 0,0; do
  step "index --gpus $g"
  LYCHEE_CACHE_DIR=/tmp/cache-$g timeout 200 "$BIN" index --embedder tests/fixtures/tiny-siglip --gpus $g --json /tmp/p 2> /tmp/index-$g.err; echo "rc=$?"; grep -vE "^\s*$" /tmp/index-$g.err | grep -v "indexed [0-9]" | tail -4
  LYCHEE_CACHE_DIR=/tmp/cache-$g timeout 100 "$BIN" search --embedder tests/fixtures/tiny-siglip --cpu --query "a beach" --json /tmp/p > "$OUT/search-$g.jsonl" 2> /dev/null; echo "search rc=$?"
done
python3 - "$OUT/search-0.jsonl" "$OUT/search-0,0.jsonl" <<'PY'
import json, sys
a, b = [{(l := json.loads(s))["path"]: l["similarity"] for s in open(f) if '"similarity"' in s} for f in sys.argv[1:]]
print(json.dumps({"photos": len(a), "of_two": len(b), "max_abs_diff": max(abs(a[p] - b[p]) for p in a)}))
PY
step "rank --documents, --gpus 0 and 0,0"
ls /tmp/p | head -48 | python3 -c "import json, sys; [print(json.dumps({'image': '/tmp/p/' + l.strip()})) for l in sys.stdin]; [print(json.dumps({'text': f'a beach number {i}'})) for i in range(16)]" > /tmp/docs.jsonl
for g in 0 0,0; do
  timeout 200 "$BIN" rank --model tests/fixtures/tiny-model --gpus $g --no-cache --json --query "a beach" --documents /tmp/docs.jsonl > "$OUT/docs-$g.jsonl" 2> /tmp/docs-$g.err; echo "rc=$?"; grep -vE "^\s*$" /tmp/docs-$g.err | tail -3
done
python3 - "$OUT/docs-0.jsonl" "$OUT/docs-0,0.jsonl" <<'PY'
import json, sys
a, b = [{(l := json.loads(s))["line"]: l["score"] for s in open(f) if '"score"' in s} for f in sys.argv[1:]]
print(json.dumps({"documents": len(a), "of_two": len(b), "identical": sum(a[k] == b.get(k) for k in a)}))
PY
step done
