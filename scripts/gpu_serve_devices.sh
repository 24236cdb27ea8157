#!/usr/bin/env bash
# The rerank server on several copies of the model (`serve --gpus LIST`) against one copy
# (`--gpus 0`), on the GPU machine: random 7B weights, synthetic photos of 1024x768.
# Each server answers one request of 64 photos (its batches dealt over the copies; the two
# servers' scores compared document by document), then 16 clients sending 2 requests of 8
# other photos each (photos/s, every request answered; no photo sent twice, so that the
# visual tokens a copy keeps for photos it has seen do not count). LIST=0,0 (the default) is
# two copies on one GPU, the test of the dealing code on a machine of one GPU; LIST=0,1 on
# a machine of two. The CUDA binary is carried as for scripts/gpu_run.sh.
#
#   (device) OUT=/tmp/out LIST=0,0 bash scripts/gpu_serve_devices.sh
set -u
. scripts/gpu_session.sh serve-devices-log.txt
LIST=${LIST:-0,0}
PORT=8080
URL=http://127.0.0.1:$PORT
unpack_build

step machine
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader

saved_weights
mkdir -p /tmp/p320 && python3 -c "import sys; sys.path.insert(0, 'scripts'); from bench_transformers import synthetic_photos; from pathlib import Path; synthetic_photos(Path('/tmp/p320'), 320, 1024, 768)"
mkdir -p /tmp/p64 /tmp/p256
ls /tmp/p320 | sort | head -n 64 | xargs -I{} ln -sf /tmp/p320/{} /tmp/p64/{}
ls /tmp/p320 | sort | tail -n 256 | xargs -I{} ln -sf /tmp/p320/{} /tmp/p256/{}

serve_run() { # name, then the server's arguments
  local name=$1 server
  shift
  step "server, $name: serve $*"
  "$BIN" serve --model "$R7B" --port $PORT "$@" > "$OUT/serve_$name.log" 2>&1 &
  server=$!
  wait_healthy "$URL" "$server"
  grep -vE "^\s*$" "$OUT/serve_$name.log"
  step "$name: one request of 64 photos"
  timeout 200 python3 scripts/load_test.py --url "$URL" --clients 1 --requests 1 --documents 64 --image-dir /tmp/p64 \
    --scores "$OUT/scores_$name.jsonl" --json "$OUT/one_$name.json" | grep -E '"(documents_per_s|every_request_answered)"'
  step "$name: 16 clients x 2 requests of 8 photos"
  timeout 300 python3 scripts/load_test.py --url "$URL" --clients 16 --requests 2 --documents 8 --image-dir /tmp/p256 \
    --pid $server --json "$OUT/load_$name.json" | grep -E '"(documents_per_s|latency_p50_ms|latency_p99_ms|every_request_answered|statuses)"'
  kill "$server"; wait "$server" 2>/dev/null
  grep -E "stopped working|note|error" "$OUT/serve_$name.log" | tail -n 5
}
serve_run one --gpus 0
serve_run many --gpus "$LIST"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader

step "the two servers' scores, document by document"
python3 - "$OUT/scores_one.jsonl" "$OUT/scores_many.jsonl" <<'PY'
import json, sys
one, many = [{l["index"]: l["score"] for l in map(json.loads, open(f))} for f in sys.argv[1:]]
print(json.dumps({"documents": len(many), "of": len(one),
                  "identical": sum(one[i] == many.get(i) for i in one),
                  "max_abs_diff": max((abs(one[i] - many[i]) for i in one if i in many), default=None)}))
PY
step done
