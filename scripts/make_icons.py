#!/usr/bin/env python3
"""Draws the app icon (a lychee with a leaf) and writes every size the packages need:
assets/icon-256.png (compiled into the binary for the window icon),
resources/icons/hicolor/<N>x<N>/apps/lychee-rerank.png for Linux, and
resources/lychee-rerank.ico for the Windows executable and installer.

    python3 scripts/make_icons.py
"""

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
SIZES = [16, 24, 32, 48, 64, 128, 256, 512]


def draw(size: int = 1024) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    cx, cy, r = size * 0.5, size * 0.56, size * 0.36
    # fruit: a red-to-pink disc with a soft highlight
    for i in range(int(r), 0, -2):
        t = i / r
        col = (int(200 + 40 * (1 - t)), int(30 + 60 * (1 - t)), int(60 + 50 * (1 - t)), 255)
        d.ellipse([cx - i, cy - i, cx + i, cy + i], fill=col)
    # the bumpy skin
    step = size * 0.065
    for yy in range(-6, 7):
        for xx in range(-6, 7):
            px = cx + xx * step + (yy % 2) * step / 2
            py = cy + yy * step * 0.87
            if math.hypot(px - cx, py - cy) < r * 0.9:
                s = size * 0.012
                d.ellipse([px - s, py - s, px + s, py + s], fill=(150, 20, 45, 255))
    # highlight
    hl = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    hd = ImageDraw.Draw(hl)
    hd.ellipse([cx - r * 0.55, cy - r * 0.75, cx - r * 0.05, cy - r * 0.35], fill=(255, 255, 255, 90))
    img = Image.alpha_composite(img, hl.filter(ImageFilter.GaussianBlur(size * 0.02)))
    d = ImageDraw.Draw(img)
    # stem and leaf
    d.line([cx, cy - r * 0.95, cx + size * 0.03, cy - r * 1.25], fill=(90, 60, 30, 255), width=int(size * 0.03))
    leaf = [
        (cx + size * 0.03, cy - r * 1.2),
        (cx + size * 0.17, cy - r * 1.45),
        (cx + size * 0.33, cy - r * 1.35),
        (cx + size * 0.2, cy - r * 1.12),
    ]
    d.polygon(leaf, fill=(60, 160, 70, 255))
    d.line([leaf[0], leaf[2]], fill=(40, 120, 50, 255), width=int(size * 0.01))
    return img


def main() -> None:
    big = draw()
    (ROOT / "assets").mkdir(exist_ok=True)
    big.resize((256, 256), Image.LANCZOS).save(ROOT / "assets" / "icon-256.png", optimize=True)
    for n in SIZES:
        out = ROOT / "resources" / "icons" / "hicolor" / f"{n}x{n}" / "apps"
        out.mkdir(parents=True, exist_ok=True)
        big.resize((n, n), Image.LANCZOS).save(out / "lychee-rerank.png", optimize=True)
    big.resize((256, 256), Image.LANCZOS).save(
        ROOT / "resources" / "lychee-rerank.ico", sizes=[(n, n) for n in (16, 24, 32, 48, 64, 128, 256)]
    )


if __name__ == "__main__":
    main()
