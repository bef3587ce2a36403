"""When should rag say "the documents may not say this"? The abstention curve of each signal
on questions the index cannot answer, against the answerable questions it would wrongly
refuse:

- SQuAD v2.0, whose unanswerable questions were written to look answerable from their
  paragraph (its answerable questions are the false "not found");
- CMRC 2018 with the gold paragraph's document removed from retrieval (every question is then
  unanswerable; the false "not found" is measured on CMRC with the gold document in place).

Signals: the calibrated confidence (`rag/confidence.py`, setting `min_confidence`), and, as
before, the best passage's cosine and the supporting sentence's score. Every question the
pipeline already refuses at default settings (best passage under `min_score`, the decoder's
"unknown") counts as abstained at every threshold. It reads the dumps of
`benchmarks/calibrate.py dump` and scores the held-out half only (the models are fitted on the
other half):

    R=benchmarks/results
    .venv/bin/python benchmarks/abstain.py --squad $R/conf-squad20.jsonl --cmrc $R/conf-cmrc.jsonl \\
        --cmrc-nogold $R/conf-cmrc-nogold.jsonl
    # Qwen2.5-0.5B's answers, with the models fitted on them (calibrate.py fit --key zh-qwen)
    .venv/bin/python benchmarks/abstain.py --cmrc $R/conf-cmrc-qwen.jsonl --cmrc-nogold $R/conf-cmrc-nogold-qwen.jsonl \\
        --key zh-qwen
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibrate import halves, picked, read, scored  # noqa: E402

from rag.answer import confidence as conf  # noqa: E402

THRESHOLDS = [x / 100 for x in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30, 35, 40, 50, 60, 70, 80, 90)]


def judged(rows: list[dict]) -> list[dict]:
    """Each row with the confidence the Judge gives it now (rag/confidence.py's MODELS) and
    whether the short answer it then gives is right."""
    seen = {id(r) for r in scored(rows)}
    for r in rows:
        r["confidence"] = None
        if id(r) in seen and r.get("scores"):
            chosen, r["confidence"] = picked(r, conf.MODELS)
            r["right"] = chosen["right"]
        elif id(r) in seen:
            r["confidence"] = conf.probability(r, r["language"])
    return rows


def value(row: dict, key: str) -> float | None:
    return row.get(key)


def refused(row: dict, key: str, t: float) -> bool:
    v = value(row, key)
    return not row["found"] or (v is not None and v < t)


def sweep(unanswerable: list[dict], answerable: list[dict], key: str, max_false: float = 0.05):
    """(threshold, abstained on unanswerable, false not-found on answerable, right among the
    answered) per threshold, and the threshold with the most abstention at <= max_false."""
    table, best = [], None
    for t in THRESHOLDS:
        un = sum(refused(r, key, t) for r in unanswerable) / max(1, len(unanswerable))
        wrong = sum(refused(r, key, t) for r in answerable) / max(1, len(answerable))
        kept = [r for r in answerable + unanswerable if not refused(r, key, t)]
        precision = sum(r["right"] for r in kept) / max(1, len(kept))
        row = (t, un, wrong, precision)
        table.append(row)
        if wrong <= max_false and (best is None or un > best[1]):
            best = row
    return table, best


def show(name: str, unanswerable: list[dict], answerable: list[dict]) -> None:
    print(f"\n## {name}: {len(unanswerable)} unanswerable, {len(answerable)} answerable (held-out half)")
    for key, label in (("confidence", "confidence (min_confidence)"), ("top_dense", "best passage cosine"),
                       ("support", "supporting sentence score")):
        table, best = sweep(unanswerable, answerable, key)
        print(f"\n{label}: threshold | abstained (unanswerable) | false not-found (answerable) | right among answered")
        for t, a, f, p in table:
            print(f"{t:.2f} | {a:.3f} | {f:.3f} | {p:.3f}")
        print(f"most abstention at <= 5% false not-found: {best}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--squad", help="dump of SQuAD v2.0 (calibrate.py dump)")
    ap.add_argument("--cmrc", help="dump of CMRC 2018 with the gold document")
    ap.add_argument("--cmrc-nogold", help="dump of CMRC 2018 with the gold document removed (--drop-gold)")
    ap.add_argument("--seed", type=int, default=0, help="the split's seed (as calibrate.py fit)")
    ap.add_argument("--key", help="the models' key for these dumps (as calibrate.py fit --key, e.g. zh-qwen)")
    args = ap.parse_args()
    if args.squad:
        _, held = halves(read([args.squad], args.key), args.seed)
        held = judged(held)
        show("SQuAD v2.0", [r for r in held if r["impossible"]], [r for r in held if not r["impossible"]])
    if args.cmrc and args.cmrc_nogold:
        _, held = halves(read([args.cmrc, args.cmrc_nogold], args.key), args.seed)
        held = judged(held)
        show("CMRC 2018, gold document removed", [r for r in held if r["impossible"]],
             [r for r in held if not r["impossible"]])


if __name__ == "__main__":
    main()
