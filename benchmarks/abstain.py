"""When should rag say "not in the documents"? Signals measured per question on SQuAD v2.0
(whose unanswerable questions were written to look answerable from their paragraph):

- the best passage's cosine to the question (the retriever's, used before the decoder runs);
- the supporting sentence's cosine to the question (the encoder's check of the decoder's choice);
- the decoder's own "unknown" (Gemma, with the abstain example).

For each signal and threshold it prints the share of unanswerable questions that get "not
found" and the share of answerable ones that wrongly do, and picks the threshold with the
most abstention at <= 5% false "not found".

    .venv/bin/python benchmarks/abstain.py --limit 300
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
from rag.evaluate import load, sample  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"


def signals(rag: RAG, questions) -> list[dict]:
    from tqdm import tqdm

    rows = []
    for q in tqdm(questions, desc="answers", leave=False):
        a = rag.ask(q.question)
        top = a.sources[0].hit.dense if a.sources else None
        rows.append({"impossible": q.impossible, "found": a.found, "top": top, "support": a.support})
    return rows


def sweep(rows: list[dict], key: str, max_false: float = 0.05) -> tuple[list[tuple], tuple | None]:
    """(threshold, abstained on unanswerable, false not-found on answerable) per threshold."""
    table, best = [], None
    for t in [x / 100 for x in range(0, 91, 5)]:
        def abstains(r):
            value = r[key]
            return not r["found"] or (value is not None and value < t)

        un = [abstains(r) for r in rows if r["impossible"]]
        ans = [abstains(r) for r in rows if not r["impossible"]]
        row = (t, sum(un) / max(1, len(un)), sum(ans) / max(1, len(ans)))
        table.append(row)
        if row[2] <= max_false and (best is None or row[1] > best[1]):
            best = row
    return table, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(DATA / "squad_dev" / "squad-dev-v2.0.json"))
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from answers import cached_index

    from rag.settings import Settings

    dataset = load(args.dataset)
    index = cached_index(dataset, Settings.load().chunk_size)
    rag = RAG(index, min_score=-1.0, min_support=-1.0)  # every signal measured, none applied
    rows = signals(rag, sample(dataset.questions, args.limit, args.seed))
    if args.json:
        print(json.dumps(rows))
        return
    un = sum(r["impossible"] for r in rows)
    decoder = [not r["found"] for r in rows]
    print(f"{dataset.name}: {len(rows)} questions, {un} unanswerable; decoder's own 'unknown': "
          f"{sum(d for d, r in zip(decoder, rows) if r['impossible']) / max(1, un):.3f} of unanswerable, "
          f"{sum(d for d, r in zip(decoder, rows) if not r['impossible']) / max(1, len(rows) - un):.3f} of answerable")
    for key, name in (("top", "best passage cosine"), ("support", "supporting sentence cosine")):
        table, best = sweep(rows, key)
        print(f"\n{name} (plus the decoder's 'unknown'): threshold | abstained (unanswerable) | false not-found")
        for t, a, f in table:
            print(f"{t:.2f} | {a:.3f} | {f:.3f}")
        print(f"best at <= 5% false not-found: {best}")


if __name__ == "__main__":
    main()
