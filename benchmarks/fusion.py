"""How hybrid search should fuse cosine and BM25, measured per encoder.

Each question's candidates (dense top-n, keyword top-4n, the cosines of keyword-only
candidates) are fetched once; every fusion rule and weight is then scored on the same pools.
Weights are chosen on one half of the questions and reported on the other half, so the table
shows what a tuned weight does on questions it was not tuned on.

    .venv/bin/python benchmarks/fusion.py ../shared/datasets/cmrc2018/cmrc2018-dev.json
    .venv/bin/python benchmarks/fusion.py ../shared/datasets/squad_dev/squad-dev-v1.1.json --limit 2000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from rag import RAG  # noqa: E402
from rag.answer.retrieve import KEYWORD_DEPTH, fuse  # noqa: E402
from rag.evaluate import eval_index, is_hit, load, sample  # noqa: E402

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def pools(rag: RAG, questions, long_contexts: bool, n: int) -> list[dict]:
    """Per question: {id: (cosine, bm25)} over the union of both candidate lists, and the gold ids."""
    out = []
    for q in tqdm(questions, desc="candidates", leave=False):
        vector = rag.encoder.encode_query(q.question)
        with rag.store.snapshot() as snap:
            dense = dict(snap.dense(vector, n))
            keyword = dict(snap.keyword(q.question, KEYWORD_DEPTH * n))
            missing = [i for i in list(keyword)[:n] if i not in dense]
            dense.update(snap.cosines(vector, missing))
            ids = set(dense) | set(missing)
            rows = snap.chunks(list(ids))
        gold = {i for i, row in rows.items() if is_hit(row, q, long_contexts)}
        out.append({"scores": {i: (dense.get(i, 0.0), keyword.get(i, 0.0)) for i in ids}, "gold": gold})
    return out


def order(scores: dict, weight: float, rule: str) -> list[int]:
    """Candidates best first. "minmax": rag's fusion (rag.retrieve.fuse); "cosine": the raw
    cosine against BM25 / best BM25, the rule before it."""
    dense = {i: c for i, (c, _) in scores.items()}
    keyword = {i: b for i, (_, b) in scores.items() if b}
    if rule == "minmax":
        fused = fuse(dense, keyword, scores, weight)
    else:
        top = max(keyword.values(), default=0.0) or 1.0
        fused = {i: weight * dense[i] + (1 - weight) * keyword.get(i, 0.0) / top for i in scores}
    return sorted(fused, key=lambda i: -fused[i])


def recall(rows: list[dict], weight: float, rule: str, ks=(1, 5, 10)) -> dict:
    ranks = []
    for r in rows:
        ranking = order(r["scores"], weight, rule)
        ranks.append(next((j + 1 for j, i in enumerate(ranking[:10]) if i in r["gold"]), None))
    n = max(1, len(ranks))
    out = {f"r@{k}": round(sum(1 for x in ranks if x and x <= k) / n, 4) for k in ks}
    out["mrr"] = round(sum(1 / x for x in ranks if x) / n, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--index", help="default: indexes/eval-<name>, as `rag eval` builds it")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    dataset = load(args.dataset)
    rag = eval_index(dataset, args.index, progress=True)
    questions = [q for q in sample(dataset.questions, args.limit, 0) if not q.impossible and q.source]
    rows = pools(rag, questions, dataset.long_contexts, args.candidates)
    random.Random(1).shuffle(rows)
    tune, test = rows[: len(rows) // 2], rows[len(rows) // 2:]
    table = []
    for rule in ("cosine", "minmax"):
        for w in WEIGHTS:
            table.append({"rule": rule, "weight": w, "tune": recall(tune, w, rule), "test": recall(test, w, rule),
                          "all": recall(rows, w, rule)})
    best = {rule: max((t for t in table if t["rule"] == rule), key=lambda t: (t["tune"]["mrr"], t["tune"]["r@1"]))
            for rule in ("cosine", "minmax")}
    result = {"dataset": dataset.name, "encoder": rag.settings.encoder,
              "questions": len(rows), "table": table,
              "best_on_tune": {rule: {"weight": b["weight"], "test": b["test"]} for rule, b in best.items()}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{dataset.name} ({rag.settings.encoder}): {len(rows)} answerable questions, tuned on {len(tune)}, tested on {len(test)}")
    print("| rule | weight | tune r@1 | tune MRR | test r@1 | test r@5 | test r@10 | test MRR | all r@1 | all r@5 | all r@10 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in table:
        mark = "**" if best[t["rule"]] is t else ""
        print(f"| {t['rule']} | {mark}{t['weight']}{mark} | {t['tune']['r@1']:.3f} | {t['tune']['mrr']:.3f} | "
              f"{t['test']['r@1']:.3f} | {t['test']['r@5']:.3f} | {t['test']['r@10']:.3f} | {t['test']['mrr']:.3f} | "
              f"{t['all']['r@1']:.3f} | {t['all']['r@5']:.3f} | {t['all']['r@10']:.3f} |")
    print("bold: the weight that is best on the tuning half (by MRR), per rule")


if __name__ == "__main__":
    main()
