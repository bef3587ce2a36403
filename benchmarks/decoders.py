"""Decoders compared end to end, retrieval included: the same seeded questions as `rag eval
--answers` (same index, indexes/eval-<name>, same metrics), answered through `RAG.ask` with
one generator, one JSON line per question, so a long run can be done in pieces (`--part`) and
the table compares decoders on exactly the same questions. The table adds what `rag eval`
does not print: the shipped confidence's calibration error on these answers (rag/confidence.py
was fitted on Gemma's signals) and the precision of the answers it gives >= 0.8.

    D=../shared/datasets; R=benchmarks/results
    for g in gemma3-270m qwen2.5-0.5b; do
      .venv/bin/python benchmarks/decoders.py run $D/squad_dev/squad-dev-v1.1.json --generator $g \\
          --limit 200 --part 0:100 --out $R/dec-squad11-$g.jsonl    # then --part 100:200
    done
    .venv/bin/python benchmarks/decoders.py table $R/dec-*.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(args) -> None:
    from rag.core.present import plain
    from rag.evaluate import contains_answer, eval_index, exact_match, f1_score, load, sample

    dataset = load(args.dataset)
    rag = eval_index(dataset, generator=args.generator)
    if args.switch is not None:  # how much the candidate ranking (fitted on Gemma) helps this decoder
        from rag.answer import confidence

        for key in ("en-rank", "zh-rank"):
            confidence.MODELS[key] = {**confidence.MODELS[key], "switch": args.switch}
    start, stop = (int(x) for x in args.part.split(":")) if args.part else (0, None)
    questions = sample(dataset.questions, args.limit, args.seed)[start:stop]
    t = time.perf_counter()
    rag.ask("warm-up question about anything")  # the model's load is timed by `rag ask` cold, not here
    load_s = time.perf_counter() - t
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for i, q in enumerate(questions, start):
            answer = rag.ask(q.question)
            short = (answer.short or plain(answer)) if answer.found else ""
            row = {"dataset": dataset.name, "generator": args.generator + (f" switch={args.switch}" if
                   args.switch is not None else ""), "seed": args.seed, "limit": args.limit,
                   "i": i, "impossible": q.impossible, "found": answer.found, "short": answer.short,
                   "em": 0.0 if q.impossible else exact_match(short, q.answers),
                   "f1": 0.0 if q.impossible else f1_score(short, q.answers),
                   "supported": 0.0 if q.impossible or not answer.found
                   else contains_answer(" ".join(answer.supporting), q.answers),
                   "confidence": answer.confidence, "first_token_ms": answer.timings.first_token_ms,
                   "total_ms": answer.timings.total_ms, "load_s": round(load_s, 2)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
    print(f"{len(questions)} questions in {time.perf_counter() - t:.0f} s", file=sys.stderr)


def calibration_error(probs, right, bins=10) -> float:
    from rag.answer.confidence import calibration_error

    return calibration_error(probs, right, bins)


def table(args) -> None:
    rows = {}
    for p in args.files:
        for line in Path(p).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[(r["dataset"], r["generator"], r["seed"], r["limit"], r["i"])] = r  # a rerun piece replaces
    groups = {}
    for (name, gen, *_), r in sorted(rows.items()):
        groups.setdefault((name, gen), []).append(r)
    print("| dataset | decoder | questions | short EM | short F1 | supporting sentence has it | "
          "not found (answerable) | abstained (unanswerable) | confidence ECE | conf >= 0.8: share, right | "
          "first token p50 ms | total p50 ms |")
    print("|---" * 12 + "|")
    mean = lambda xs: f"{sum(xs) / len(xs):.3f}" if xs else "-"  # noqa: E731
    for (name, gen), rs in groups.items():
        ans = [r for r in rs if not r["impossible"]]
        imp = [r for r in rs if r["impossible"]]
        given = [r for r in rs if r["found"] and r["confidence"] is not None]
        right = [(not r["impossible"]) and r["f1"] >= 0.5 for r in given]
        probs = [r["confidence"] for r in given]
        hi = [ok for p, ok in zip(probs, right) if p >= 0.8]
        ece = f"{calibration_error(probs, right):.3f}" if given else "-"
        first = [r["first_token_ms"] for r in rs if r["first_token_ms"] is not None]
        print(f"| {name} | {gen} | {len(rs)} | {mean([r['em'] for r in ans])} | {mean([r['f1'] for r in ans])} | "
              f"{mean([r['supported'] for r in ans])} | {mean([float(not r['found']) for r in ans])} | "
              f"{mean([float(not r['found']) for r in imp])} | {ece} (n={len(given)}) | "
              f"{len(hi) / max(1, len(given)):.2f}, {mean([float(x) for x in hi])} | "
              f"{statistics.median(first):.0f} | {statistics.median([r['total_ms'] for r in rs]):.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("dataset")
    r.add_argument("--generator", required=True)
    r.add_argument("--limit", type=int, default=200)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--part", default=None, help="START:STOP of the seeded sample (a run in pieces)")
    r.add_argument("--switch", type=float, default=None,
                   help="override the candidate ranking's switch margin (1.0: keep the decoder's own span)")
    r.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    args = ap.parse_args()
    run(args) if args.command == "run" else table(args)


if __name__ == "__main__":
    main()
