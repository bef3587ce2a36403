"""A sharded index against the same documents unsharded (rag/index/shards.py, issue 34).

(a) SQuAD: the first 12 articles of SQuAD v1.1 dev, each written as a text file, ingested with
    the default settings unsharded and with --shards 3; 100 seeded questions of those articles:
    how many get the same top-5 passages (as a set of text + source) from both, per mode.
(b) Synthetic: an index of --chunks chunks (clustered random unit vectors, as benchmarks/scale.py
    but without a real encoder; short texts) written once unsharded and once as --n-shards
    shards (each shard's documents routed as ingest routes them): dense search p50/p95 through
    the snapshot, and recall@10 of each against exact search and of the sharded against the
    unsharded.

    .venv/bin/python benchmarks/shards.py [--part a|b|ab] [--chunks 200000] [--n-shards 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SQUAD = ROOT.parent / "shared" / "datasets" / "squad_dev" / "squad-dev-v1.1.json"


def squad_part(args, tmp: Path) -> None:
    from rag import RAG

    data = json.loads(Path(args.dataset).read_text())["data"][:args.articles]
    corpus = tmp / "squad"
    corpus.mkdir()
    questions = []
    for article in data:
        paragraphs = [p["context"] for p in article["paragraphs"]]
        (corpus / f"{article['title']}.txt").write_text(article["title"].replace("_", " ") + "\n\n"
                                                        + "\n\n".join(paragraphs) + "\n")
        questions += [qa["question"] for p in article["paragraphs"] for qa in p["qas"]]
    asked = random.Random(args.seed).sample(questions, args.questions)
    built = {}
    for name, shards in (("unsharded", None), (f"{args.squad_shards} shards", args.squad_shards)):
        rag = RAG(tmp / name.replace(" ", "-"))
        started = time.perf_counter()
        report = rag.ingest([corpus], shards=shards)
        built[name] = rag
        print(f"{name}: {report.added} files -> {report.chunks} chunks in {time.perf_counter() - started:.1f}s "
              f"(encoder {rag.settings.encoder}, chunk_size {rag.settings.chunk_size})")
    plain, sharded = built.values()
    print(f"\n(a) SQuAD v1.1 dev, first {len(data)} articles, {len(asked)} questions (seed {args.seed}): "
          f"same top-{args.k} passages as a set (text + source)")
    print("| mode | same top-5 | p50 ms unsharded | p50 ms sharded | where not: 5th minus 6th score |")
    print("|---|---|---|---|---|")
    for mode in ("hybrid", "dense", "keyword"):
        same, times, margins = 0, {"a": [], "b": []}, []
        for q in asked:
            t = time.perf_counter()
            a = plain.search(q, k=args.k + 1, mode=mode)
            times["a"].append(time.perf_counter() - t)
            t = time.perf_counter()
            b = sharded.search(q, k=args.k + 1, mode=mode)
            times["b"].append(time.perf_counter() - t)
            agree = {(h.text, h.source) for h in a[:args.k]} == {(h.text, h.source) for h in b[:args.k]}
            same += agree
            if not agree and len(a) > args.k:  # how close the k-th and the next were (unsharded)
                margins.append(a[args.k - 1].score - a[args.k].score)
        label = f"{mode} (default)" if mode == plain.settings.mode else mode
        print(f"| {label} | {same}/{len(asked)} | {_p(times['a'], 50):.1f} | {_p(times['b'], 50):.1f} | "
              f"{', '.join(f'{m:.4f}' for m in margins) or '-'} |")
    a, b = stored_vectors([plain.store]), stored_vectors(sharded.store.stores)
    cosines = [float(a[key] @ b[key]) for key in a if key in b]
    print(f"\nthe same passage's vector in both indexes (each ingest encodes in other batches; the int8 "
          f"encoder's activations are quantised per batch): {len(cosines)} passages, cosine min "
          f"{min(cosines):.4f}, {sum(c < 0.99999 for c in cosines)} below 0.99999")


def stored_vectors(stores) -> dict:
    """(text, source) -> the stored vector, over these stores (flat indexes)."""
    out = {}
    for store in stores:
        with store.snapshot() as snap:
            index = snap.vectors
            rows = snap.execute("SELECT c.id, c.text, d.path FROM chunks c JOIN documents d "
                                "ON d.sha256=c.sha256").fetchall()
            for i, text, path in rows:
                out[(text, path)] = index.reconstruct(i)
    return out


@dataclass
class Chunk:
    ord: int
    text: str
    page: int | None = None
    heading: str = ""
    start: int = 0
    end: int = 0


def synthetic_part(args, tmp: Path) -> None:
    from rag.core.settings import Settings
    from rag.index.shards import Shards, route
    from rag.index.store import Store, new_manifest

    n, d, per_doc = args.chunks, args.dim, 100
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(max(1, n // 200), d)).astype(np.float32)

    def points(m):
        v = centers[rng.integers(0, len(centers), m)] + rng.normal(0, 0.35, (m, d)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    vectors, queries = points(n), points(args.queries)
    words = ["harbor", "lens", "storm", "keeper", "lamp", "reef", "tide", "cliff", "chart", "compass", "beam", "prism"]
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(4)) + f" {i}" for i in range(per_doc)]
    manifest = new_manifest("synthetic", d, 128, 16)
    threshold = Settings().ann_threshold
    t = time.perf_counter()
    plain = Store.create(tmp / "plain", manifest)
    sharded = Shards.create(tmp / "sharded", manifest, args.n_shards)
    writers = [plain.writer(ann_threshold=threshold)] + [s.writer(ann_threshold=threshold) for s in sharded.stores]
    for doc, start in enumerate(range(0, n, per_doc)):
        vecs = vectors[start:start + per_doc]
        path, sha = f"/synthetic/doc{doc:07d}.txt", f"{doc:064x}"
        chunks = [Chunk(i, texts[i]) for i in range(len(vecs))]
        for w in (writers[0], writers[1 + route(path, args.n_shards)]):
            w.add_content(sha, chunks, vecs, 4 * len(vecs))
            w.put_document(path, sha, 0.0, 0)
    for w in writers:
        w.commit()
        w.close()
    print(f"\nbuilt {n:,} chunks (d={d}) unsharded and as {args.n_shards} shards in {time.perf_counter() - t:.1f}s; "
          f"exact below {threshold:,} chunks, IVF from there (per shard)")
    plain, sharded = Store(tmp / "plain"), Shards(tmp / "sharded")
    exact = vectors @ queries.T  # (n, q): the true top 10 by cosine, row = chunk order
    truth = [set(np.argsort(-exact[:, j])[:10].tolist()) for j in range(len(queries))]
    del exact

    def positions(store, found):
        """Chunk ids -> their row in `vectors` (texts are row % per_doc within their document)."""
        with store.snapshot() as snap:
            rows = snap.execute("SELECT c.id, d.path, c.ord FROM chunks c JOIN documents d ON d.sha256=c.sha256 "
                                f"WHERE c.id IN ({','.join('?' * len(found))})", found).fetchall() if found else []
        return {r[0]: int(r[1][len('/synthetic/doc'):-4]) * per_doc + r[2] for r in rows}

    results = {}
    for name, store in (("unsharded", plain), (f"{args.n_shards} shards", sharded)):
        for q in queries[:5]:  # warm: the vector files mapped, the pool started
            with store.snapshot() as snap:
                snap.dense(q, 10)
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            with store.snapshot() as snap:
                hits = snap.dense(q, 10)
            times.append(time.perf_counter() - t)
            found.append([i for i, _ in hits])
        if store is plain:
            rows = [positions(plain, f) for f in found]
        else:
            rows = []
            for f in found:
                by_row = {}
                for s, local in _by_shard(f, sharded.n).items():
                    got = positions(sharded.stores[s], local)
                    by_row.update({c * sharded.n + s: r for c, r in got.items()})
                rows.append(by_row)
        top = [{r[i] for i in f if i in r} for f, r in zip(found, rows)]
        results[name] = (times, top)
    print(f"\n(b) synthetic, {n:,} chunks, {len(queries)} queries, dense k=10")
    print("| index | search p50 ms | p95 ms | recall@10 vs exact | recall@10 vs unsharded |")
    print("|---|---|---|---|---|")
    base = results["unsharded"][1]
    for name, (times, top) in results.items():
        vs_exact = np.mean([len(t & g) / 10 for t, g in zip(top, truth)])
        vs_plain = np.mean([len(t & b) / 10 for t, b in zip(top, base)])
        print(f"| {name} | {_p(times, 50):.2f} | {_p(times, 95):.2f} | {vs_exact:.3f} | {vs_plain:.3f} |")
    sharded.close()
    plain.close()


def _by_shard(ids, n):
    out = {}
    for i in ids:
        out.setdefault(i % n, []).append(i // n)
    return out


def _p(values, pct) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="ab", help="a: SQuAD same top-5; b: synthetic latency and recall")
    ap.add_argument("--dataset", default=str(SQUAD))
    ap.add_argument("--articles", type=int, default=12)
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--squad-shards", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=200_000, help="synthetic index size (the issue asks 1,000,000)")
    ap.add_argument("--n-shards", type=int, default=4)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if "a" in args.part:
            squad_part(args, Path(tmp))
        if "b" in args.part:
            synthetic_part(args, Path(tmp))


if __name__ == "__main__":
    main()
