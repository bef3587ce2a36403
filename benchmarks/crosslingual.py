"""Questions in one language over documents in another, on one mixed index.

The index holds all 848 CMRC 2018 dev paragraphs (Chinese) and the first 600 SQuAD v1.1 dev
paragraphs (English), built with the encoder rag chooses for such a corpus (multilingual-e5-small).
`benchmarks/data/crosslingual.jsonl` has 20 CMRC questions translated into English and 20 SQuAD
questions translated into Chinese, by hand; each keeps its original, so the same 40 questions
are also asked in the documents' own language, on the same index. Reported: recall@1/5 per
retrieval mode and direction, and whether the answer holds the gold answer.

    .venv/bin/python benchmarks/crosslingual.py [--index indexes/bench-crosslingual] [--no-answers]

`--chinese-only` asks the CMRC questions of the set on `rag eval`'s CMRC index instead (Chinese
paragraphs only, no English passage to compete with a translated question).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag import RAG  # noqa: E402
from rag.core.present import plain  # noqa: E402
from rag.evaluate import Question, contains_answer, load, retrieval_metrics  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "datasets"
SQUAD_PARAGRAPHS = 600


def build(index: Path) -> RAG:
    corpus = index / "corpus"
    if not (index / "manifest.json").exists():
        corpus.mkdir(parents=True, exist_ok=True)
        cmrc = load(DATA / "cmrc2018" / "cmrc2018-dev.json").contexts
        squad = load(DATA / "squad_dev" / "squad-dev-v1.1.json").contexts
        for name, text in cmrc.items():
            (corpus / f"cmrc-{name}").write_text(text)
        for name in sorted(squad)[:SQUAD_PARAGRAPHS]:
            (corpus / f"squad-{name}").write_text(squad[name])
        RAG(index).ingest([corpus], progress=True)
    return RAG(index)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default="indexes/bench-crosslingual")
    ap.add_argument("--chinese-only", action="store_true", help="CMRC questions on indexes/eval-cmrc2018-dev")
    ap.add_argument("--no-answers", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows = [json.loads(line) for line in (HERE / "data" / "crosslingual.jsonl").read_text().splitlines() if line]
    if args.chinese_only:
        rag = RAG("indexes/eval-cmrc2018-dev")
        rows = [{**r, "source": r["source"].removeprefix("cmrc-")} for r in rows if r["source"].startswith("cmrc-")]
    else:
        rag = build(Path(args.index))
    result = {"encoder": rag.info().encoder, "chunks": rag.info().chunks, "table": []}
    for documents, language in (("Chinese (CMRC)", ("English", "Chinese")), ("English (SQuAD)", ("Chinese", "English"))):
        for asked in ("translated", "original"):
            questions = [Question(r["question"] if asked == "translated" else r["original"], r["answers"], r["source"])
                         for r in rows if r["original"].isascii() == (documents == "English (SQuAD)")]
            if not questions:
                continue
            row = {"documents": documents, "asked": asked, "questions": len(questions),
                   "language": language[0] if asked == "translated" else language[1]}
            for mode in ("dense", "keyword", "hybrid"):
                m = retrieval_metrics(lambda q, k: rag.search(q, k=k, mode=mode), questions, ks=(1, 5))
                row[mode] = (m["recall@1"], m["recall@5"])
            if not args.no_answers:
                answers = [rag.ask(q.question) for q in questions]
                row["answer_contains"] = round(sum(
                    contains_answer(plain(a), q.answers) if a.found else 0.0
                    for a, q in zip(answers, questions)) / len(questions), 3)
                row["not_found"] = round(sum(not a.found for a in answers) / len(questions), 3)
            result["table"].append(row)
            if not args.json:
                print(json.dumps(row, ensure_ascii=False), file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print(f"mixed index: {result['chunks']} chunks, encoder {result['encoder']}")
    print("| documents | question | dense r@1/r@5 | keyword r@1/r@5 | hybrid r@1/r@5 | answer holds gold | not found |")
    print("|---|---|---|---|---|---|---|")
    for r in result["table"]:
        asked = f"{r['language']} ({r['asked']})"
        cells = " | ".join(f"{r[m][0]:.2f} / {r[m][1]:.2f}" for m in ("dense", "keyword", "hybrid"))
        print(f"| {r['documents']} | {asked} | {cells} | {r.get('answer_contains', '-')} | {r.get('not_found', '-')} |")


if __name__ == "__main__":
    main()
