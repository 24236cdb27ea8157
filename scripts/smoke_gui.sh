#!/usr/bin/env bash
# Starts the real binary under a virtual X display with the tiny model and the fixture
# photos, and checks that its window appears and stays up, and that the photos given as
# arguments arrived (their thumbnails are made in the cache folder). Used by .ci/run; needs Xvfb,
# xwininfo (x11-utils) and Mesa's software OpenGL.
#
#   scripts/smoke_gui.sh [path/to/lychee-rerank [ARGS...]]
#   (ARGS default to: --model tests/fixtures/tiny-model tests/fixtures/photos)
set -euo pipefail
BIN=${1:-target/release/lychee-rerank}
shift || true
if [ $# -eq 0 ]; then
  set -- --model tests/fixtures/tiny-model tests/fixtures/photos
fi
tmp=$(mktemp -d)
display=:$((90 + RANDOM % 9))
cleanup() {
  kill "${app:-}" "${xvfb:-}" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
Xvfb "$display" -screen 0 1280x820x24 >"$tmp/xvfb.log" 2>&1 &
xvfb=$!
sleep 1
export DISPLAY=$display HOME=$tmp/home XDG_CONFIG_HOME=$tmp/config XDG_DATA_HOME=$tmp/data LYCHEE_CACHE_DIR=$tmp/cache
mkdir -p "$HOME"
"$BIN" "$@" >"$tmp/app.log" 2>&1 &
app=$!
for _ in $(seq 1 120); do
  if xwininfo -root -tree 2>/dev/null | grep -q '"Lychee Rerank"'; then
    for _ in $(seq 1 60); do
      kill -0 "$app" 2>/dev/null || break 2
      # Before the first thumbnail the folder may not exist yet: find fails then, and with
      # pipefail and -e that would end the script without a word.
      thumbs=$( (find "$LYCHEE_CACHE_DIR/thumbnails" -name '*.jpg' 2>/dev/null || true) | wc -l)
      if [ "$thumbs" -gt 0 ]; then
        sleep 1
        kill -0 "$app" 2>/dev/null || break 2
        echo "smoke: the window appeared, shows the photos given to it ($thumbs thumbnails made) and is running"
        exit 0
      fi
      sleep 0.5
    done
    echo "smoke: the window appeared but made no thumbnail of the photos given to it" >&2
    break
  fi
  kill -0 "$app" 2>/dev/null || break
  sleep 0.5
done
echo "smoke: the window did not appear; the app said:" >&2
cat "$tmp/app.log" >&2
exit 1
