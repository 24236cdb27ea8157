#!/usr/bin/env bash
# Builds the .deb with cargo-deb from target/release, checks what it holds, installs it,
# validates its desktop entry, and starts the app the way the desktop entry does, with a
# folder as the dropped argument (%F), under a virtual display. Needs root (dpkg) and the
# packages .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
cargo deb --no-build --quiet
deb=$(ls -t target/debian/lychee-rerank_*.deb | head -1)
contents=$(dpkg-deb -c "$deb")
for want in usr/bin/lychee-rerank usr/share/applications/lychee-rerank.desktop \
            usr/share/icons/hicolor/256x256/apps/lychee-rerank.png usr/share/doc/lychee-rerank/copyright; do
  grep -q "$want" <<<"$contents" || { echo "the .deb lacks $want" >&2; exit 1; }
done
dpkg-deb -f "$deb" Depends | grep -q libxkbcommon0
echo "deb: $(basename "$deb") holds the program, the desktop entry, the icons and the copyright"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "./$deb" >/dev/null
desktop-file-validate /usr/share/applications/lychee-rerank.desktop
exec_line=$(sed -n 's/^Exec=//p' /usr/share/applications/lychee-rerank.desktop)
# %F becomes the dropped folder
read -r -a cmd <<<"${exec_line/\%F/tests/fixtures/photos}"
bin=$(command -v "${cmd[0]}")
bash scripts/smoke_gui.sh "$bin" "${cmd[@]:1}"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get remove -y -qq lychee-rerank >/dev/null
echo "deb: installed, started from its desktop entry with a folder, removed"
