# Sourced first by the GPU session scripts (scripts/gpu_*.sh), with the name of their log:
#   . scripts/gpu_session.sh flash-log.txt
# Makes the output folder $OUT (./gpu-out unless set), copies everything printed from then
# on to $OUT/<log>, sets the environment the binaries and transformers need and where the
# random 7B-shaped weights go ($R7B), and defines the helpers below.
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/$1") 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
R7B=/tmp/rand7b
BIN=/tmp/lychee-rerank

# A step's header in the log, with the time.
step() { echo; echo "=== $* ($(date +%T))"; }
# Whether $STEPS (set by the script) names step $1.
has() { [[ " ${STEPS:-} " == *" $1 "* ]]; }
# The carried build (.gpu/lychee-rerank.xz) as $BIN, unpacked once per machine.
unpack_build() {
  [ -x "$BIN" ] || { xz -dc .gpu/lychee-rerank.xz > "$BIN" && chmod +x "$BIN"; }
}
# The builds before and after a change ($BEFORE, $AFTER; .gpu/before.xz and
# .gpu/lychee-rerank.xz unless set) as /tmp/lychee-before and /tmp/lychee-after.
unpack_builds() {
  local side src
  for side in before after; do
    src=${BEFORE:-.gpu/before.xz}; [ "$side" = after ] && src=${AFTER:-.gpu/lychee-rerank.xz}
    xz -dc "$src" > "/tmp/lychee-$side" && chmod +x "/tmp/lychee-$side"
  done
}
# Random weights of the 7B shape in the published layout at $R7B, saved by transformers
# once per machine.
saved_weights() {
  step "random 7B weights (transformers, saved)"
  [ -f "$R7B/config.json" ] || timeout 420 python3 scripts/bench_transformers_text.py --save-random "$R7B" \
    --documents 4 --tokens 20 --batches 4 > /dev/null
}
# Waits up to 2 minutes for the server at URL $1 (process $2) to answer /health.
wait_healthy() {
  for _ in $(seq 1 240); do
    python3 -c "import urllib.request; urllib.request.urlopen('$1/health', timeout=2)" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
