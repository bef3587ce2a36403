"""One index for a mixed-language corpus: XQuAD's 240 paragraphs in English and in Chinese side
by side in one folder (`en/ctxNNNNN.txt`, `zh/ctxNNNNN.txt`), each language's questions asked
over it. A hit is the gold paragraph in either language ("any"), or in the question's own
language ("same"). Two ways a user gets such an index:

- `one ingest`: the whole folder in one `rag ingest`; rag picks the encoder from a sample;
- `English first`: the English files, then the Chinese ones added to that index (it keeps the
  encoder it was made with).

    .venv/bin/python benchmarks/mixed.py                 # 300 questions per language
    .venv/bin/python benchmarks/mixed.py --langs en,de --limit 100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag import RAG  # noqa: E402
from rag.evaluate import load, sample  # noqa: E402

XQUAD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "xquad" / "xquad.{lang}.json"
KS = (1, 5, 10)


def recalls(rag: RAG, questions, lang: str, mode: str) -> dict:
    """Recall@k of the gold paragraph in any language and in the question's own."""
    ranks = {"any": [], "same": []}
    for q in questions:
        hits = rag.search(q.question, k=max(KS), mode=mode)
        names = [(Path(h.source).parent.name, Path(h.source).name) for h in hits]
        ranks["any"].append(next((i for i, (_, n) in enumerate(names, 1) if n == q.source), None))
        ranks["same"].append(next((i for i, (d, n) in enumerate(names, 1) if n == q.source and d == lang), None))
    return {kind: [round(sum(1 for r in rs if r and r <= k) / len(rs), 3) for k in KS] for kind, rs in ranks.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", default="en,zh", help="two XQuAD languages, the first one ingested first (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=300, help="questions per language (default: %(default)s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    langs = args.langs.split(",")
    data = {lang: load(str(XQUAD).replace("{lang}", lang)) for lang in langs}
    work = Path(tempfile.mkdtemp(prefix="rag-mixed-"))
    try:
        for lang, d in data.items():
            (work / "corpus" / lang).mkdir(parents=True)
            for name, text in d.contexts.items():
                (work / "corpus" / lang / name).write_text(text)
        rows = []
        for way in ("one ingest", "English first" if langs[0] == "en" else f"{langs[0]} first"):
            index = work / way.replace(" ", "-")
            rag = RAG(index)
            t = time.perf_counter()
            if way == "one ingest":
                rag.ingest([work / "corpus"])
            else:
                rag.ingest([work / "corpus" / langs[0]])
                rag.ingest([work / "corpus" / lang for lang in langs], prune=False)
            seconds = time.perf_counter() - t
            rag = RAG(index)
            for lang in langs:
                questions = sample([q for q in data[lang].questions if q.source], args.limit, 0)
                for mode in ("hybrid", "dense", "keyword"):
                    r = recalls(rag, questions, lang, mode)
                    rows.append({"way": way, "encoder": rag.info().encoder, "ingest_s": round(seconds, 1),
                                 "questions": lang, "mode": mode, "any": r["any"], "same": r["same"]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| index | encoder | ingest s | questions | mode | r@1/5/10 any language | r@1/5/10 same language |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['way']} | {r['encoder']} | {r['ingest_s']} | {r['questions']} | {r['mode']} | "
              + " / ".join(f"{x:.3f}" for x in r["any"]) + " | " + " / ".join(f"{x:.3f}" for x in r["same"]) + " |")


if __name__ == "__main__":
    main()
