"""Index scale: build, open and search indexes of 100k and 1M chunks with the index type rag
chooses at that size (exact flat up to the threshold, calibrated IVF above), and report build
time, memory per chunk, open time, search p50/p95 and recall@10 against exact search.

Embedding a million passages takes hours on 2 cores, so vectors are synthetic, as the output
says: real all-MiniLM-L6-v2 passage vectors (SQuAD + COVID-QA benchmark caches, else a few
thousand freshly encoded) each perturbed by Gaussian noise into many neighbours, and real
question vectors as queries.

    .venv/bin/python benchmarks/scale.py [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def real_vectors() -> tuple[np.ndarray, np.ndarray]:
    """Passage vectors from cached benchmark indexes and question vectors (both real)."""
    import faiss

    from rag.evaluate import load, sample
    from rag.index.store import Store
    from rag.index.vectors import flat_contents
    from rag.models.encoder import Encoder

    passages = []
    for index in sorted((ROOT / "benchmarks" / ".cache").glob("*/index")) + sorted(Path("indexes").glob("eval-*")):
        try:
            store = Store(index)
            with store.snapshot() as snap:
                vectors = snap.vectors
            if isinstance(vectors, faiss.IndexIDMap2):
                passages.append(flat_contents(vectors)[0])
        except Exception:
            continue
    squad = load(ROOT.parent / "shared" / "datasets" / "squad_dev" / "squad-dev-v1.1.json")
    encoder = Encoder("all-MiniLM-L6-v2")
    if not passages:
        passages.append(encoder.encode(list(squad.contexts.values())[:3000]))
    questions = encoder.encode([q.question for q in sample(squad.questions, 200, 0)])
    return np.concatenate(passages), questions


def synthetic(base: np.ndarray, n: int, rng) -> np.ndarray:
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        v = base[rng.integers(0, len(base), m)] + rng.normal(0, 0.03, (m, base.shape[1])).astype(np.float32)
        out[start:start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    import faiss

    from rag.core.settings import Settings
    from rag.index.vectors import build_ivf

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args()
    threshold = Settings().ann_threshold
    base, queries = real_vectors()
    print(f"vectors: synthetic, {len(base)} real MiniLM passage vectors + Gaussian noise (sigma 0.03); "
          f"queries: 200 real SQuAD question vectors; exact below {threshold} chunks, IVF above")
    print("| chunks | index type | build s | bytes/chunk (RSS) | file MB | open ms | search p50 ms | p95 ms | recall@10 |")
    print("|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in (int(s) for s in args.sizes.split(",")):
        vectors = synthetic(base, n, rng)
        ids = np.arange(1, n + 1, dtype=np.int64)
        before = rss_mb()
        t = time.perf_counter()
        if n < threshold:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
            index.add_with_ids(vectors, ids)
            kind = "flat (exact)"
        else:
            index = build_ivf(vectors, ids)
            kind = f"ivf nlist={index.nlist} nprobe={index.nprobe}"
        build = time.perf_counter() - t
        grown = (rss_mb() - before) * 2**20 / n
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "v.faiss"
            faiss.write_index(index, str(path))
            size = path.stat().st_size / 1e6
            t = time.perf_counter()
            opened = faiss.read_index(str(path))
            open_ms = (time.perf_counter() - t) * 1000
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        _, truth = exact.search(queries, 10)
        times, recall = [], []
        for q, gold in zip(queries, truth):
            t = time.perf_counter()
            _, found = opened.search(q[None, :], 10)
            times.append(time.perf_counter() - t)
            recall.append(len(set(found[0]) & set(ids[gold])) / 10)
        times.sort()
        print(f"| {n:,} | {kind} | {build:.1f} | {grown:.0f} | {size:.0f} | {open_ms:.0f} | "
              f"{times[len(times) // 2] * 1000:.2f} | {times[int(len(times) * 0.95)] * 1000:.2f} | {np.mean(recall):.3f} |")
        del vectors, exact, index, opened
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
