"""Answer quality and speed of the decoders over a fixed sample of SQuAD questions (the
index is the dataset's paragraphs; built once under benchmarks/.cache and reused).

    .venv/bin/python benchmarks/answers.py --limit 100 --generator smollm2,gemma3-270m
    .venv/bin/python benchmarks/answers.py --dataset ../shared/datasets/squad_dev/squad-dev-v2.0.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag import RAG  # noqa: E402
from rag.evaluate import answer_metrics, load, sample, write_contexts  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"


def cached_index(dataset, chunk_size: int, progress=True) -> Path:
    """Corpus files and index for a dataset under benchmarks/.cache (ingest is incremental)."""
    base = ROOT / "benchmarks" / ".cache" / dataset.name
    corpus = write_contexts(dataset, base / "corpus")
    index = base / f"index-{chunk_size}"
    RAG(index, chunk_size=chunk_size).ingest([corpus], progress=progress)
    return index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(DATA / "squad_dev" / "squad-dev-v1.1.json"))
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generator", default=None, help="comma-separated generators (default: rag's)")
    ap.add_argument("--backend", default="auto", help="comma-separated: auto, llama.cpp, transformers")
    ap.add_argument("--copy", default="on", help="comma-separated: on, off (span-constrained decoding)")
    ap.add_argument("-k", type=int, default=None, help="passages given to the decoder")
    ap.add_argument("--chunk-size", type=int, default=None, help="chunk size of the index (default: rag's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    dataset = load(args.dataset)
    from rag.core.settings import Settings

    index = cached_index(dataset, args.chunk_size or Settings.load().chunk_size)
    questions = sample(dataset.questions, args.limit, args.seed)
    rows = []
    from rag.core.settings import Settings as _S

    for generator in (args.generator or _S.load().generator).split(","):
        for backend in args.backend.split(","):
            for copy in args.copy.split(","):
                rag = RAG(index, generator=generator, backend=backend, copy=copy == "on", answer_k=args.k)
                rag.ask("warm-up question about anything")  # load models outside the measurement
                m = answer_metrics(rag.ask, questions, progress=True)
                rows.append({"generator": generator, "backend": rag.generator.backend, "copy": copy, **m})
                if not args.json:
                    print(json.dumps(rows[-1]), file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{dataset.name}, {len(questions)} questions (seed {args.seed})")
    print("generator | backend | copy | EM | F1 (short) | answer contains gold | supporting sentence contains gold "
          "| gold recall | not-found (answerable) | abstained (unanswerable) | first token p50/p95 s | total p50/p95 s")
    for r in rows:
        print(f"{r['generator']} | {r['backend']} | {r['copy']} | {r['exact_match']} | {r['f1']} | "
              f"{r['contains_answer']} | {r['supporting_contains']} | {r['answer_recall']} | "
              f"{r['wrongly_not_found']} | {r.get('abstained', '-')} | "
              f"{r.get('first_token_p50_ms', 0) / 1000:.2f}/{r.get('first_token_p95_ms', 0) / 1000:.2f} | "
              f"{r['total_p50_ms'] / 1000:.2f}/{r['total_p95_ms'] / 1000:.2f}")


if __name__ == "__main__":
    main()
