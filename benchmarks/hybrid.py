"""Does hybrid search lose to dense or keyword search alone? Per set: recall@1/5/10 of dense,
keyword and hybrid search, counted in questions, and hybrid's margin over the better of the two;
every candidate fusion rule replayed on the same saved candidates.

`dump` runs each question once through rag's own hybrid path (Retriever.pool: the dense top-n,
the BM25 lists with their coverage, the cosines of every list's top-n; a translated question is
translated as `rag eval` does) and saves the pool and the gold chunk ids per question, with the
dense and keyword modes' own top 10. `replay` then scores every rule in RULES on the saved pools in
seconds; rule "today" (rag.answer.retrieve.hybrid_rank with the encoder's fixed weight, the rule
before issue 37) reproduces `rag eval`'s hybrid figures, "adaptive" is rag's default.

    .venv/bin/python benchmarks/hybrid.py dump squad1.1 covidqa cmrc xquad.en ...   # SETS below
    .venv/bin/python benchmarks/hybrid.py dump valgrind git     # held-out corpora (benchmarks/heldout.py)
    .venv/bin/python benchmarks/hybrid.py replay                # every saved set, every rule
    .venv/bin/python benchmarks/hybrid.py replay --rules today,adaptive --markdown

Pools are saved under benchmarks/.cache/pools/<set>.json (not committed).
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

from rag.answer import retrieve
from rag.answer.retrieve import Pool

DATA = ROOT.parent / "shared" / "datasets"
XQUAD = DATA / "xquad" / "xquad.{lang}.json"
HELDOUT = ROOT / "benchmarks" / ".cache" / "heldout"
POOLS = ROOT / "benchmarks" / ".cache" / "pools"

# set -> (questions' file, documents' file, question limit): the README headline table's samples
SETS = {
    "squad1.1": (DATA / "squad_dev" / "squad-dev-v1.1.json", None, 2000),
    "squad2.0": (DATA / "squad_dev" / "squad-dev-v2.0.json", None, 300),
    "covidqa": (DATA / "covidqa_deepset" / "200423_covidQA.json", None, None),
    "cmrc": (DATA / "cmrc2018" / "cmrc2018-dev.json", None, None),
    **{f"xquad.{lang}": (str(XQUAD).replace("{lang}", lang), None, 300)
       for lang in ("ar", "de", "en", "hi", "ru", "th", "zh")},
    **{f"xquad.{a}:{d}": (str(XQUAD).replace("{lang}", a), str(XQUAD).replace("{lang}", d), 300)
       for a, d in (("zh", "en"), ("en", "zh"), ("de", "en"))},
    # held-out corpora (benchmarks/heldout.py): no rule was chosen on them
    "valgrind": (HELDOUT / "valgrind-faq.json", None, None),
    "git": (HELDOUT / "git-faq.json", None, None),
}
HELD_OUT = ("valgrind", "git")


def dump(name: str, index_dir: str = "indexes") -> Path:
    from tqdm import tqdm

    from rag.evaluate import eval_index, is_hit, load, sample
    from rag.language.text import clean
    from rag.models.catalog import encoder_profile

    asked_path, docs_path, limit = SETS[name]
    asked_set = load(asked_path)
    docs_set = load(docs_path) if docs_path else asked_set
    rag = eval_index(docs_set, Path(index_dir) / f"eval-{docs_set.name}")
    retriever, profile = rag.retriever, encoder_profile(rag.settings.encoder)
    questions = [q for q in sample(asked_set.questions, limit, 0) if not q.impossible and q.source]
    rows = []
    for q in tqdm(questions, desc=name, leave=False):
        translated = rag.translated_query(q.question) if docs_path else None
        query, asked = clean(translated or q.question), clean(q.question) if translated else None
        reads_asked = asked is not None and retriever.multilingual
        vector = rag.encoder.encode_query(asked if reads_asked else query)
        with rag.store.snapshot() as snap:
            pool = retriever.pool(snap, query, vector, 10, asked, checked=reads_asked)
            keyword_mode = [i for i, _ in snap.keyword(query, 10)]
            ids = set(pool.cosines) | set(keyword_mode) | {i for r, _ in pool.keyword for i, _ in r}
            chunks = snap.chunks(sorted(ids))
        gold = sorted(i for i, row in chunks.items() if is_hit(row, q, docs_set.long_contexts))
        rows.append({"dense": pool.dense, "keyword": pool.keyword, "checked": pool.checked,
                     "cosines": {str(i): c for i, c in pool.cosines.items()},
                     "keyword_mode": keyword_mode, "gold": gold, "translated": translated})
    POOLS.mkdir(parents=True, exist_ok=True)
    out = POOLS / f"{name}.json"
    out.write_text(json.dumps({"set": name, "encoder": rag.settings.encoder, "weight": profile.fusion_weight,
                               "n": retriever.candidates, "questions": rows}))
    return out


def load_pools(name: str):
    data = json.loads((POOLS / f"{name}.json").read_text())
    pools = []
    for r in data["questions"]:
        pool = Pool(data["n"], [tuple(x) for x in r["dense"]], [([tuple(x) for x in ranked], cov)
                                                                  for ranked, cov in r["keyword"]],
                    {int(i): c for i, c in r["cosines"].items()}, r["checked"])
        pools.append((pool, r))
    return data, pools


# --- rules: pool, fixed weight -> ids best first ---------------------------------------------


def rule_today(pool: Pool, weight: float) -> list[int]:
    """The fusion before issue 37: one weight per encoder (retrieve.hybrid_rank, fixed)."""
    return [i for i, _ in retrieve.hybrid_rank(pool, 10, weight)]


def rule_adaptive(pool: Pool, weight: float) -> list[int]:
    """rag's default (retrieve.adaptive_rank)."""
    return [i for i, _ in retrieve.adaptive_rank(pool, 10, weight)]


def rule_rrf(pool: Pool, weight: float, c: int = 60) -> list[int]:
    """Reciprocal rank fusion of the dense list and the (trusted) keyword list."""
    lists = [(dict(r), retrieve.keyword_trust(cov) if r else 0.0) for r, cov in pool.keyword]
    keyword = [i for i, s in retrieve.merge_keyword(lists).items() if s > 0]
    score: dict[int, float] = {}
    for ranked in ([i for i, _ in pool.dense], keyword[: pool.n]):
        for rank, i in enumerate(ranked):
            score[i] = score.get(i, 0.0) + 1 / (c + rank + 1)
    return sorted(score, key=lambda i: -score[i])[:10]


def fixed(w: float):
    return lambda pool, weight: [i for i, _ in retrieve.hybrid_rank(pool, 10, w)]


def variant(**params):
    return lambda pool, weight: [i for i, _ in retrieve.adaptive_rank(pool, 10, weight, **params)]


RULES = {"today": rule_today, "adaptive": rule_adaptive, "rrf": rule_rrf,
         **{f"w{w}": fixed(w) for w in (0.3, 0.5, 0.7)},
         **{f"f{f}d{d}r{r}": variant(floor=f, depth=d, rrf=r)
            for f in (0.0, 0.25, 0.5, 0.75) for d in (5, 10, 20, 50) for r in (0.0, 0.3, 0.5)}}


def ranks(order: list[int], gold: set) -> int | None:
    return next((j + 1 for j, i in enumerate(order[:10]) if i in gold), None)


def counts(rank_list, ks=(1, 5, 10)) -> list[int]:
    return [sum(1 for r in rank_list if r and r <= k) for k in ks]


def replay(names: list[str], rules: list[str], markdown: bool = False) -> None:
    print("per set: questions; recall@1/5/10 in questions for dense, keyword; per rule hybrid's and its "
          "worst margin over max(dense, keyword) in questions (>= -1 passes)")
    worst = {r: 0 for r in rules}
    header = "| set | n | dense | keyword | " + " | ".join(rules) + " |"
    print(header)
    print("|---" * (4 + len(rules)) + "|")
    for name in names:
        data, pools = load_pools(name)
        weight = data["weight"]
        dense = counts([ranks([i for i, _ in p.dense], set(r["gold"])) for p, r in pools])
        keyword = counts([ranks(r["keyword_mode"], set(r["gold"])) for p, r in pools])
        best = [max(a, b) for a, b in zip(dense, keyword)]
        cells = []
        for rule in rules:
            hy = counts([ranks(RULES[rule](p, weight), set(r["gold"])) for p, r in pools])
            margin = min(h - b for h, b in zip(hy, best))
            if name not in HELD_OUT:
                worst[rule] = min(worst[rule], margin)
            cells.append("/".join(map(str, hy)) + f" ({margin:+d})")
        print(f"| {name} | {len(pools)} | {'/'.join(map(str, dense))} | {'/'.join(map(str, keyword))} | "
              + " | ".join(cells) + " |")
    print("| worst margin, shared sets | | | | " + " | ".join(f"{worst[r]:+d}" for r in rules) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("dump", "replay"))
    ap.add_argument("sets", nargs="*", help=f"default: every saved set ({', '.join(SETS)})")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--indexes", default="indexes")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if args.command == "dump":
        for name in args.sets:
            print(dump(name, args.indexes), flush=True)
        return
    names = args.sets or [n for n in SETS if (POOLS / f"{n}.json").exists()]
    replay(names, args.rules.split(","), args.markdown)


if __name__ == "__main__":
    main()
