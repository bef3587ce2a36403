"""Query-path latency: retrieval (encode the question + search + fetch the passages) at 100k
chunks per mode, and time to first answer token / complete answer with the default decoder.

The 100k-chunk index is built once under benchmarks/.cache/latency-100k from real chunk texts
and vectors of the SQuAD/COVID-QA benchmark indexes, replicated with small noise on the
vectors (embedding 100k passages would take 10+ minutes; the query path is what is timed).

    .venv/bin/python benchmarks/latency.py [--chunks 100000] [--questions 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "benchmarks" / ".cache"

from rag import RAG  # noqa: E402
from rag.evaluate import load, sample  # noqa: E402
from rag.index.chunking import Chunk  # noqa: E402
from rag.index.store import Store  # noqa: E402
from rag.index.vectors import flat_contents  # noqa: E402


def squad_index() -> Path:
    """The SQuAD v1.1 paragraph index benchmarks/answers.py builds (built here if missing)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from answers import cached_index

    from rag.core.settings import Settings

    return cached_index(load(ROOT.parent / "shared" / "datasets" / "squad_dev" / "squad-dev-v1.1.json"),
                        Settings.load().chunk_size)


def build(target: Path, n: int) -> None:
    squad_index()
    sources = [p for p in sorted(CACHE.glob("*/index-128")) + sorted(Path("indexes").glob("eval-*")) if (p / "manifest.json").exists()]
    texts, vectors = [], []
    for path in sources:
        store = Store(path)
        with store.snapshot() as snap:
            vecs, ids = flat_contents(snap.vectors)
            rows = dict(snap.execute("SELECT id, text FROM chunks"))
        texts += [rows[int(i)] for i in ids]
        vectors.append(vecs)
    vectors = np.concatenate(vectors)
    rag = RAG(target)
    rag.ingest([ROOT / "docs"])  # creates the index with the real settings
    rng = np.random.default_rng(0)
    with rag.store.writer(ann_threshold=rag.settings.ann_threshold) as w:
        for start in range(0, n, 10_000):
            pick = rng.integers(0, len(texts), min(10_000, n - start))
            v = vectors[pick] + rng.normal(0, 0.01, (len(pick), vectors.shape[1])).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            chunks = [Chunk(texts[i], j, None, "", 0, len(texts[i])) for j, i in enumerate(pick)]
            w.add_content(f"synthetic-{start}", chunks, v, 0)
            w.put_document(f"/synthetic/part{start}.txt", f"synthetic-{start}", 0.0, 0)
        w.commit()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--answers", type=int, default=50)
    args = ap.parse_args()
    target = CACHE / f"latency-{args.chunks // 1000}k"
    if not (target / "manifest.json").exists():
        build(target, args.chunks)
    rag = RAG(target)
    info = rag.info()
    squad = load(ROOT.parent / "shared" / "datasets" / "squad_dev" / "squad-dev-v1.1.json")
    questions = [q.question for q in sample(squad.questions, args.questions, 7)]
    rag.search("warm up")
    print(f"index: {info.chunks:,} chunks, {info.index_type}, {info.size_bytes / 1e6:.0f} MB")
    print("| retrieval (encode + search + fetch), k=4 | p50 ms | p95 ms |")
    print("|---|---|---|")
    for mode in ("dense", "keyword", "hybrid"):
        times = []
        for q in questions:
            t = time.perf_counter()
            rag.search(q, k=4, mode=mode)
            times.append(time.perf_counter() - t)
        print(f"| {mode} | {pct(times, 0.5):.1f} | {pct(times, 0.95):.1f} |")

    qa = RAG(squad_index())
    qa.ask("warm up question")
    first, total, tokens = [], [], []
    for q in questions[: args.answers]:
        a = qa.ask(q)
        if a.timings.first_token_ms is not None:
            first.append(a.timings.first_token_ms / 1000)
        total.append(a.timings.total_ms / 1000)
        tokens.append(a.timings.tokens)
    print(f"\nanswers ({qa.settings.generator}, {qa.generator.backend}, k=4 retrieved, {qa.settings.answer_k} in "
          f"the prompt, SQuAD index of {qa.info().chunks:,} chunks, {len(total)} questions)")
    print("| | p50 ms | p95 ms |")
    print("|---|---|---|")
    print(f"| time to first token | {pct(first, 0.5):.0f} | {pct(first, 0.95):.0f} |")
    print(f"| complete answer | {pct(total, 0.5):.0f} | {pct(total, 0.95):.0f} |")
    print(f"mean answer length {np.mean(tokens):.1f} tokens")


if __name__ == "__main__":
    main()
