#!/usr/bin/env bash
# Screenshots of the real window for docs/: the binary under a virtual X display with the
# tiny model and the fixture photos; a query typed, Enter pressed, the ranking awaited,
# then the best photo's model output opened. Then the two stages: the tiny embedder too,
# the judge given the first stage's best 4 (saved settings written beforehand), Rerank
# pressed. Needs Xvfb, xdotool and ImageMagick.
#
#   scripts/screenshots.sh [path/to/lychee-rerank] [OUT_DIR]   (default: docs/)
set -euo pipefail
BIN=${1:-target/release/lychee-rerank}
OUT=${2:-docs}
tmp=$(mktemp -d)
display=:$((80 + RANDOM % 9))
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
"$BIN" --model tests/fixtures/tiny-model tests/fixtures/photos >"$tmp/app.log" 2>&1 &
app=$!
win=""
for _ in $(seq 1 120); do
  win=$(xdotool search --name '^Lychee Rerank$' 2>/dev/null | head -1 || true)
  [ -n "$win" ] && break
  sleep 0.5
done
[ -n "$win" ] || { echo "screenshots: the window did not appear" >&2; cat "$tmp/app.log" >&2; exit 1; }
sleep 3
# the query box is the first text field of the sidebar
xdotool windowfocus "$win" 2>/dev/null || true
xdotool mousemove --window "$win" 160 120
sleep 0.3
xdotool mousedown 1 && sleep 0.1 && xdotool mouseup 1
sleep 0.5
xdotool type --delay 20 "a red umbrella on a sunny beach"
xdotool key Return
sleep 6
import -window root "$OUT/screenshot.png"
# the best photo: the first tile of the grid
xdotool mousemove --window "$win" 490 180
sleep 0.3
xdotool mousedown 1 && sleep 0.1 && xdotool mouseup 1
sleep 2
import -window root "$OUT/screenshot-model-output.png"
kill "$app" 2>/dev/null || true
wait "$app" 2>/dev/null || true

# The two stages, with the judge's shortlist at 4 of the 12 photos.
mkdir -p "$XDG_DATA_HOME/lychee-rerank"
cat > "$XDG_DATA_HOME/lychee-rerank/app.ron" <<'RON'
{
    "lychee-rerank-settings": "(query:\"a red umbrella on a sunny beach\",shortlist:4)",
}
RON
"$BIN" --model tests/fixtures/tiny-model --embedder tests/fixtures/tiny-siglip tests/fixtures/photos >"$tmp/app2.log" 2>&1 &
app=$!
win=""
for _ in $(seq 1 120); do
  win=$(xdotool search --name '^Lychee Rerank$' 2>/dev/null | head -1 || true)
  [ -n "$win" ] && break
  sleep 0.5
done
[ -n "$win" ] || { echo "screenshots: the window did not appear" >&2; cat "$tmp/app2.log" >&2; exit 1; }
sleep 5
xdotool windowfocus "$win" 2>/dev/null || true
xdotool mousemove --window "$win" 160 120
sleep 0.3
xdotool mousedown 1 && sleep 0.1 && xdotool mouseup 1
sleep 0.5
xdotool key Return
sleep 6
import -window root "$OUT/screenshot-two-stages.png"
echo "screenshots: wrote $OUT/screenshot.png, $OUT/screenshot-model-output.png and $OUT/screenshot-two-stages.png"
