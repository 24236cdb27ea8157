#!/usr/bin/env python3
"""Load test for `lychee-rerank serve` (loopback only, bounded): N clients send M requests
each, as fast as answers come, and the script reports requests/s, documents/s, latency
(p50/p99), the part of it outside the model (end-to-end minus the x-compute-time header),
and the statuses. Every 200 answer is checked: each document's index exactly once, so that
no document is lost or scored twice. With --pid, the server's resident memory is read
before and after; with --scores, every document's score is written out (to compare two servers).

    python3 scripts/load_test.py --url http://127.0.0.1:8080 --clients 32 --requests 50
    python3 scripts/load_test.py --clients 16 --documents 1 --format tei
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

WORDS = ("harbour boats gulls pier nets sun morning fishing market quay rope tide "
         "river bridge stone lamp rain street cafe window").split()


def text(i: int, words: int) -> str:
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(words))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=50, help="per client")
    ap.add_argument("--documents", type=int, default=8, help="per request")
    ap.add_argument("--words", type=int, default=40, help="words per text document")
    ap.add_argument("--image", type=Path, help="send this image as every document instead of text")
    ap.add_argument("--image-dir", type=Path, help="send these photos (in turn) as the documents")
    ap.add_argument("--texts", type=Path, help="JSON lines with \"text\": the text documents to send, in turn")
    ap.add_argument("--format", choices=["tei", "v1"], default="v1")
    ap.add_argument("--api-key")
    ap.add_argument("--pid", type=int, help="the server's process id, for its memory")
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--scores", type=Path, help="write every document's score here, a JSON line each")
    args = ap.parse_args()
    url = urlparse(args.url)
    assert url.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"

    image = base64.b64encode(args.image.read_bytes()).decode() if args.image else None
    photos = []
    if args.image_dir:
        photos = [base64.b64encode(p.read_bytes()).decode() for p in sorted(args.image_dir.iterdir()) if p.is_file()]
    texts = [json.loads(l)["text"] for l in args.texts.read_text().splitlines() if l.strip()] if args.texts else []
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"

    def doc_text(i: int) -> str:
        return texts[i % len(texts)] if texts else text(i, args.words)

    def body(client: int, k: int) -> tuple[str, bytes]:
        n = args.documents
        first = (client * args.requests + k) * n
        if args.format == "tei":
            return "/rerank", json.dumps({"query": "boats in the harbour", "texts": [doc_text(first + i) for i in range(n)]}).encode()
        if photos:
            docs = [{"image": photos[(first + i) % len(photos)]} for i in range(n)]
        elif image:
            docs = [{"image": image} for _ in range(n)]
        else:
            docs = [doc_text(first + i) for i in range(n)]
        return "/v1/rerank", json.dumps({"model": "lychee", "query": "boats in the harbour", "documents": docs}).encode()

    lock = threading.Lock()
    latencies: list[float] = []
    outside: list[float] = []
    statuses: dict[int, int] = {}
    problems: list[str] = []
    documents = 0
    scores: list[dict] = []

    def client(c: int) -> None:
        nonlocal documents
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=600)
        for k in range(args.requests):
            path, data = body(c, k)
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    problems.append(f"client {c} request {k}: {e}")
                conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=600)
                continue
            elapsed = time.perf_counter() - start
            compute = resp.getheader("x-compute-time")
            with lock:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    latencies.append(elapsed)
                    if compute is not None:
                        outside.append(elapsed - float(compute) / 1e3)
                    v = json.loads(raw)
                    items = v if isinstance(v, list) else v["results"]
                    seen = sorted(i["index"] for i in items)
                    if seen != list(range(args.documents)):
                        problems.append(f"client {c} request {k}: indices {seen}")
                    documents += len(items)
                    scores.extend({"client": c, "request": k, "index": i["index"],
                                   "score": i.get("relevance_score", i.get("score"))} for i in items)
                elif resp.status != 429:
                    problems.append(f"client {c} request {k}: {resp.status} {raw[:200]!r}")

    before = rss_kib(args.pid) if args.pid else None
    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = rss_kib(args.pid) if args.pid else None
    answered = sum(statuses.values())
    report = {
        "clients": args.clients,
        "requests_per_client": args.requests,
        "documents_per_request": args.documents,
        "format": args.format,
        "seconds": wall,
        "requests": answered,
        "statuses": statuses,
        "requests_per_s": statuses.get(200, 0) / wall,
        "documents_per_s": documents / wall,
        "latency_p50_ms": percentile(latencies, 50) * 1e3,
        "latency_p99_ms": percentile(latencies, 99) * 1e3,
        "outside_model_p50_ms": percentile(outside, 50) * 1e3,
        "outside_model_p99_ms": percentile(outside, 99) * 1e3,
        "rss_kib_before": before,
        "rss_kib_after": after,
        "problems": problems[:20],
        "every_request_answered": answered == args.clients * args.requests and not problems,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.scores:
        scores.sort(key=lambda s: (s["client"], s["request"], s["index"]))
        args.scores.write_text("".join(json.dumps(s) + "\n" for s in scores))
    if not report["every_request_answered"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
