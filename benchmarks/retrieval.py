"""Retrieval quality and ingest cost on SQuAD v1.1 dev: each paragraph a document, a fixed
sample of questions, recall@1/5/10 and MRR@10 of the gold paragraph per retrieval mode.

    .venv/bin/python benchmarks/retrieval.py [--chunk-size 128 --chunk-overlap 16] [--limit 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag import RAG  # noqa: E402
from rag.evaluate import load, retrieval_metrics, sample, write_contexts  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(DATA / "squad_dev" / "squad-dev-v1.1.json"))
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--chunk-overlap", type=int, default=None)
    ap.add_argument("--modes", default="dense,keyword,hybrid")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    dataset = load(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_contexts(dataset, Path(tmp) / "corpus")
        rag = RAG(Path(tmp) / "index", chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
        rag.encoder.model  # load outside the timed region
        started = time.perf_counter()
        report = rag.ingest([corpus])
        seconds = time.perf_counter() - started
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        questions = sample(dataset.questions, args.limit, seed=0)
        rows = {}
        for mode in args.modes.split(","):
            rows[mode] = retrieval_metrics(lambda q, k: rag.search(q, k=k, mode=mode), questions,
                                           dataset.long_contexts)
    result = {"dataset": dataset.name, "documents": report.added, "chunks": report.chunks,
              "tokens": report.tokens, "chunk_size": rag.settings.chunk_size,
              "chunk_overlap": rag.settings.chunk_overlap, "ingest_s": round(seconds, 1),
              "chunks_per_s": round(report.chunks / seconds, 1), "tokens_per_s": round(report.tokens / seconds),
              "peak_rss_mb": round(rss_mb), "modes": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{dataset.name}: {report.added} documents -> {report.chunks} chunks "
          f"(size {result['chunk_size']}, overlap {result['chunk_overlap']}) in {seconds:.1f}s: "
          f"{result['chunks_per_s']} chunks/s, {result['tokens_per_s']} word pieces/s, peak RSS {rss_mb:.0f} MB")
    print(f"{'mode':8} | recall@1 | recall@5 | recall@10 | MRR@10 | search p50 ms")
    for mode, m in rows.items():
        print(f"{mode:8} | {m['recall@1']:.3f}    | {m['recall@5']:.3f}    | {m['recall@10']:.3f}     "
              f"| {m['mrr@10']:.3f}  | {m.get('search_p50_ms')}")


if __name__ == "__main__":
    main()
