"""The answer confidence, fitted and checked on held-out questions (rag/confidence.py).

1. `dump`: answer a seeded sample of a dataset with default settings and write, per question,
   the Judge's signals, the answer and whether its short answer is right (F1 >= 0.5 against
   the gold; an unanswerable question's answer is never right). `--drop-gold` removes the
   gold paragraph's document from retrieval (CMRC "with the gold article removed": every
   question becomes unanswerable from the index).
2. `fit`: split every dump in a calibration half and a held-out half (seeded), fit the
   logistic model per language (with and without the decoder's log-probabilities), print the
   held-out expected calibration error, the precision at confidence >= 0.8 and the
   reliability table; `--write` stores the models in rag/confidence.py (MODELS), replacing
   only the keys it fitted. `--key` names them: the dumps of one language fitted as e.g.
   "zh-qwen" (and "zh-qwen-rank"), the models `confidence.model_key` gives Qwen's answers.
   A dump records its decoder (`--generator`, the RAG setting; pass it: "auto" follows the
   index) and the model key its answers got (`language`).

    D=../shared/datasets; R=benchmarks/results
    .venv/bin/python benchmarks/calibrate.py dump $D/squad_dev/squad-dev-v1.1.json --limit 150 --out $R/conf-squad11.jsonl
    .venv/bin/python benchmarks/calibrate.py dump $D/squad_dev/squad-dev-v2.0.json --limit 300 --out $R/conf-squad20.jsonl
    .venv/bin/python benchmarks/calibrate.py dump $D/cmrc2018/cmrc2018-dev.json --limit 150 --generator gemma3-270m --out $R/conf-cmrc.jsonl
    .venv/bin/python benchmarks/calibrate.py dump $D/cmrc2018/cmrc2018-dev.json --limit 150 --seed 1 --drop-gold --generator gemma3-270m --out $R/conf-cmrc-nogold.jsonl
    .venv/bin/python benchmarks/calibrate.py fit $R/conf-squad*.jsonl $R/conf-cmrc.jsonl $R/conf-cmrc-nogold.jsonl --write
    # Qwen2.5-0.5B on Chinese (the decoder of multilingual indexes): "zh-qwen", "zh-qwen-rank"
    G=qwen2.5-0.5b
    .venv/bin/python benchmarks/calibrate.py dump $D/cmrc2018/cmrc2018-dev.json --limit 150 --generator $G --out $R/conf-cmrc-qwen.jsonl
    .venv/bin/python benchmarks/calibrate.py dump $D/cmrc2018/cmrc2018-dev.json --limit 150 --seed 1 --drop-gold --generator $G --out $R/conf-cmrc-nogold-qwen.jsonl
    .venv/bin/python benchmarks/calibrate.py fit $R/conf-cmrc-qwen.jsonl $R/conf-cmrc-nogold-qwen.jsonl --key zh-qwen --write

On Qwen's CMRC answers (held out: 75 answerable, 75 with the gold document removed) the
"zh-qwen" models: ECE 0.094 (Gemma's "zh": 0.131), answerable mean confidence 0.532 with 0.547
right (Gemma's "zh": 0.366), precision 1.000 on the 11 answers >= 0.8 (Gemma's: none >= 0.8).

A dump can be made in pieces (`--part 0:75`, then `--part 75:150`, appended to the same file).

3. `cross`: questions asked in another language than the passages (issue 36) are dumped with
   `--asked` (the same questions in another language, by position) and `--not-in N` (none of
   the questions `rag eval --lang ... --limit N` reports), in other languages than the pairs it
   reports; each model key's probability is then recalibrated for them (confidence.CROSS),
   kept where that lowers the held-out ECE:

    X=../shared/datasets/xquad
    for l in ar hi th; do .venv/bin/python benchmarks/calibrate.py dump $X/xquad.en.json --asked $X/xquad.$l.json \
        --not-in 60 --limit 30 --seed 1 --out $R/cross-$l-en.jsonl; done
    for l in de ru ar; do .venv/bin/python benchmarks/calibrate.py dump $X/xquad.zh.json --asked $X/xquad.$l.json \
        --not-in 60 --limit 30 --seed 1 --out $R/cross-$l-zh.jsonl; done
    .venv/bin/python benchmarks/calibrate.py cross $R/cross-*.jsonl --write
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from rag.answer import confidence as conf  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"


def dump(args) -> None:
    from rag.answer.pipeline import Question
    from rag.core.present import plain
    from rag.evaluate import Question as Item
    from rag.evaluate import eval_index, f1_score, load, sample

    dataset = load(args.dataset)
    # min_confidence 0: no answer turned into "may not say" by the models being fitted (the
    # threshold is benchmarks/abstain.py's to sweep)
    chosen = {"min_confidence": 0.0, **({"generator": args.generator} if args.generator else {})}
    rag = eval_index(dataset, **chosen)  # indexes/eval-<name>: the index of `rag eval` and benchmarks/decoders.py
    rag.ask("warm-up question about anything")
    pipe = rag.pipeline  # pipe.model_key: the models this decoder's answers get
    gold = [None]
    if args.drop_gold:
        retriever = pipe.retrieve.retriever

        class WithoutGold:
            """The index's retriever with the gold paragraph's file left out."""

            def search(self, query, k, mode, diverse, asked=None):
                hits = retriever.search(query, 4 * k, mode, diverse, asked=asked)
                return [h for h in hits if Path(h.source).name != gold[0]][:k]

        pipe.retrieve.retriever = WithoutGold()
    s = rag.settings
    begin, stop = (int(x) for x in args.part.split(":")) if args.part else (0, None)
    pool = dataset.questions
    if args.asked:  # the same questions in another language, by position (XQuAD): asked, gold from `dataset`
        asked = load(args.asked).questions
        if len(asked) != len(pool):
            raise SystemExit(f"--asked {args.asked}: {len(asked)} questions, the dataset {len(pool)}")
        pool = [Item(a.question, g.answers, g.source, g.answer_starts, g.impossible) for a, g in zip(asked, pool)]
    if args.not_in:  # held out: none of the questions `rag eval --limit N --seed 0` reports
        measured = {id(q) for q in sample(pool, args.not_in, 0)}
        pool = [q for q in pool if id(q) not in measured]
    questions = sample(pool, args.limit, args.seed)[begin:stop]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with out.open("a" if args.part else "w") as f:
        for i, item in enumerate(questions, begin):
            gold[0] = item.source
            q = Question(item.question, item.question, item.question, s.k, s.mode, s.max_tokens)
            answer = None
            for answer in pipe.stream(q):
                pass
            impossible = item.impossible or args.drop_gold
            short = (answer.short or plain(answer)) if answer.found else ""
            f1 = 0.0 if impossible or not answer.found else f1_score(short, item.answers)
            row = {"dataset": dataset.name + ("-nogold" if args.drop_gold else "")
                   + (f"-asked-{Path(args.asked).stem}" if args.asked else ""), "i": i,
                   "question": item.question, "gold": item.answers, "impossible": impossible,
                   "found": answer.found, "note": answer.note, "short": answer.short, "copied": q.copied,
                   "f1": round(f1, 4), "right": bool(answer.found and f1 >= 0.5), "language": pipe.model_key,
                   "searched": q.searched,
                   "generator": rag.generator_name, "confidence": answer.confidence,
                   "first_token_ms": answer.timings.first_token_ms, "total_ms": answer.timings.total_ms,
                   "judge_ms": (q.timer.marks["judged_ms"] - q.timer.marks.get("decoded_ms", 0))
                   if "judged_ms" in q.timer.marks else None,
                   "supporting": answer.supporting, **q.signals}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            if (i + 1) % 25 == 0:
                print(f"{i + 1}/{len(questions)} {time.time() - start:.0f} s", file=sys.stderr, flush=True)


def read(paths, key: str | None = None) -> list[dict]:
    """The dumps' rows; the word signals (`confidence.text_signals`) computed again from each
    row's question, short answer and supporting sentences, so a dump outlives their changes.
    `key`: every row's model key (language) becomes it, e.g. "zh" -> "zh-qwen" (the dumps must
    be of that one language)."""
    rows = []
    for p in paths:
        rows += [json.loads(line) for line in Path(p).read_text().splitlines() if line.strip()]
    if key:
        found = {r["language"] for r in rows}
        if any(key != lang and not key.startswith(lang + "-") for lang in found):
            raise SystemExit(f"--key {key}: the dumps are of {sorted(found)}; a key extends one language")
        for r in rows:
            r["language"] = key
    for r in rows:
        if r.get("top_dense") is not None:
            r.update(conf.text_signals(r["question"], r["short"], r["supporting"]))
    return rows


def halves(rows: list[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(calibration, held-out): each dataset's questions split in two at random (seeded)."""
    cal, held = [], []
    for name in sorted({r["dataset"] for r in rows}):
        part = [r for r in rows if r["dataset"] == name]
        order = list(range(len(part)))
        random.Random(seed).shuffle(order)
        for n, j in enumerate(order):
            (cal if n % 2 == 0 else held).append(part[j])
    return cal, held


def scored(rows: list[dict]) -> list[dict]:
    """The answers the Judge saw (not refused before it): the ones a confidence is given to."""
    return [r for r in rows if r.get("support") is not None or r.get("top_dense") is not None]


def report(name: str, probs: list[float], right: list[bool]) -> str:
    n = len(probs)
    hi = [r for p, r in zip(probs, right) if p >= 0.8]
    ece = conf.calibration_error(probs, right)
    lines = [f"{name}: {n} answers, right {sum(right) / max(1, n):.3f}, held-out ECE {ece:.3f}, "
             f"confidence >= 0.8: {len(hi)} answers ({len(hi) / max(1, n):.3f}), "
             f"precision {sum(hi) / max(1, len(hi)):.3f}"]
    lines.append("  bin | answers | mean confidence | right")
    for b in range(10):
        idx = [i for i, p in enumerate(probs) if b / 10 <= p < (b + 1) / 10 or (b == 9 and p == 1.0)]
        if idx:
            lines.append(f"  {b / 10:.1f}-{(b + 1) / 10:.1f} | {len(idx)} | "
                         f"{sum(probs[i] for i in idx) / len(idx):.3f} | {sum(right[i] for i in idx) / len(idx):.3f}")
    return "\n".join(lines)


def auc(probs: list[float], right: list[bool]) -> float:
    pos = [p for p, r in zip(probs, right) if r]
    neg = [p for p, r in zip(probs, right) if not r]
    if not pos or not neg:
        return float("nan")
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


def candidate_rows(r: dict) -> list[dict]:
    """The candidates the Judge ranks for one dumped answer (confidence.shortlist), each
    labelled right or not against the gold (never, for an unanswerable question)."""
    from rag.evaluate import f1_score

    shorts, kept = conf.shortlist(r["question"], r["short"], r["alternatives"], r["scores"])
    rows = conf.candidate_signals(r["question"], shorts, kept, r["supporting"], r)
    for i, (row, short) in enumerate(zip(rows, shorts)):
        # the decoder's own: as the dump scored it (an empty short answer: the whole answer)
        f1 = 0.0 if r["impossible"] else r["f1"] if i == 0 else f1_score(short, r["gold"])
        row.update(short=short, f1=f1, right=f1 >= 0.5, lp_unknown=conf.mean(r["scores"][1]))
    return rows


def picked(r: dict, models: dict, switch: float | None = None, platt: bool = True) -> tuple[dict, float]:
    """(the chosen candidate's row, its probability) as `confidence.choose` decides."""
    language = r["language"]
    model = dict(models[f"{language}-rank"])
    if switch is not None:
        model["switch"] = switch
    if not platt:
        model.pop("platt", None)
    rows = candidate_rows(r)
    short, p = conf.choose(r["question"], r["short"], r["alternatives"], r["scores"], r["supporting"], r, language,
                           {**models, f"{language}-rank": model})
    return next(c for c in rows if c["short"] == short), p


SWITCHES = (0.0, 0.02, 0.05, 0.1, 0.2, 1.0)


def fit_rank(rows: list[dict], language: str, l2: float) -> dict:
    """The ranking model on every candidate of `rows`, its switch margin (the best short-answer
    F1 on answerable questions) and its recalibration (logistic on the chosen candidate's
    logit and the answer model's), both from two-fold cross-fitting."""
    folds = [rows[0::2], rows[1::2]]
    out_of_fold = []  # (row, per switch margin: the chosen candidate and its probability, answer model)
    for k in (0, 1):
        other = folds[1 - k]
        models = {f"{language}-rank": conf.fit([c for r in other for c in candidate_rows(r)], conf.FEATURES_RANK, l2),
                  language: conf.fit(other, conf.FEATURES, l2)}
        for r in folds[k]:
            out_of_fold.append((r, {m: picked(r, models, m, platt=False) for m in SWITCHES}, models))

    def f1_at(m):
        return sum(choice[m][0]["f1"] for r, choice, _ in out_of_fold if not r["impossible"])
    switch = max(SWITCHES, key=lambda m: (f1_at(m), m))
    points = []
    for r, choice, models in out_of_fold:
        c, p = choice[switch]
        together = {**r, **conf.text_signals(r["question"], c["short"], r["supporting"]),
                    "short_empty": float(not c["short"])}
        points.append({"z": conf._logit(p), "za": conf._logit(conf.probability(together, language, models)),
                       "right": c["right"]})
    platt = conf.fit(points, ("z", "za"), l2=0.01)
    (w1, w2, b), (m1, m2), (s1, s2) = platt["weights"], platt["mean"], platt["scale"]
    model = conf.fit([c for r in rows for c in candidate_rows(r)], conf.FEATURES_RANK, l2)
    model.update(switch=switch, platt=[round(w1 / s1, 6), round(w2 / s2, 6), round(b - w1 * m1 / s1 - w2 * m2 / s2, 6)])
    return model


def fit_models(rows: list[dict], l2: float) -> dict:
    models = {}
    for language in sorted({r["language"] for r in rows}):
        part = scored([r for r in rows if r["language"] == language])
        models[language] = conf.fit(part, conf.FEATURES, l2)
        ranked = [r for r in part if r.get("scores")]
        if ranked:
            models[f"{language}-rank"] = fit_rank(ranked, language, l2)
    return models


def python_block(models: dict) -> str:
    """The models as a Python literal of short lines (a reviewable diff when refitted)."""
    import textwrap

    lines = ["{"]
    for key, model in models.items():
        lines.append(f"    {json.dumps(key)}: {{")
        for field, value in model.items():
            wrapped = textwrap.wrap(json.dumps(value), 100, subsequent_indent=" " * 12, break_on_hyphens=False)
            lines.append(f"        {json.dumps(field)}: " + "\n".join(wrapped) + ",")
        lines.append("    },")
    return "\n".join(lines + ["}"])


def judge(rows: list[dict], language: str, models: dict, rank: bool = True) -> tuple[list[float], list[bool]]:
    """(probabilities, right) of the answers under `language`'s models: the chosen candidate's
    where the decoder scored them and `rank`, else the answer model's on the decoder's own."""
    probs, right = [], []
    for r in rows:
        if rank and r.get("scores"):
            c, p = picked({**r, "language": language}, models)
            probs.append(p), right.append(c["right"])
        else:
            probs.append(conf.probability(r, language, models)), right.append(r["right"])
    return probs, right


def fit(args) -> None:
    rows = read(args.dumps, args.key)
    cal, held = halves(rows, args.seed)
    models = fit_models(cal, args.l2)
    print(f"calibration half {len(scored(cal))} answers, held-out half {len(scored(held))} "
          f"(of {len(cal)} + {len(held)} questions); L2 {args.l2}")
    for language in sorted({r["language"] for r in held}):
        part = scored([r for r in held if r["language"] == language])
        rank = models.get(f"{language}-rank")
        print(f"\n## {language}: switch margin {rank and rank['switch']}, Platt {rank and rank['platt']}")
        for how in ("rank", "answer signals only"):
            probs, right = judge(part, language, models, how == "rank")
            print(report(f"{language}, {how} (held out)", probs, right) + f"\n  AUC {auc(probs, right):.3f}")
        shipped = language.rsplit("-", 1)[0] if args.key else None
        compare = shipped in conf.MODELS and shipped != language and f"{shipped}-rank" in conf.MODELS
        if compare:
            probs, right = judge(part, shipped, conf.MODELS)
            print(report(f"the shipped {shipped!r} models on the same answers (held out)", probs, right)
                  + f"\n  AUC {auc(probs, right):.3f}")
        print("\nper dataset (held out, rank): dataset | answers | mean confidence | right | ECE"
              + (f" | the shipped {shipped!r}: mean confidence | ECE" if compare else ""))
        for name in sorted({r["dataset"] for r in part}):
            rows_of = [r for r in part if r["dataset"] == name]
            probs, right = judge(rows_of, language, models)
            line = (f"{name} | {len(probs)} | {sum(probs) / len(probs):.3f} | {sum(right) / len(right):.3f} | "
                    f"{conf.calibration_error(probs, right):.3f}")
            if compare:
                probs, right = judge(rows_of, shipped, conf.MODELS)
                line += f" | {sum(probs) / len(probs):.3f} | {conf.calibration_error(probs, right):.3f}"
            print(line)
        print("\nshort-answer F1 on answerable questions (held out; a refused one scores 0): "
              "dataset | questions | decoder's span | chosen candidate | oracle among candidates")
        for name in sorted({r["dataset"] for r in held if r["language"] == language}):
            ans = [r for r in held if r["dataset"] == name and not r["impossible"]]
            if not ans:
                continue
            base = sum(r["f1"] for r in ans) / len(ans)
            chosen = sum(picked(r, models)[0]["f1"] if r.get("scores") else r["f1"] for r in ans) / len(ans)
            oracle = sum(max(c["f1"] for c in candidate_rows(r)) if r.get("scores") else r["f1"] for r in ans) / len(ans)
            print(f"{name} | {len(ans)} | {base:.3f} | {chosen:.3f} | {oracle:.3f}")
    for key, m in models.items():
        print(key, "weights:", dict(zip(m["features"] + ["intercept"], m["weights"])))
    if args.write:
        path = ROOT / "rag" / "answer" / "confidence.py"
        text = path.read_text()
        block = "MODELS: dict[str, dict] = " + python_block({**conf.MODELS, **models}) + "\n"
        text = re.sub(r"MODELS: dict\[str, dict\] = (?:\{\}|\{\n.*?\n\})\n", lambda _: block, text, count=1, flags=re.S)
        path.write_text(text)
        print(f"wrote {len(models)} models {sorted(models)} (fitted on the calibration half) to {path}; "
              f"kept {sorted(set(conf.MODELS) - set(models))}")


def cross(args) -> None:
    """[a, b, threshold] per model key: right ~ sigmoid(a * logit(p) + b), p the same-language
    models' probability of each cross-language answer of the dumps, reported two-fold (fitted on
    one half, judged on the other), written fitted on all where it lowers the two-fold ECE (else
    [1, 0]); the threshold under which such an answer is refused, by min_confidence's rule."""
    rows = scored([json.loads(line) for p in args.dumps for line in Path(p).read_text().splitlines() if line.strip()])
    fitted = {}
    for language in sorted({r["language"] for r in rows}):
        part = [r for r in rows if r["language"] == language and r.get("confidence") is not None]
        points = [{"z": conf._logit(r.get("same_language_confidence", r["confidence"])), "right": r["right"]}
                  for r in part]
        halves_ = [points[0::2], points[1::2]]
        before, after, right = [], [], []
        for k in (0, 1):
            ab = _line(conf.fit(halves_[1 - k], ("z",), l2=0.01))
            for x in halves_[k]:
                p = 1 / (1 + math.exp(-x["z"]))
                before.append(p), after.append(conf.across(p, language, {language: ab})), right.append(x["right"])
        ab = _line(conf.fit(points, ("z",), l2=0.01))
        print(report(f"{language}: the same-language models (two-fold)", before, right))
        print(report(f"{language}: recalibrated {ab} (two-fold)", after, right))
        # kept only where it calibrates the held-out half better than the models as they are
        if conf.calibration_error(after, right) >= conf.calibration_error(before, right):
            print(f"  {language}: kept as it is (the recalibration does not lower the held-out ECE)")
            ab, after = [1.0, 0.0], before
        # the refusal threshold by min_confidence's own rule (settings.py): the highest with at
        # most 5% of these answerable questions refused
        threshold = max(t / 1000 for t in range(0, 101, 5) if sum(p < t / 1000 for p in after) <= 0.05 * len(after))
        fitted[language] = ab + [threshold]
        print(f"  {language}: refused below {threshold} (at most 5% of held-out answers)")
        for t in (0.02, 0.04, 0.06, 0.08, 0.1):
            print(f"  refused below {t}: same-language models {sum(p < t for p in before) / len(before):.3f}, "
                  f"recalibrated {sum(p < t for p in after) / len(after):.3f} "
                  f"(right answers refused: {sum(p < t and r for p, r in zip(after, right))})")
    if args.write:
        path = ROOT / "rag" / "answer" / "confidence.py"
        text = re.sub(r"CROSS: dict\[str, list\[float\]\] = \{.*?\}\n",
                      lambda _: f"CROSS: dict[str, list[float]] = {json.dumps({**conf.CROSS, **fitted})}\n",
                      path.read_text(), count=1, flags=re.S)
        path.write_text(text)
        print(f"wrote {fitted} to {path}")


def _line(model: dict) -> list[float]:
    """A one-feature logistic fit as [a, b] on the raw logit (its standardisation folded in)."""
    (w, b), (m,), (sd,) = model["weights"], model["mean"], model["scale"]
    return [round(w / sd, 6), round(b - w * m / sd, 6)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("dataset")
    d.add_argument("--limit", type=int, default=200)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--drop-gold", action="store_true")
    d.add_argument("--generator", help="the decoder (RAG setting generator; default: rag's)")
    d.add_argument("--part", help="START:STOP of the sample, appended to --out (a long dump in pieces)")
    d.add_argument("--asked", help="ask these questions instead (the same ones in another language, by position, "
                                   "e.g. xquad.de.json over xquad.en.json): a cross-language dump")
    d.add_argument("--not-in", type=int, default=0, metavar="N",
                   help="leave out the N questions `rag eval --limit N --seed 0` samples (held out from them)")
    d.add_argument("--out", required=True)
    f = sub.add_parser("fit")
    f.add_argument("dumps", nargs="+")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--l2", type=float, default=1.0)
    f.add_argument("--write", action="store_true")
    f.add_argument("--key", help="fit the dumps' one language as this model key (e.g. zh-qwen: Qwen's answers)")
    c = sub.add_parser("cross", help="recalibrate each model key for cross-language questions (confidence.CROSS)")
    c.add_argument("dumps", nargs="+")
    c.add_argument("--write", action="store_true")
    args = ap.parse_args()
    {"dump": dump, "fit": fit, "cross": cross}[args.command](args)


if __name__ == "__main__":
    main()
