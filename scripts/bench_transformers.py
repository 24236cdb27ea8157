#!/usr/bin/env python3
"""The peer of `lychee-rerank bench`: the same ranking in Hugging Face transformers.

Synthetic JPEG photos of one size are scored with the Lychee prompt by
Qwen2_5_VLForConditionalGeneration in bf16 with sdpa attention, at several batch sizes,
the processor (PIL decode, torchvision resize) included as in a real pipeline. Weights
are random of the 7B shape unless --model names a folder. Prints one JSON object per
batch size (the same fields as `lychee-rerank bench`) and the best one last.

    python3 scripts/bench_transformers.py --photos 64 --batches 1,2,4,8 --json out.json
    python3 scripts/bench_transformers.py --save-random /tmp/rand7b   # keep the weights

With --save-random the random checkpoint is written in the published layout so that
`lychee-rerank bench --model DIR` and `lychee-rerank rank --model DIR` measure and
score the very same weights.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixture import DEFAULT_INSTRUCTION, legacy_name, prompt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUERY = "a red umbrella on a sunny beach"

LYCHEE_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.3",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {"hidden_size": 1280, "out_hidden_size": 3584, "in_chans": 3},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}
MAX_PIXELS = 1280 * 28 * 28
MIN_PIXELS = 4 * 28 * 28


def synthetic_photos(directory: Path, n: int, width: int, height: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        y = np.linspace(0, 1, height)[:, None, None]
        x = np.linspace(0, 1, width)[None, :, None]
        img = np.concatenate([90 + 40 * x + 0 * y, 140 + 60 * y + 0 * x, 200 + 40 * y * x], axis=2)
        img = img + rng.normal(0, 8, img.shape)
        cx, cy, r = rng.uniform(0.2, 0.8) * width, height / 4, height / 8
        yy, xx = np.mgrid[0:height, 0:width]
        img[((xx - cx) ** 2 + (yy - cy) ** 2) < r * r] = (250, 220, 90)
        path = directory / f"bench-{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def random_model(device: str):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(**LYCHEE_7B)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config)
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("ln_q.weight"):
                p.normal_(1.0, 0.1)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.02)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()))
    return model.eval()


def save_checkpoint(model, out: Path, tokenizer_from: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {legacy_name(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    names = sorted(tensors)
    shards, current, size = [], [], 0
    for n in names:
        b = tensors[n].numel() * tensors[n].element_size()
        if current and size + b > 5 << 30:
            shards.append(current)
            current, size = [], 0
        current.append(n)
        size += b
    shards.append(current)
    weight_map = {}
    for i, group in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n].cpu() for n in group}, str(out / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in group})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(LYCHEE_7B, indent=2))
    pre = json.loads((tokenizer_from / "preprocessor_config.json").read_text())
    pre.update({"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS})
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / f, out / f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a model folder (default: random 7B-shaped weights)")
    ap.add_argument("--tokenizer-from", type=Path, default=ROOT / "tests/fixtures/tiny-model")
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--save-random", type=Path, help="write the random weights here as a model folder")
    ap.add_argument("--photo-dir", type=Path, help="write the photos here and keep them")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"

    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    t0 = time.perf_counter()
    if args.model:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            args.model, dtype=torch.bfloat16 if cuda else torch.float32, attn_implementation="sdpa"
        ).to(device).eval()
        processor_dir = args.model
        model_name = str(args.model)
    else:
        model = random_model(device)
        processor_dir = args.tokenizer_from
        model_name = "random weights, Lychee-rerank-mm 7B shape"
        if args.save_random:
            save_checkpoint(model, args.save_random, args.tokenizer_from)
    load_s = time.perf_counter() - t0
    processor = AutoProcessor.from_pretrained(processor_dir, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    tok = processor.tokenizer
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    text = prompt(DEFAULT_INSTRUCTION, QUERY, False)

    tmp = args.photo_dir or Path(tempfile.mkdtemp(prefix="lychee-bench-tf-"))
    tmp.mkdir(parents=True, exist_ok=True)
    photos = synthetic_photos(tmp, args.photos, width, height)

    def run_batch(paths):
        images = [Image.open(p).convert("RGB") for p in paths]
        inputs = processor(text=[text] * len(images), images=images, return_tensors="pt").to(device)
        with torch.no_grad():
            out = model(**inputs, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        return logits[:, yes].tolist(), logits[:, no].tolist(), inputs["image_grid_thw"]

    # warm-up (kernels, cuBLAS handles, allocator)
    run_batch(photos[:1])
    if cuda:
        torch.cuda.synchronize()

    results = []
    for b in [int(v) for v in args.batches.split(",")]:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            start = time.perf_counter()
            first = None
            logits = []
            for i in range(0, len(photos), b):
                ys, ns, grid = run_batch(photos[i : i + b])
                if cuda:
                    torch.cuda.synchronize()
                first = first or (time.perf_counter() - start)
                logits.extend(zip(ys, ns))
            wall = time.perf_counter() - start
        except torch.OutOfMemoryError:
            print(json.dumps({"impl": "transformers", "batch": b, "error": "out of memory"}), flush=True)
            break
        tokens = int(grid[0].prod().item()) // 4
        row = {
            "impl": "transformers",
            "transformers": __import__("transformers").__version__,
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if cuda else "CPU",
            "dtype": "bf16",
            "attention": "sdpa",
            "model": model_name,
            "photos": len(photos),
            "size": [width, height],
            "visual_tokens": tokens,
            "batch": b,
            "photos_per_s": len(photos) / wall,
            "ms_per_photo": 1e3 * wall / len(photos),
            "first_score_ms": 1e3 * first,
            "load_s": load_s,
            "gpu_mib_peak_allocated": torch.cuda.max_memory_allocated() >> 20 if cuda else None,
            "gpu_mib_peak_reserved": torch.cuda.max_memory_reserved() >> 20 if cuda else None,
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    best = max(results, key=lambda r: r["photos_per_s"])
    print(json.dumps({**best, "best": True}), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "best": best}, indent=1))
    if not args.photo_dir:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
