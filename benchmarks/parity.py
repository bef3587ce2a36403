"""Same answers before and after a change: dump every field of the answers and the retrieval
of a fixed set of questions, then compare two dumps field by field.

    python benchmarks/parity.py dump before.json       # on the old code (PYTHONPATH=old/checkout)
    python benchmarks/parity.py dump after.json        # on the new code
    python benchmarks/parity.py compare before.json after.json

The questions (seeded samples, so every run asks the same ones): 100 SQuAD v1.1 dev questions
over all its paragraphs (English index: MiniLM, Gemma), 50 CMRC 2018 dev questions over its
paragraphs (multilingual index: e5, Qwen2.5-0.5B), and 50 XQuAD Chinese questions over the
English paragraphs (English index; the question is translated by Qwen2.5-1.5B). Uses only
the public API (`RAG`) and `rag.evaluate.load`, which every version has, so one script
measures both sides. Timings are left out: they are the one field that should differ."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SETS = [  # name, questions file, documents file, how many
    ("squad-v1.1", DATA / "squad_dev" / "squad-dev-v1.1.json", DATA / "squad_dev" / "squad-dev-v1.1.json", 100),
    ("cmrc2018", DATA / "cmrc2018" / "cmrc2018-dev.json", DATA / "cmrc2018" / "cmrc2018-dev.json", 50),
    ("xquad-zh-en", DATA / "xquad" / "xquad.zh.json", DATA / "xquad" / "xquad.en.json", 50),
]
K = 10


def _round(value):
    """Floats to 4 places: a last-bit difference of a BLAS call is not a different answer."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def dump(out: Path, work: Path, limit: int | None) -> None:
    from rag import RAG
    from rag.evaluate import load, sample, write_contexts

    result = {}
    for name, questions_file, documents_file, n in SETS:
        docs, asked = load(documents_file), load(questions_file)
        index = work / f"parity-{name}"
        if not index.exists():
            RAG(index).ingest([write_contexts(docs, work / f"corpus-{docs.name}")], progress=True)
        rag = RAG(index)
        rows = []
        started = time.perf_counter()
        for q in sample(asked.questions, limit or n, seed=0):
            hits = [{"source": Path(h.source).name, "page": h.page, "chunk_id": h.chunk_id, "start": h.start,
                     "end": h.end, "score": h.score, "dense": h.dense} for h in rag.search(q.question, k=K)]
            answer = rag.ask(q.question).to_dict()
            answer.pop("timings", None)
            for s in answer.get("sources", []):
                s["source"] = Path(s["source"]).name  # the corpus folder differs between runs
            rows.append(_round({"question": q.question, "hits": hits, "answer": answer}))
        result[name] = rows
        print(f"{name}: {len(rows)} questions in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1))


def _diff(a, b, path=""):
    """Every path where two JSON values differ, over the fields the first one has (fields the
    second version added are counted apart, by `_added`)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(a) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {json.dumps(a, ensure_ascii=False)[:120]} -> {json.dumps(b, ensure_ascii=False)[:120]}"]


def _added(a, b, path="") -> set[str]:
    """The fields `b` has and `a` lacks (new output, e.g. a field added to the answer's JSON)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {f"{path}.{k}" for k in set(b) - set(a)} | {x for k in a if k in b for x in _added(a[k], b[k], f"{path}.{k}")}
    if isinstance(a, list) and isinstance(b, list):
        return {x for i, (p, q) in enumerate(zip(a, b)) for x in _added(p, q, f"{path}[]")}
    return set()


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    print("| set | questions | retrieval identical | answers identical (every field) |\n|---|---|---|---|")
    differences = []
    for name in a:
        rows_a, rows_b = a[name], b.get(name, [])
        same_hits = sum(1 for x, y in zip(rows_a, rows_b) if not _diff(x["hits"], y["hits"]))
        same_answers = sum(1 for x, y in zip(rows_a, rows_b) if not _diff(x["answer"], y["answer"]))
        print(f"| {name} | {len(rows_a)} | {same_hits} | {same_answers} |")
        for i, (x, y) in enumerate(zip(rows_a, rows_b)):
            differences += [f"{name}[{i}] {x['question'][:50]!r}{d}" for d in _diff(x, y)]
    added = sorted({f for name in a for x, y in zip(a[name], b.get(name, [])) for f in _added(x, y)})
    if added:
        print("fields only the second has (not compared):", ", ".join(added))
    for d in differences[:40]:
        print(d)
    return 1 if differences else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="answer the fixed questions and write every field to a JSON file")
    d.add_argument("out", type=Path)
    d.add_argument("--work", type=Path, default=Path("/tmp/rag-parity"), help="where the indexes are built")
    d.add_argument("--limit", type=int, help="fewer questions per set (a quick look)")
    c = sub.add_parser("compare", help="field-by-field differences of two dumps (exit 1 when any)")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = p.parse_args()
    if args.command == "dump":
        args.work.mkdir(parents=True, exist_ok=True)
        dump(args.out, args.work, args.limit)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
