#!/usr/bin/env bash
# Smoke test of the Windows build, from Linux: cross-builds lychee-rerank.exe with
# Debian's mingw-w64 (x86_64-pc-windows-gnu), checks that it carries the icon and the
# name that wix/main.wxs expects, ranks the fixture photos with the tiny model under
# Debian's wine and compares every score with the Linux binary's on the same inputs, then
# starts its window under a virtual display (scripts/smoke_gui.sh). Used by .ci/run;
# installs what it needs (mingw-w64, wine, Xvfb, the Rust target) itself.
#
#   scripts/smoke_windows.sh [path/to/linux/lychee-rerank]
#   (default target/release/lychee-rerank, built when missing)
#
# Wine 8.0 (Debian 12) lacks bcryptprimitives.dll, whose ProcessPrng Rust's standard
# library calls for random bytes: scripts/windows/bcryptprimitives.c forwards it to
# advapi32's RtlGenRandom. That stand-in goes only into the throwaway wine prefix of this
# test, never next to the shipped program. SMOKE_WINDOWS_TOL (default 1e-4) is the largest
# score difference allowed between Windows and Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
LINUX_BIN=${1:-$target_dir/release/lychee-rerank}
TOL=${SMOKE_WINDOWS_TOL:-1e-4}
QUERY="a red umbrella on a sunny beach"
MODEL=tests/fixtures/tiny-model
PHOTOS=tests/fixtures/photos
fail() { echo "smoke-windows: $*" >&2; exit 1; }

# What it needs: the cross compiler (and windres, for the icon), wine without the 32-bit
# half, a virtual display, and the Rust target.
if command -v apt-get >/dev/null; then
  need=()
  for pkg in gcc-mingw-w64-x86-64 wine wine64 xvfb x11-utils libgl1 libgl1-mesa-dri python3; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
for tool in x86_64-w64-mingw32-gcc x86_64-w64-mingw32-windres wine wineboot wineserver Xvfb python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done
rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-gnu \
  || rustup target add x86_64-pc-windows-gnu

# The Linux binary to compare with (CI has built it already), then the Windows one.
[ -x "$LINUX_BIN" ] || cargo build --release --locked
start=$SECONDS
mkdir -p "$target_dir"
cargo build --release --locked --target x86_64-pc-windows-gnu 2>&1 | tee "$target_dir/smoke-windows-build.log" >&2
if grep -q "icon and version resource were not embedded" "$target_dir/smoke-windows-build.log"; then
  fail "the Windows build did not embed its icon (see the warning above)"
fi
echo "smoke-windows: cross-built in $((SECONDS - start)) s"

# The installer takes the program by this name (wix/main.wxs) and the build gives it.
exe=$target_dir/x86_64-pc-windows-gnu/release/lychee-rerank.exe
[ -f "$exe" ] || fail "the build made no $exe"
grep -q "Name='lychee-rerank.exe'" wix/main.wxs && grep -q 'CargoTargetBinDir)\\lychee-rerank.exe' wix/main.wxs \
  || fail "wix/main.wxs does not install lychee-rerank.exe, the name the build gives the program"
grep -q "<Icon Id='ProductICO' SourceFile='resources\\\\lychee-rerank.ico'/>" wix/main.wxs \
  || fail "wix/main.wxs does not show resources/lychee-rerank.ico, the icon that build.rs embeds in the program"
# The .exe carries the icon that the installer shows for it, with its version information.
python3 - "$exe" resources/lychee-rerank.ico <<'PY'
import struct, sys
exe, ico = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
pe = struct.unpack_from("<I", exe, 0x3C)[0]
if exe[pe:pe + 4] != b"PE\0\0":
    sys.exit(f"{sys.argv[1]} is not a PE file")
nsec, optsize = struct.unpack_from("<H", exe, pe + 6)[0], struct.unpack_from("<H", exe, pe + 20)[0]
opt = pe + 24
if struct.unpack_from("<H", exe, opt)[0] != 0x20B or struct.unpack_from("<H", exe, pe + 4)[0] != 0x8664:
    sys.exit(f"{sys.argv[1]} is not a 64-bit x86 program")
subsystem = struct.unpack_from("<H", exe, opt + 68)[0]
rva = struct.unpack_from("<I", exe, opt + 112 + 2 * 8)[0]  # data directory 2: resources
sections = [struct.unpack_from("<8sIIII", exe, opt + optsize + 40 * i) for i in range(nsec)]
def off(r):
    for _, vsize, vaddr, rawsize, raw in sections:
        if vaddr <= r < vaddr + max(vsize, rawsize):
            return raw + r - vaddr
    sys.exit("the resource directory lies in no section")
if rva == 0:
    sys.exit(f"{sys.argv[1]} has no resources: no icon, no version information")
base = off(rva)
def entries(at):
    named, ids = struct.unpack_from("<HH", exe, at + 12)
    return [struct.unpack_from("<II", exe, at + 16 + 8 * i) for i in range(named + ids)]
types = {name: child for name, child in entries(base)}
icons = types.get(3)
if icons is None or 14 not in types or 16 not in types:
    sys.exit(f"{sys.argv[1]} lacks its icon or its version information (resource types {sorted(types)})")
n_images = len(entries(base + (icons & 0x7FFFFFFF)))
n_ico = struct.unpack_from("<H", ico, 4)[0]
if n_images != n_ico:
    sys.exit(f"{sys.argv[1]} holds {n_images} icon images, {sys.argv[2]} has {n_ico}")
if subsystem != 2:
    sys.exit(f"{sys.argv[1]} is not a windowed (GUI-subsystem) program: subsystem {subsystem}")
print(f"smoke-windows: {sys.argv[1]} is a 64-bit windowed program carrying the icon of {sys.argv[2]} ({n_ico} sizes) and its version information")
PY

# A throwaway wine prefix with the stand-in bcryptprimitives.dll. Wine stays quiet but
# for the loader's errors (a DLL that a program needs and wine lacks).
tmp=$(mktemp -d)
export WINEPREFIX=$tmp/wine WINEDEBUG=-all,err+module WINEDLLOVERRIDES="mscoree,mshtml=;bcryptprimitives=n"
export LYCHEE_CACHE_DIR=$tmp/cache
cleanup() {
  timeout 20 wineserver -k 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
start=$SECONDS
timeout 180 wineboot -i >"$tmp/wineboot.log" 2>&1 || { cat "$tmp/wineboot.log" >&2; fail "wineboot did not make a wine prefix"; }
timeout 60 wineserver -w || true
system32=$WINEPREFIX/drive_c/windows/system32
[ -d "$system32" ] || fail "the wine prefix has no system32"
x86_64-w64-mingw32-gcc -shared -O2 -s -o "$system32/bcryptprimitives.dll" scripts/windows/bcryptprimitives.c -ladvapi32
echo "smoke-windows: $(wine --version) prefix made in $((SECONDS - start)) s, with the ProcessPrng stand-in"

# The same ranking on Linux and on Windows under wine (relative paths: wine maps the
# current folder to Z:).
rank=(rank --json --no-cache --query "$QUERY" --model "$MODEL" "$PHOTOS")
timeout 300 "$LINUX_BIN" "${rank[@]}" >"$tmp/linux.jsonl" 2>"$tmp/linux.log" \
  || { cat "$tmp/linux.log" >&2; fail "the Linux binary could not rank the fixture photos"; }
start=$SECONDS
timeout 600 wine "$exe" "${rank[@]}" >"$tmp/windows.jsonl" 2>"$tmp/windows.log" \
  || { cat "$tmp/windows.log" "$tmp/windows.jsonl" >&2; fail "lychee-rerank.exe under wine could not rank the fixture photos"; }
echo "smoke-windows: lychee-rerank.exe ranked the photos under wine in $((SECONDS - start)) s"
python3 - "$tmp/linux.jsonl" "$tmp/windows.jsonl" "$TOL" <<'PY'
import json, re, sys
def load(path):
    rows = []
    for line in open(path, encoding="utf-8"):
        if line.strip().startswith("{"):
            r = json.loads(line)
            r["name"] = re.split(r"[\\/]", r["path"])[-1]
            rows.append(r)
    return rows
linux, windows, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
scored = lambda rows: [r for r in rows if "score" in r]
failed = lambda rows: sorted(r["name"] for r in rows if "error" in r)
if not scored(linux):
    sys.exit("smoke-windows: the Linux binary scored no photo")
if failed(linux) != failed(windows):
    sys.exit(f"smoke-windows: photos that could not be scored differ: Linux {failed(linux)}, Windows {failed(windows)}")
lin = {r["name"]: r for r in scored(linux)}
win = {r["name"]: r for r in scored(windows)}
if sorted(lin) != sorted(win):
    sys.exit(f"smoke-windows: different photos scored: only on Linux {sorted(set(lin) - set(win))}, only on Windows {sorted(set(win) - set(lin))}")
bad, d_score, d_logit = [], 0.0, 0.0
for name in sorted(lin):
    a, b = lin[name], win[name]
    d = abs(a["score"] - b["score"])
    d_score = max(d_score, d)
    d_logit = max(d_logit, abs((a["logit_yes"] - a["logit_no"]) - (b["logit_yes"] - b["logit_no"])))
    if d > tol:
        bad.append(f"{name}: Linux {a['score']:.9f}, Windows {b['score']:.9f} (difference {d:.2e})")
    for key in ("visual_tokens", "input_size", "original_size"):
        if a.get(key) != b.get(key):
            bad.append(f"{name}: {key} is {a.get(key)} on Linux, {b.get(key)} on Windows")
if bad:
    sys.exit("smoke-windows: Windows and Linux disagree (tolerance %g):\n  " % tol + "\n  ".join(bad))
# The same order, best first; photos whose Linux scores lie within the tolerance may swap.
order_l = [r["name"] for r in scored(linux)]
order_w = [r["name"] for r in scored(windows)]
for i, (x, y) in enumerate(zip(order_l, order_w)):
    if x != y and abs(lin[x]["score"] - lin[y]["score"]) > tol:
        sys.exit(f"smoke-windows: rank {i + 1} is {x} on Linux, {y} on Windows")
print(f"smoke-windows: {len(lin)} photos ranked alike on Windows and Linux; largest score difference "
      f"{d_score:.2e}, largest logit difference {d_logit:.2e} (tolerance {tol:g})")
PY

# The window, under a virtual display, with the tiny model and the fixture photos.
bash scripts/smoke_gui.sh wine "$exe" --model "$MODEL" "$PHOTOS" \
  || fail "the window of lychee-rerank.exe did not come up under wine"
echo "smoke-windows: lychee-rerank.exe cross-built, ranked like Linux and opened its window under wine"
