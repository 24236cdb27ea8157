#!/usr/bin/env bash
# Checks that the `cuda` feature still builds, on a machine with no GPU and no CUDA
# toolkit: the Rust side (candle's CUDA backend, src/model/cuda/) and the kernels in
# src/kernels/, which build.rs compiles to PTX with nvcc. ../shared/tools/cuda-build.sh
# provides nvcc (from PyPI, installed once under ~/.cache/cuda-build-tools) and builds in
# target/cuda; it patches candle-core on the command line, which rewrites Cargo.lock, so
# the lock file is put back as it was afterwards. Extra arguments go to cargo check.
set -euo pipefail
cd "$(dirname "$0")/.."

tool=../shared/tools/cuda-build.sh
if [ ! -f "$tool" ]; then
  echo "check_cuda: $tool is missing (shared/ is expected beside the checkout)" >&2
  exit 1
fi
# The tool installs nvcc with pip.
if ! python3 -m pip --version >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip
fi

lock=$(mktemp)
cp Cargo.lock "$lock"
trap 'cp "$lock" Cargo.lock; rm -f "$lock"' EXIT
bash "$tool" check --release --features cuda "$@"
