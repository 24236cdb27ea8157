#!/usr/bin/env bash
# Smoke test of the Windows installer description: checks that wix/main.wxs is well-formed,
# that every file it names exists, and builds a simplified MSI from it with Debian's wixl
# (msitools), which lacks WiX's UI extension and its sys.BUILDARCH variable. The real
# installer is built on Windows with `cargo wix`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import re, sys, xml.dom.minidom
from pathlib import Path
text = Path("wix/main.wxs").read_text(encoding="cp1252")
xml.dom.minidom.parseString(text.encode("cp1252"))
for src in re.findall(r"Source(?:File)?='([^']+)'", text):
    if "$(" in src:
        continue
    if not Path(src.replace("\\", "/")).is_file():
        sys.exit(f"wix/main.wxs names {src}, which does not exist")
for value in re.findall(r"Value='(wix\\[^']+)'", text):
    if not Path(value.replace("\\", "/")).is_file():
        sys.exit(f"wix/main.wxs names {value}, which does not exist")
print("wix/main.wxs: well-formed, every file it names exists")
PY
if ! command -v wixl >/dev/null; then
  echo "wixl not installed; skipping the MSI build"
  exit 0
fi
# wixl resolves sources relative to the current folder
tmp=target/wixl-smoke
rm -rf "$tmp" && mkdir -p "$tmp/bin"
printf 'placeholder for lychee-rerank.exe\n' > "$tmp/bin/lychee-rerank.exe"
python3 - "$tmp" <<'PY'
import re, sys
from pathlib import Path
s = Path("wix/main.wxs").read_text(encoding="cp1252")
s = re.sub(r"<\?if .*?<\?endif \?>", '<?define PlatformProgramFilesFolder = "ProgramFiles64Folder" ?>', s, flags=re.S)
s = re.sub(r"\s*<UI>.*?</UI>", "", s, flags=re.S)
s = re.sub(r"\s*<WixVariable[^>]*/>", "", s)
# nor the Environment and SetProperty elements: drop the optional PATH feature and the
# install-location property
s = re.sub(r"\s*<SetProperty[^>]*/>", "", s)
# wixl runs on Linux: forward slashes in paths
s = re.sub(r"(Source(?:File)?=')([^']+)'", lambda m: m.group(1) + m.group(2).replace("\\", "/") + "'", s)
s = re.sub(r"\s*<Component Id='Path'.*?</Component>", "", s, flags=re.S)
s = re.sub(r"\s*<Feature\s+Id='Environment'.*?</Feature>", "", s, flags=re.S)
Path(sys.argv[1], "smoke.wxs").write_text(s, encoding="cp1252")
PY
wixl -a x64 -D Version=0.1.0 -D CargoTargetBinDir="$tmp/bin" -o "$tmp/smoke.msi" "$tmp/smoke.wxs"
msiinfo export "$tmp/smoke.msi" File | grep -q lychee-rerank.exe
msiinfo export "$tmp/smoke.msi" Shortcut | grep -q "Lychee Rerank"
echo "wixl built an MSI with the program and its Start-menu shortcut"
