#!/usr/bin/env bash
# The rerank server on the GPU machine, beside its transformers peer, in one session:
# text documents of about 200 tokens (transformers in batches of 16 and 64, then the
# server on the very same weights and texts, with 1, 4 and 16 clients sending 64
# documents per request), photos through the server and through `rank` on the same
# photos, and the first stage's embedder alone. The CUDA binary is carried as for
# scripts/gpu_run.sh (.gpu/lychee-rerank.xz).
#
#   (device) OUT=/tmp/out bash scripts/gpu_serve.sh            # STEPS="text photos index" by default
set -u
. scripts/gpu_session.sh serve-log.txt
unpack_build
PORT=8080
URL=http://127.0.0.1:$PORT
STEPS=${STEPS:-text photos index}

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if has text; then
  step "transformers: 512 text documents of about 200 tokens, random 7B weights (saved for the server)"
  timeout 420 python3 scripts/bench_transformers_text.py --save-random "$R7B" --documents 512 --tokens 200 \
    --batches 16,64 --texts-out /tmp/texts.jsonl --json "$OUT/tf_text.json"
else
  step "random 7B weights for the server (transformers, saved)"
  timeout 420 python3 scripts/bench_transformers_text.py --save-random "$R7B" --documents 4 --tokens 20 --batches 4 > /dev/null
fi

step "the server on the same weights"
"$BIN" serve --model "$R7B" --port $PORT > /tmp/serve.log 2>&1 &
server=$!
wait_healthy "$URL" "$server"
cat /tmp/serve.log
for c in $(has text && echo 1 4 16); do
  r=$(( 8 / (c < 8 ? c : 8) )); [ "$r" -lt 1 ] && r=1
  step "server, text: $c clients x $r requests of 64 documents"
  timeout 300 python3 scripts/load_test.py --url "$URL" --clients $c --requests $r --documents 64 \
    --texts /tmp/texts.jsonl --format tei --pid $server --json "/tmp/serve_text_$c.json" | grep -E '"(documents_per_s|requests_per_s|latency_p50_ms|latency_p99_ms|outside_model_p99_ms|every_request_answered)"'
done

if has photos; then
step "128 photos of 1024x768, through the server (4 clients x 4 requests of 8 photos) and through rank"
mkdir -p /tmp/p64 && python3 -c "import sys; sys.path.insert(0, 'scripts'); from bench_transformers import synthetic_photos; from pathlib import Path; synthetic_photos(Path('/tmp/p64'), 128, 1024, 768)"
timeout 300 python3 scripts/load_test.py --url "$URL" --clients 4 --requests 4 --documents 8 --image-dir /tmp/p64 \
  --pid $server --json "$OUT/serve_photos.json" | grep -E '"(documents_per_s|latency_p50_ms|every_request_answered)"'
kill "$server"; wait "$server" 2>/dev/null
timeout 300 "$BIN" rank --model "$R7B" --no-cache --query "boats in the harbour" --json /tmp/p64 2>&1 >/dev/null | grep -E "^ranked|model ready"
fi
kill "$server" 2>/dev/null; wait "$server" 2>/dev/null

if has index; then
  step "the first stage's embedder alone, and indexing"
  timeout 300 "$BIN" bench-index --vectors 100000 --photos 512 --json "$OUT/bench_index_gpu.json" > /dev/null
fi
step done
