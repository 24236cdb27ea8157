#!/usr/bin/env python3
"""transformers' yes/no logits for every photo in a folder, as the product prompts them.

Photos are opened as the product opens them (EXIF orientation applied, transparency over
white) and scored one at a time with the Lychee prompt. Writes JSON lines with the same
fields as `lychee-rerank rank --json` (path, score, logit_yes, logit_no, visual_tokens).

    python3 scripts/reference_scores.py --model DIR --query TEXT --dtype bf16 PHOTO_DIR > ref.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixture import DEFAULT_INSTRUCTION, load_as_product, prompt  # noqa: E402

PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--query", default="")
    ap.add_argument("--query-image", type=Path)
    ap.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--max-pixels", type=int, default=1280 * 28 * 28)
    ap.add_argument("photos", type=Path)
    args = ap.parse_args()

    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        args.model, dtype=dtype, attn_implementation=args.attn
    ).to(device).eval()
    pre = json.loads((args.model / "preprocessor_config.json").read_text())
    max_pixels = min(args.max_pixels, pre.get("max_pixels", args.max_pixels))
    processor = AutoProcessor.from_pretrained(args.model, max_pixels=max_pixels)
    tok = processor.tokenizer
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    query_image = load_as_product(args.query_image) if args.query_image else None
    text = prompt(args.instruction, args.query, query_image is not None)
    files = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in PHOTO_EXTENSIONS)
    for path in files:
        images = ([query_image] if query_image is not None else []) + [load_as_product(path)]
        inputs = processor(text=[text], images=images, return_tensors="pt").to(device)
        with torch.no_grad():
            logits = model(**inputs, logits_to_keep=1).logits[0, -1].float()
        z_yes, z_no = logits[yes].item(), logits[no].item()
        grid = inputs["image_grid_thw"][-1]
        print(json.dumps({
            "path": str(path),
            "score": 1.0 / (1.0 + math.exp(-(z_yes - z_no))),
            "logit_yes": z_yes,
            "logit_no": z_no,
            "visual_tokens": int(grid.prod().item()) // 4,
        }), flush=True)


if __name__ == "__main__":
    main()
