#!/usr/bin/env python3
"""The peer of the rerank server for text documents: transformers judging (query, text)
pairs with the Lychee prompt, in batches padded on the right, bf16, sdpa attention, the
yes/no logits read at each prompt's last token. Random weights of the 7B shape unless
--model names a folder (--save-random keeps them as a folder, for the server to load the
very same weights). Writes the documents it used as JSON lines (--texts-out), so that the
server is measured on the same texts.

    python3 scripts/bench_transformers_text.py --save-random /tmp/rand7b --documents 512 \\
        --tokens 200 --batches 16,64 --texts-out /tmp/texts.jsonl --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transformers import ROOT, random_model, save_checkpoint  # noqa: E402
from make_fixture import DEFAULT_INSTRUCTION, SYSTEM  # noqa: E402

QUERY = "boats in the harbour"
WORDS = ("harbour boats gulls pier nets sun morning fishing market quay rope tide river "
         "bridge stone lamp rain street cafe window sail mast anchor wave shore").split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--tokenizer-from", type=Path, default=ROOT / "tests/fixtures/tiny-model")
    ap.add_argument("--save-random", type=Path)
    ap.add_argument("--documents", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=200, help="about this many tokens per document")
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--texts-out", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    t0 = time.perf_counter()
    if args.model:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            args.model, dtype=torch.bfloat16 if device == "cuda" else torch.float32,
            attn_implementation="sdpa").to(device).eval()
        tok_dir = args.model
    else:
        model = random_model(device)
        tok_dir = args.tokenizer_from
        if args.save_random:
            save_checkpoint(model, args.save_random, args.tokenizer_from)
    load_s = time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = "<|endoftext|>"
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    rows = model.lm_head.weight[[yes, no]].float()

    # Documents of about --tokens tokens, all different.
    texts = []
    for i in range(args.documents):
        words, n = [], 0
        while n < args.tokens:
            words.append(WORDS[(i * 13 + len(words) * 7) % len(WORDS)])
            n = len(tok(" ".join(words))["input_ids"])
        texts.append(" ".join(words))
    if args.texts_out:
        args.texts_out.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    prefix = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<Instruct>: {DEFAULT_INSTRUCTION}"
              f"<Query>:{QUERY}\n")
    prompts = [f"{prefix}<Document>:{t}<|im_end|>\n<|im_start|>assistant\n" for t in texts]
    lengths = [len(tok(p)["input_ids"]) for p in prompts]

    def run(batch):
        enc = tok(batch, padding=True, return_tensors="pt").to(device)
        with torch.no_grad():
            h = model.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            last = enc["attention_mask"].sum(1) - 1
            h_last = h[torch.arange(h.shape[0], device=device), last].float()
            z = h_last @ rows.t()
        return z

    run(prompts[:2])
    sync()
    results = []
    for b in [int(x) for x in args.batches.split(",")]:
        if device == "cuda":
            torch.cuda.empty_cache()
        start = time.perf_counter()
        for i in range(0, len(prompts), b):
            run(prompts[i:i + b])
        sync()
        wall = time.perf_counter() - start
        row = {"impl": "transformers", "transformers": __import__("transformers").__version__,
               "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if device == "cuda" else "CPU", "dtype": "bf16" if device == "cuda" else "f32",
               "attention": "sdpa", "documents": len(prompts), "batch": b,
               "mean_prompt_tokens": sum(lengths) / len(lengths), "documents_per_s": len(prompts) / wall,
               "load_s": load_s}
        print(json.dumps(row), flush=True)
        results.append(row)
    best = max(results, key=lambda r: r["documents_per_s"])
    print(json.dumps({**best, "best": True}), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "best": best}, indent=1))


if __name__ == "__main__":
    main()
