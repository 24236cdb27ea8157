#!/usr/bin/env python3
"""Build the tiny SigLIP 2 test checkpoint and the reference outputs of `transformers` for it.

Everything under tests/fixtures/tiny-siglip/ and tests/fixtures/reference/siglip.* is produced
by this script; nothing there is written by hand. Run it from the project root with the
versions pinned in scripts/requirements-fixture.txt, after scripts/make_fixture.py (it reads
the photos that script writes to tests/fixtures/photos/ and does not change them):

    python3 scripts/make_siglip_fixture.py     # writes tests/fixtures/{tiny-siglip,reference/siglip.*}

What it makes:
- tests/fixtures/tiny-siglip/: a fixed-resolution SigLIP 2 checkpoint (transformers'
  `SiglipModel`, model_type "siglip") with random f32 weights, laid out like
  google/siglip2-base-patch16-256 (its files as far as they could be established without the
  Hub: config.json, model.safetensors, preprocessor_config.json, tokenizer.json,
  tokenizer.model, tokenizer_config.json, special_tokens_map.json). File by file:
    config.json              the real one is sparse (architectures, initializer_factor,
                             model_type, text_config {model_type, vocab_size 256000},
                             vision_config {model_type, image_size}, torch_dtype: every size of
                             the B/16 towers is a class default); this one has the same keys plus
                             the tiny sizes. Left to the class defaults,
                             as in the real file: hidden_act (gelu_pytorch_tanh), layer_norm_eps
                             (1e-6), max_position_embeddings (64), num_channels, attention_dropout
                             and the pad/bos/eos ids (SiglipTextConfig's legacy 1/49406/49407,
                             which mean nothing for the Gemma vocabulary and are not used).
                             text_config.projection_size differs from its hidden_size, so the
                             text head is a real projection (hidden -> vision hidden size).
    model.safetensors        one file, f32, the real tensor names (text_model.*, vision_model.*,
                             logit_scale, logit_bias), written by save_pretrained.
    preprocessor_config.json the real one (SiglipImageProcessor, resize to the square size with
                             resample 2 = bilinear, no crop, rescale 1/255, mean = std = 0.5,
                             processor_class SiglipProcessor) with size 64x64.
    tokenizer.json           a Gemma-kind tokenizer built here with the `tokenizers` library, with
                             the real file's pipeline: normalizer Replace(" " -> "▁"), no
                             pre-tokenizer, BPE with byte_fallback and fuse_unk and <unk>, the 256
                             <0xNN> byte tokens, decoder Replace/ByteFallback/Fuse, and the
                             post-processor the SigLIP 2 conversion saved ("$A <eos>": no <bos>,
                             an <eos> last). Specials as in Gemma: <pad>=0 <eos>=1 <bos>=2 <unk>=3
                             <mask>=4. The vocabulary is trained on the short English + Chinese
                             corpus below: some Chinese characters and one two-character word are
                             tokens, the others fall back to UTF-8 bytes; upper-case letters are
                             not in it (the corpus is lower-cased, as SigLIP 2's training text).
    tokenizer_config.json    as the real one: tokenizer_class GemmaTokenizer, add_bos_token false,
    special_tokens_map.json  add_eos_token true, do_lower_case true (which GemmaTokenizer ignores),
                             padding_side right, model_input_names ["input_ids"] (no attention
                             mask: the model was trained without one).
  The real checkpoint also ships tokenizer.model (SentencePiece); transformers 5 reads only
  tokenizer.json, so the tiny one has none.
- tests/fixtures/reference/siglip.json and siglip.safetensors: what transformers computes (f32,
  eager attention) for the queries and for every photo in tests/fixtures/photos/: input_ids,
  text and image embeddings (raw and L2-normalized), logit_scale, logit_bias, logits_per_text,
  and (in the safetensors file) the resized uint8 images and some full pixel_values.

Text, and a trap: transformers 5.17 loads the fixed-resolution SigLIP 2 checkpoints (model_type
"siglip", tokenizer_class "GemmaTokenizer") with AutoProcessor as SiglipProcessor + GemmaTokenizer,
which neither lower-cases nor pads (unless called with padding="max_length", max_length=64).
Siglip2Tokenizer, which lower-cases, and Siglip2Processor, whose defaults pad/truncate to 64, are
only picked for model_type "siglip2" (the NaFlex checkpoints). The product follows SigLIP 2's
training-time text: `input_ids` here are Siglip2Tokenizer's, loaded from the same tokenizer files,
called with Siglip2Processor's text defaults. What AutoProcessor itself gives is recorded beside
them (`input_ids_autoprocessor_max_length`, `input_ids_autoprocessor_default`).

Images: the product applies EXIF orientation and lays transparency over white before the model
sees a photo; the reference does the same two steps in PIL (as scripts/make_fixture.py does) and
hands the RGB image to the transformers processor, so everything from the resize on is
transformers' own code (the torchvision backend, which AutoProcessor picks by default: the uint8
image resized with antialiased bilinear to 64x64, then (x - 127.5) / 127.5 in f32).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import PIL
import tokenizers
import torch
import torchvision
import transformers
from PIL import Image, ImageOps
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    SiglipConfig,
    SiglipModel,
    Siglip2Tokenizer,
)
from transformers.models.siglip2.processing_siglip2 import Siglip2ProcessorKwargs

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0..4, as in Gemma
MAX_LEN = 64  # SigLIP 2's text length (text max_position_embeddings)
IMAGE_SIZE = 64
PATCH_SIZE = 16

# Tiny shapes. Text hidden size differs from the vision one: the text head projects
# text hidden (32) -> projection_size (48) = vision hidden, like the checkpoints whose text
# tower is narrower than the vision tower. head_dim 16 in both towers; 4x4 patches.
TEXT_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "projection_size": 48,
    "model_type": "siglip_text_model",
    # "vocab_size" is set from the tokenizer
}
VISION_CONFIG = {
    "hidden_size": 48,
    "image_size": IMAGE_SIZE,
    "intermediate_size": 96,
    "num_attention_heads": 3,
    "num_hidden_layers": 2,
    "patch_size": PATCH_SIZE,
    "model_type": "siglip_vision_model",
}


def model_config(vocab_size: int) -> dict:
    """config.json in the layout of google/siglip2-base-patch16-256 (sparse: defaults omitted)."""
    return {
        "architectures": ["SiglipModel"],
        "initializer_factor": 1.0,
        "model_type": "siglip",
        "text_config": {**TEXT_CONFIG, "vocab_size": vocab_size},
        "torch_dtype": "float32",
        "transformers_version": transformers.__version__,
        "vision_config": VISION_CONFIG,
    }


def preprocessor_config() -> dict:
    return {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    }


# ---------------------------------------------------------------------------------------
# Tokenizer

# A short corpus. Lower-case, as SigLIP 2's training text. The Chinese part uses only a few
# characters, often enough to become tokens (雪, 山, 红, 的, 下, 马 ...; 雪山 becomes one token);
# the query's other characters (脚 骑 藏 族 姑 娘 围 巾 ...) are not in it and fall back to bytes.
CORPUS_EN = [
    "a red umbrella on a sunny beach",
    "a photo of a dog running on the beach at sunset",
    "snow mountains under a blue sky",
    "a girl riding a horse in the mountains",
    "the same place at sunset, wider",
    "a small boat on a quiet lake in the morning",
    "two people walking along the river",
    "a red scarf and a white hat",
    "an old street with shops and lights at night",
    "a cat sleeping on a sofa",
    "a photo of the sea and the sky",
    "children playing in the snow",
    "a city skyline at night",
    "a bowl of noodles on a wooden table",
    "flowers in a green field under the sun",
    "a man reading a book in the park",
]
CORPUS_ZH = [
    "雪山下的红马",
    "雪山下的小马",
    "红色的山",
    "雪山的天空",
    "山下的马",
    "红马在雪山下",
    "天空下的雪山",
    "小马在山下",
]


def train_tokenizer() -> Tokenizer:
    """A small BPE vocabulary in Gemma's pipeline; returns the final tokenizer."""
    corpus = [line.lower() for line in CORPUS_EN * 4 + CORPUS_ZH * 6]
    trainer_tok = Tokenizer(BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    # Training only: words start with "▁" (as SentencePiece pieces do), so no merge crosses a word.
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=520,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=["▁"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"),
    )
    trainer_tok.train_from_iterator(corpus, trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    learned = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    # Gemma's order: specials, then (after some unused/control tokens we leave out) the 256 byte
    # tokens, then the pieces.
    vocab: dict[str, int] = {}
    for tok in SPECIALS:
        vocab[tok] = len(vocab)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for tok, _ in learned:
        if tok not in vocab:
            vocab[tok] = len(vocab)

    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token="<unk>",
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    # The post-processor SigLIP 2's conversion saved (GemmaTokenizerFast with add_bos_token=False,
    # add_eos_token=True): no <bos>, one <eos> after the text. transformers rebuilds the same one.
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <eos>:0", pair="$A:0 <eos>:0 $B:1 <eos>:1", special_tokens=[("<eos>", 1)]
    )
    for i, t in enumerate(SPECIALS):
        assert tok.token_to_id(t) == i, t
    return tok


def write_tokenizer(out: Path) -> int:
    tok = train_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPECIALS)
    }
    config = {
        "add_bos_token": False,
        "add_eos_token": True,
        "added_tokens_decoder": added,
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "do_lower_case": True,
        "eos_token": "<eos>",
        "extra_special_tokens": {},
        "mask_token": "<mask>",
        "model_input_names": ["input_ids"],
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "padding_side": "right",
        "processor_class": "SiglipProcessor",
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special_map = {
        "bos_token": {"content": "<bos>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "eos_token": {"content": "<eos>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "mask_token": {"content": "<mask>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "pad_token": {"content": "<pad>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "unk_token": {"content": "<unk>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return tok.get_vocab_size(with_added_tokens=True)


# ---------------------------------------------------------------------------------------
# Queries

LONG = (
    "a wide photo of snow mountains under a blue sky with a small red boat on a quiet lake, "
    "two people walking along the river, children playing in the snow, a cat sleeping on a sofa, "
    "flowers in a green field under the sun and a city skyline at night, "
    "a bowl of noodles on a wooden table in an old street with shops and lights"
)
QUERIES = {
    "en": "a red umbrella on a sunny beach",
    "zh": "雪山脚下骑马的藏族姑娘，红围巾",
    "mixed": "Tibetan girl 骑马 at sunset, red scarf 红围巾",
    "upper": "A Red UMBRELLA on a Sunny BEACH",
    # Lower-casing beyond ASCII: É, Å, Ö, Σ (final sigma: str.lower() gives ς, the tokenizers
    # Lowercase normalizer σ), İ (both give i + U+0307).
    "upper_non_ascii": "CAFÉ ÅNGSTRÖM ΟΔΟΣ İSTANBUL",
    "spaces": "  snow   mountains ",
    "long": LONG,
    "empty": "",
}


# ---------------------------------------------------------------------------------------
# Weights


def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Random weights scaled so that activations and logits are of order one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("logit_scale", "logit_bias"):
                continue
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embedding.weight" in name and "patch" not in name or name.endswith("probe"):
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
                # Sharper self-attention, so that the text tower's last position (a <pad> for
                # most queries) depends clearly on the content: query embeddings then differ.
                if name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
                    p.mul_(3.0)
        # SigLIP's initial temperature and bias (log 10, -10), nudged off the round values.
        model.logit_scale.fill_(math.log(10.0) + 0.1)
        model.logit_bias.fill_(-10.0 + 0.25)


# ---------------------------------------------------------------------------------------
# Photos


def load_as_product(path: Path) -> Image.Image:
    """The two steps the product takes before the model's own preprocessing (as make_fixture.py)."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if has_alpha:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return im.convert("RGB") if im.mode != "RGB" else im.copy()


PIXEL_VALUES_FOR = ["beach_landscape.jpg", "tiny_icon.png", "sticker_transparent.png", "rotated_exif.jpg"]


def l2(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(p=2, dim=-1, keepdim=True)


def floats(t: torch.Tensor) -> list:
    return t.detach().to(torch.float32).tolist()


# ---------------------------------------------------------------------------------------


def check_tokenizer_route(model_dir: Path, siglip2_tok, texts: list[str]) -> None:
    """The tokenizer.json alone (what a Rust `tokenizers` user loads), with a Lowercase normalizer
    in front and padding/truncation to 64, must give Siglip2Tokenizer's ids."""
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    raw.normalizer = normalizers.Sequence([normalizers.Lowercase(), raw.normalizer])
    raw.enable_truncation(max_length=MAX_LEN)
    raw.enable_padding(direction="right", pad_id=0, pad_token="<pad>", length=MAX_LEN)
    for text in texts:
        want = siglip2_tok([text], padding="max_length", truncation=True, max_length=MAX_LEN)["input_ids"][0]
        got = raw.encode(text).ids
        assert got == want, (text, got, want)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    parser.add_argument("--seed", type=int, default=20261212)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    model_dir = args.out / "tiny-siglip"
    photo_dir = args.out / "photos"
    ref_dir = args.out / "reference"
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    ref_dir.mkdir(parents=True, exist_ok=True)
    photo_files = sorted(p.name for p in photo_dir.iterdir() if p.is_file())
    assert photo_files, f"no photos in {photo_dir}: run scripts/make_fixture.py first"

    vocab_size = write_tokenizer(model_dir)
    config = SiglipConfig(**model_config(vocab_size))
    config._attn_implementation = "eager"
    model = SiglipModel(config).eval()
    init_weights(model, args.seed)
    model.save_pretrained(model_dir, safe_serialization=True)
    # The real layout's config.json (sparse), not the full one save_pretrained writes.
    (model_dir / "config.json").write_text(json.dumps(model_config(vocab_size), indent=2) + "\n")
    (model_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2) + "\n")
    for extra in ("generation_config.json",):
        (model_dir / extra).unlink(missing_ok=True)

    # Reload through from_pretrained: the reference reads the checkpoint as a user would.
    loaded = SiglipModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    want_sd, got_sd = model.state_dict(), loaded.state_dict()
    assert want_sd.keys() == got_sd.keys()
    for name in want_sd:
        assert torch.equal(want_sd[name], got_sd[name]), name
    model = loaded
    tc, vc = model.config.text_config, model.config.vision_config
    assert (tc.hidden_act, tc.layer_norm_eps, tc.max_position_embeddings) == ("gelu_pytorch_tanh", 1e-6, 64)
    assert (vc.hidden_act, vc.layer_norm_eps, vc.num_channels) == ("gelu_pytorch_tanh", 1e-6, 3)
    assert tc.projection_size == vc.hidden_size != tc.hidden_size

    # What AutoProcessor / AutoTokenizer make of the folder: the same classes as for the real
    # fixed-resolution checkpoint.
    processor = AutoProcessor.from_pretrained(model_dir)
    auto_tok = AutoTokenizer.from_pretrained(model_dir)
    ip = AutoImageProcessor.from_pretrained(model_dir)
    kinds = {
        "processor": type(processor).__name__,
        "tokenizer": type(processor.tokenizer).__name__,
        "auto_tokenizer": type(auto_tok).__name__,
        "image_processor": type(processor.image_processor).__name__,
        "auto_image_processor": type(ip).__name__,
    }
    assert kinds == {
        "processor": "SiglipProcessor",
        "tokenizer": "GemmaTokenizer",
        "auto_tokenizer": "GemmaTokenizer",
        "image_processor": "SiglipImageProcessor",
        "auto_image_processor": "SiglipImageProcessor",
    }, kinds
    assert len(auto_tok) == vocab_size == tc.vocab_size, (len(auto_tok), vocab_size)
    assert auto_tok.padding_side == "right" and auto_tok.model_input_names == ["input_ids"]
    # SigLIP 2's training-time text: Siglip2Tokenizer on the same files, Siglip2Processor's defaults.
    siglip2_tok = Siglip2Tokenizer.from_pretrained(model_dir)
    text_defaults = dict(Siglip2ProcessorKwargs._defaults["text_kwargs"])
    assert text_defaults == {"padding": "max_length", "truncation": True, "max_length": MAX_LEN}, text_defaults
    assert siglip2_tok.padding_side == "right" and siglip2_tok.model_input_names == ["input_ids"]

    samples = list(QUERIES.values()) + CORPUS_EN + CORPUS_ZH + ["Hello, WORLD!", "ÀÉÎÕÜ ǅ ẞ Σσς", "\t tab\nnew line"]
    check_tokenizer_route(model_dir, siglip2_tok, samples)

    tensors: dict[str, torch.Tensor] = {}
    queries = []
    with torch.no_grad():
        for key, text in QUERIES.items():
            enc = siglip2_tok([text], return_tensors="pt", **text_defaults)
            assert list(enc.keys()) == ["input_ids"], enc.keys()
            ids = enc["input_ids"]
            assert ids.shape == (1, MAX_LEN)
            auto_max = processor(text=[text], padding="max_length", truncation=True, max_length=MAX_LEN)
            auto_default = processor(text=[text])
            features = model.get_text_features(input_ids=ids).pooler_output[0]
            n_untruncated = len(siglip2_tok([text])["input_ids"][0])
            queries.append(
                {
                    "key": key,
                    "text": text,
                    "input_ids": ids[0].tolist(),
                    "tokens": siglip2_tok.convert_ids_to_tokens(ids[0].tolist()),
                    "lowercased_str_lower": text.lower(),
                    "lowercased_tokenizers": normalizers.Lowercase().normalize_str(text),
                    "n_tokens_untruncated": n_untruncated,
                    "truncated": n_untruncated > MAX_LEN,
                    "input_ids_autoprocessor_max_length": auto_max["input_ids"][0],
                    "input_ids_autoprocessor_default": auto_default["input_ids"][0],
                    "text_embeds": floats(features),
                    "text_embeds_normalized": floats(l2(features)),
                }
            )

        photos = []
        for file in photo_files:
            image = load_as_product(photo_dir / file)
            batch = processor(images=[image], return_tensors="pt")
            pixel_values = batch["pixel_values"]
            assert pixel_values.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and pixel_values.dtype == torch.float32
            # The resized uint8 image, from the image processor's own steps.
            chw = ip.process_image(image, do_convert_rgb=True)
            resized = ip.resize(chw[None], size=ip.size, resample=ip.resample)
            assert resized.dtype == torch.uint8 and tuple(resized.shape[-2:]) == (IMAGE_SIZE, IMAGE_SIZE)
            renorm = ip.rescale_and_normalize(resized, True, ip.rescale_factor, True, ip.image_mean, ip.image_std)
            assert torch.equal(renorm, pixel_values), file
            # How far torchvision's uint8 bilinear (antialiased) is from PIL's BILINEAR resize.
            pil = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR), dtype=np.int16)
            tv = resized[0].permute(1, 2, 0).numpy().astype(np.int16)
            diff = np.abs(pil - tv)
            features = model.get_image_features(pixel_values=pixel_values).pooler_output[0]
            tensors[f"{file}.resized_u8"] = resized[0].permute(1, 2, 0).contiguous()
            if file in PIXEL_VALUES_FOR:
                tensors[f"{file}.pixel_values"] = pixel_values[0].contiguous()
            photos.append(
                {
                    "file": file,
                    "size_after_exif": list(image.size),
                    "pil_bilinear_max_abs_diff": int(diff.max()),
                    "pil_bilinear_values_differing": int((diff > 0).sum()),
                    "image_embeds": floats(features),
                    "image_embeds_normalized": floats(l2(features)),
                }
            )

        # transformers' own forward over all queries x photos (batched).
        ids_all = torch.tensor([q["input_ids"] for q in queries])
        pixels_all = torch.cat(
            [processor(images=[load_as_product(photo_dir / f)], return_tensors="pt")["pixel_values"] for f in photo_files]
        )
        out = model(input_ids=ids_all, pixel_values=pixels_all)
        logits_per_text = out.logits_per_text
        text_n = torch.tensor([q["text_embeds_normalized"] for q in queries])
        image_n = torch.tensor([p["image_embeds_normalized"] for p in photos])
        assert torch.allclose(out.text_embeds, text_n, atol=1e-5), (out.text_embeds - text_n).abs().max()
        assert torch.allclose(out.image_embeds, image_n, atol=1e-5), (out.image_embeds - image_n).abs().max()
        recomputed = text_n @ image_n.T * model.logit_scale.exp() + model.logit_bias
        assert torch.allclose(logits_per_text, recomputed, atol=1e-4)

    assert [q["key"] for q in queries if q["truncated"]] == ["long"]
    save_file(tensors, str(ref_dir / "siglip.safetensors"))
    reference = {
        "produced_by": "scripts/make_siglip_fixture.py",
        "checkpoint": "tests/fixtures/tiny-siglip",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "tokenizers": tokenizers.__version__,
        "pillow": PIL.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "loaded_classes": kinds,
        "text_preprocessing": {
            "tokenizer": "Siglip2Tokenizer (Lowercase normalizer before Gemma's Replace(' ', '▁'))",
            "call": text_defaults,
            "attention_mask": None,
            "pad_id": 0,
            "eos_id": 1,
            "bos_added": False,
        },
        "image_preprocessing": {
            "image_processor": kinds["image_processor"],
            "backend": "torchvision",
            "size": [IMAGE_SIZE, IMAGE_SIZE],
            "resample": int(ip.resample),
            "antialias": True,
            "pixel_value": "(x - 127.5) / 127.5 in f32, x the resized uint8 value",
        },
        "logit_scale": model.logit_scale.item(),
        "logit_bias": model.logit_bias.item(),
        "queries": queries,
        "photos": photos,
        "logits_per_text": floats(logits_per_text),
        "safetensors": {
            "FILE.resized_u8": "uint8 [64, 64, 3] (HWC, RGB), every photo",
            "FILE.pixel_values": "float32 [3, 64, 64] (CHW), for " + ", ".join(PIXEL_VALUES_FOR),
        },
    }
    (ref_dir / "siglip.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    for path in [*model_dir.iterdir(), ref_dir / "siglip.json", ref_dir / "siglip.safetensors"]:
        path.chmod(0o644)  # safetensors writes its files owner-only
    lo, hi = logits_per_text.min().item(), logits_per_text.max().item()
    print(f"{len(queries)} queries x {len(photos)} photos; logits from {lo:.3f} to {hi:.3f}; vocab {vocab_size}")


if __name__ == "__main__":
    main()
