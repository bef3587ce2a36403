"""Calibrate the "not found" threshold (the best passage's cosine) of an encoder.

Three kinds of question against one index: answerable ones (their paragraph is indexed),
absent ones (the same questions with every paragraph of their article left out of the
search: in-domain, but the answer is not there), and off-topic ones (another dataset's
questions). For each threshold: the share of answerable questions wrongly "not found" and the
share of absent and off-topic questions caught.

    .venv/bin/python benchmarks/not_found.py ../shared/datasets/cmrc2018/cmrc2018-dev.json \\
        --off-topic ../shared/datasets/covidqa_deepset/200423_covidQA.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.evaluate import eval_index, load, sample  # noqa: E402
from rag.models.catalog import encoder_profile  # noqa: E402

DEPTH = 50  # passages searched for the best one outside the question's article


def articles(path: str) -> dict[str, int]:
    """Context file name (as evaluate.load names them) -> its article's number."""
    out = {}
    for a, article in enumerate(json.loads(Path(path).read_text())["data"]):
        for _ in article["paragraphs"]:
            out[f"ctx{len(out):05d}.txt"] = a
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--off-topic", required=True, help="a dataset whose questions the index cannot answer")
    ap.add_argument("--index", help="default: indexes/eval-<name>, as `rag eval` builds it")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--thresholds", default="")
    args = ap.parse_args()

    dataset = load(args.dataset)
    rag = eval_index(dataset, args.index, progress=True)
    article_of = articles(args.dataset)
    questions = [q for q in sample(dataset.questions, args.limit, 0) if not q.impossible and q.source]
    answerable, absent = [], []
    for q in questions:
        hits = rag.search(q.question, k=DEPTH, mode="dense")
        answerable.append(hits[0].dense if hits else 0.0)
        other = [h for h in hits if article_of.get(Path(h.source).name) != article_of[q.source]]
        absent.append(other[0].dense if other else 0.0)
    off = [q.question for q in sample(load(args.off_topic).questions, args.limit, 0)]
    off_topic = [(rag.search(q, k=1, mode="dense") or [None])[0] for q in off]
    off_topic = [h.dense if h else 0.0 for h in off_topic]
    encoder = rag.info().encoder
    default = encoder_profile(encoder).min_score
    lo = min(answerable)
    thresholds = [float(t) for t in args.thresholds.split(",") if t] or \
        sorted({round(default + d, 2) for d in (-0.06, -0.04, -0.02, 0, 0.02, 0.04, 0.06, 0.08)} | {round(lo, 3)})
    share = lambda xs, t: sum(x < t for x in xs) / len(xs)  # noqa: E731
    print(f"{dataset.name} index ({encoder}), {len(answerable)} answerable questions, "
          f"off-topic: {len(off_topic)} questions of {Path(args.off_topic).stem}; default threshold {default}")
    print("| threshold | answerable wrongly \"not found\" | absent (article left out) caught | off-topic caught |")
    print("|---|---|---|---|")
    for t in thresholds:
        mark = "**" if abs(t - default) < 1e-9 else ""
        print(f"| {mark}{t:.3f}{mark} | {share(answerable, t):.1%} | {share(absent, t):.1%} | {share(off_topic, t):.1%} |")


if __name__ == "__main__":
    main()
