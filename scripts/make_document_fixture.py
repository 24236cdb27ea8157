#!/usr/bin/env python3
"""transformers' judgement of text documents and image+text documents, for the tests.

The reranker judges photos, but also text, and images followed by text (MODEL_SPEC.md:
the document side is written like the query side: image first, then text). This script
runs the tiny checkpoint that scripts/make_fixture.py made (tests/fixtures/tiny-model) on
every query of tests/fixtures/reference/reference.json against a few text documents
(English, Chinese, mixed, one long) and image+text documents (a fixture photo with a
caption), and writes tests/fixtures/reference/documents.json: the documents, and for each
(query, document) the input ids of the whole prompt and the yes/no logits (f32, eager
attention). It does not touch the other fixtures.

    pyenv/bin/python scripts/make_document_fixture.py
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixture import DEFAULT_INSTRUCTION, FIXTURES, SYSTEM, load_as_product, side  # noqa: E402

DOCUMENTS = [
    {"key": "text_en", "text": "A red umbrella stands in the sand of a sunny beach, the sea behind it.", "image": None},
    {"key": "text_zh", "text": "雪山脚下，一位藏族姑娘骑着马，戴着红色的围巾。", "image": None},
    {"key": "text_mixed", "text": "Snow mountains 雪山 at dawn; no people.", "image": None},
    {"key": "text_short", "text": "cat", "image": None},
    {
        "key": "text_long",
        "text": " ".join(
            ["The harbour at noon: fishing boats, gulls over the pier, nets drying in the sun."] * 6
        ),
        "image": None,
    },
    {"key": "image_text_beach", "text": "Holiday photo, August.", "image": "landscape"},
    {"key": "image_text_portrait", "text": "肖像，室内光线", "image": "portrait"},
]


def prompt(instruction: str, query_text: str, query_has_image: bool, doc_text: str, doc_has_image: bool) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n<Instruct>: {instruction}<Query>:{side(query_has_image, query_text)}\n"
        f"<Document>:{side(doc_has_image, doc_text)}<|im_end|>\n"
        f"<|im_start|>assistant\n"
    )


def main() -> None:
    torch.set_num_threads(2)
    model_dir = FIXTURES / "tiny-model"
    reference = json.loads((FIXTURES / "reference" / "reference.json").read_text())
    photos = reference["photos"]
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    tok = processor.tokenizer
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    cases = []
    with torch.no_grad():
        for qkey, query in reference["queries"].items():
            instruction = query["instruction"] or DEFAULT_INSTRUCTION
            qimage = (
                load_as_product(FIXTURES / "photos" / photos[query["image"]]["file"]) if query["image"] else None
            )
            for doc in DOCUMENTS:
                dimage = load_as_product(FIXTURES / "photos" / photos[doc["image"]]["file"]) if doc["image"] else None
                text = prompt(instruction, query["text"], qimage is not None, doc["text"], dimage is not None)
                images = [im for im in (qimage, dimage) if im is not None]
                inputs = processor(text=[text], images=images or None, return_tensors="pt")
                logits = model(**inputs).logits[0, -1]
                z_yes, z_no = logits[yes].item(), logits[no].item()
                cases.append(
                    {
                        "query": qkey,
                        "document": doc["key"],
                        "input_ids": inputs["input_ids"][0].tolist(),
                        "logit_yes": z_yes,
                        "logit_no": z_no,
                        "score": 1.0 / (1.0 + math.exp(-(z_yes - z_no))),
                    }
                )
    out = {
        "produced_by": "scripts/make_document_fixture.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "documents": DOCUMENTS,
        "cases": cases,
    }
    path = FIXTURES / "reference" / "documents.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print(f"{len(cases)} cases written to {path}")


if __name__ == "__main__":
    main()
