"""Does hybrid search lose to dense or keyword search alone? Per set: recall@1/5/10 of dense,
keyword and hybrid search, counted in questions, and hybrid's margin over the better of the two;
every candidate fusion rule replayed on the same saved candidates.

`dump` runs each question once through rag's own hybrid path (Retriever.pool: the dense top-n,
the BM25 lists with their coverage, the cosines of every list's top-n; a translated question is
translated as `rag eval` does) and saves the pool and the gold chunk ids per question, with the
dense and keyword modes' own top 10. `replay` then scores every rule in RULES on the saved pools in
seconds; rule "layers" (rag.answer.retrieve.hybrid_rank, rag's default) reproduces `rag eval`'s
hybrid figures, rule "today" the fusion before issue 37 (the same weighted sum, ranked by score
alone). A rule fails a shared set where hybrid falls more than one question under max(dense,
keyword), or under "today", at some k (issue 37's bar).
Rule names: fFdD (agreement, floor F, depth D), ...sS (+ dense_floor S), ...rR (+ rrf R),
pPfFdD (flat lists only), zFdD (no agreement only), gGwW (dense_gap G, dense_weight W), aT (bm25_top T),
wW (a fixed weight W for every encoder); see `experimental`. Rules by position (today's fused
order, re-placed): "layers", and any 'floor:SPEC' (floor_rule: DdM / KdM = dense's
/ keyword's top M within the top d, RD / RK / R = after the top H first the passages in dense's /
keyword's / either's top R), e.g. floor:RD=10+RK=20+H=5+D10=3+D5=1+K5=1.

    .venv/bin/python benchmarks/hybrid.py dump squad1.1 covidqa cmrc xquad.en ...   # SETS below
    .venv/bin/python benchmarks/hybrid.py dump valgrind git     # held-out corpora (benchmarks/heldout.py)
    .venv/bin/python benchmarks/hybrid.py replay                # every saved set, every rule
    .venv/bin/python benchmarks/hybrid.py replay --rules today,rrf,f0.5d10r0.0
    .venv/bin/python benchmarks/hybrid.py replay --rules layers,today,floor:D10=3 --table
    .venv/bin/python benchmarks/hybrid.py dump xquad.zh:en --limit 60   # translated pairs: ~10 s a question

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
    "git-pages": (HELDOUT / "git-pages.json", None, None),
    "lsof": (HELDOUT / "lsof-faq.json", None, None),
}
HELD_OUT = ("valgrind", "git", "git-pages", "lsof")


def dump(name: str, index_dir: str = "indexes", limit: int | None = None) -> Path:
    from tqdm import tqdm

    from rag.evaluate import eval_index, is_hit, load, sample
    from rag.language.text import clean
    from rag.models.catalog import encoder_profile

    asked_path, docs_path, default_limit = SETS[name]
    limit = limit or default_limit
    asked_set = load(asked_path)
    docs_set = load(docs_path) if docs_path else asked_set
    rag = eval_index(docs_set, Path(index_dir) / f"eval-{docs_set.name}")
    retriever, profile = rag.retriever, encoder_profile(rag.settings.encoder)
    questions = [q for q in sample(asked_set.questions, limit, 0) if not q.impossible and q.source]
    # a set whose questions name their gold pages (heldout.py's git-pages): any passage of one
    raw = json.loads(Path(asked_path).read_text()) if name == "git-pages" else None
    pages = {qa["question"]: set(qa["pages"]) for d in raw["data"] for p in d["paragraphs"]
             for qa in p["qas"]} if raw else {}
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
        if pages:
            gold = sorted(i for i, row in chunks.items() if Path(row.source).name in pages[q.question])
        else:
            gold = sorted(i for i, row in chunks.items() if is_hit(row, q, docs_set.long_contexts))
        rows.append({"dense": pool.dense, "keyword": pool.keyword, "checked": pool.checked,
                     "cosines": {str(i): c for i, c in pool.cosines.items()},
                     "keyword_mode": keyword_mode, "gold": gold, "translated": translated})
    POOLS.mkdir(parents=True, exist_ok=True)
    out = POOLS / (f"{name}.json" if limit == default_limit else f"{name}-{limit}.json")
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
    """The fusion before issue 37: one weight per encoder, ranked by fused score alone
    (retrieve.hybrid_rank without its layers)."""
    return [i for i, _ in retrieve.hybrid_rank(pool, 10, weight, layers=False)]


def rule_layers(pool: Pool, weight: float) -> list[int]:
    """rag's search since issue 37: the fused scores placed in layers (retrieve.hybrid_rank)."""
    return [i for i, _ in retrieve.hybrid_rank(pool, 10, weight)]


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
    return lambda pool, weight: [i for i, _ in retrieve.hybrid_rank(pool, 10, w, layers=False)]


def experimental(pool: Pool, weight: float, floor: float, depth: int, rrf: float = 0.0,
                 dense_floor: float | None = None, zero: bool = False, peak: float | None = None,
                 dense_gap: float | None = None, dense_weight: float = 0.7,
                 bm25_top: float | None = None) -> list[int]:
    """Per-question fusion rules (issue 37), measured and none kept (docs/benchmarks.md). Each
    BM25 list's trust (coverage, a translation's check) is further scaled by:
    - default: floor + (1 - floor) * the share of its AGREE_TOP best among the dense top `depth`
      (do the two lists' tops agree); `zero`: by `floor` only where none of them is;
      `peak`: only where the list is also flat (its 10th score within `peak` of its best);
    - `dense_floor`: the dense weight scaled alike by the share of dense's AGREE_TOP best
      among the keyword top `depth`;
    - `dense_gap`: the dense weight raised to `dense_weight` where dense's best stands out
      (its lead over the second > `dense_gap` of the list's spread);
    - `rrf`: the share of reciprocal rank fusion (constant 60) in the final score;
    - `bm25_top` (instead of agreement): trust x min(1, best BM25 / bm25_top)."""
    dense = dict(pool.dense)
    near = dict(pool.dense[:depth])
    lists = []
    for j, (ranked, coverage) in enumerate(pool.keyword):
        scores = dict(ranked)
        trust = retrieve.keyword_trust(coverage) if ranked else 0.0
        if bm25_top is not None and ranked:  # a weak best match (common words only) counts less
            trust *= min(1.0, ranked[0][1] / bm25_top)
        if pool.checked and j == 0:
            trust *= retrieve.agreement(scores, dense)
        elif bm25_top is not None:
            pass
        elif peak is not None:  # only a flat BM25 list (its 10th within `peak` of its best) that disagrees
            values = [v for _, v in ranked[:10]]
            flat = bool(values) and (values[0] - values[-1]) / (values[0] or 1.0) < peak
            trust *= floor + (1 - floor) * retrieve.agreement(scores, near) if flat else 1.0
        elif zero:  # only where none of BM25's best is near dense's top
            trust *= floor if retrieve.agreement(scores, near) == 0 else 1.0
        else:
            trust *= floor + (1 - floor) * retrieve.agreement(scores, near)
        lists.append((scores, trust))
    keyword = retrieve.merge_keyword(lists)
    missing = [i for i in list(keyword)[: pool.n] if i not in dense]
    dense.update({i: pool.cosines[i] for i in missing if i in pool.cosines})
    ids = set(dense) | set(missing)
    if dense_gap is not None and len(pool.dense) > 2:  # dense's best stands out: dense counts more
        c = [v for _, v in pool.dense]
        if (c[0] - c[1]) / ((c[0] - c[-1]) or 1.0) > dense_gap:
            weight = max(weight, dense_weight)
    if dense_floor is not None:
        kw_near = [i for i in keyword if keyword[i] > 0][:depth]
        top = [i for i, _ in pool.dense[: retrieve.AGREE_TOP]]
        share = sum(1 for i in top if i in kw_near) / len(top) if top and kw_near else 1.0
        td = dense_floor + (1 - dense_floor) * share
        weight = weight * td / (weight * td + 1 - weight) if weight < 1 else weight
    fused = retrieve.fuse(dense, keyword, ids, weight, top=1.0)
    if rrf:
        rr = {i: 0.0 for i in ids}
        for order in (sorted(dense, key=lambda i: -dense[i]), [i for i in keyword if keyword[i] > 0][: pool.n]):
            for r, i in enumerate(order):
                if i in rr:
                    rr[i] += 1 / (61 + r)
        top_rr, hi = max(rr.values(), default=0.0) or 1.0, max(fused.values(), default=0.0) or 1.0
        fused = {i: (1 - rrf) * fused[i] / hi + rrf * rr[i] / top_rr for i in ids}
    return sorted(fused, key=lambda i: -fused[i])[:10]


def trusted_keyword(pool: Pool) -> list[int]:
    """The keyword side as hybrid_rank sees it, ids with a score above 0, best first."""
    return [i for i, s in retrieve.trusted_keyword(pool).items() if s > 0]


def rule_floor(pool: Pool, weight: float, dense_m: dict, kw_m: dict, depth: int = 100,
               restrict: int | tuple = 0, head: int = 0) -> list[int]:
    """Today's fused order, with floors by position: for each depth d, dense's top dense_m[d]
    and the trusted keyword list's top kw_m[d] all within the final top d (`place`). `restrict`
    (depth r, or (dense's, keyword's)): after the fused top `head`, first the passages in a
    list's top r."""
    order = [i for i, _ in retrieve.hybrid_rank(pool, depth, weight, layers=False)]
    dense = [i for i, _ in pool.dense]
    keyword = trusted_keyword(pool) if any(kw_m.values()) or restrict else []
    if restrict:  # the final top 10 from each list's top `restrict` first, by fused order
        rd, rk = restrict if isinstance(restrict, tuple) else (restrict, restrict)
        inner = set(dense[:rd]) | set(keyword[:rk]) | set(order[:head])
        order = [i for i in order if i in inner] + [i for i in order if i not in inner]
    floors = [(d, list(dict.fromkeys(dense[:dense_m.get(d, 0)] + keyword[:kw_m.get(d, 0)])))
              for d in sorted(set(dense_m) | set(kw_m))]
    for i in dense[:max(dense_m.values(), default=0)] + keyword[:max(kw_m.values(), default=0)]:
        if i not in order:
            order.append(i)
    return retrieve.place(order, floors, 10)


def floor_rule(spec: str):
    """'D10=3+K10=3+D5=1': dense's top 3 and keyword's top 3 within the top 10, dense's best in
    the top 5; 'RD=10+RK=20+H=5': after the fused top 5, first dense's top 10 and keyword's top 20."""
    dense_m, kw_m, restrict, head = {}, {}, 0, 0
    for part in filter(None, spec.split("+")):
        key, m = part.split("=")
        if key == "R":
            restrict = int(m)
        elif key == "H":
            head = int(m)
        elif key in ("RD", "RK"):
            restrict = restrict if isinstance(restrict, tuple) else (restrict, restrict)
            restrict = (int(m), restrict[1]) if key == "RD" else (restrict[0], int(m))
        else:
            (dense_m if key[0] == "D" else kw_m)[int(key[1:])] = int(m)
    return lambda pool, weight: rule_floor(pool, weight, dense_m, kw_m, restrict=restrict, head=head)


def variant(shift: float = 0.0, **params):
    return lambda pool, weight: experimental(pool, weight + shift, **params)


RULES = {"today": rule_today, "rrf": rule_rrf, "layers": rule_layers,
         **{f"w{w}": fixed(w) for w in (0.3, 0.5, 0.7)},
         **{f"f{f}d{d}r{r}": variant(floor=f, depth=d, rrf=r)
            for f in (0.0, 0.25, 0.5, 0.75) for d in (5, 10, 20, 50) for r in (0.0, 0.3, 0.5)},
         **{f"f{f}d{d}s{s}": variant(floor=f, depth=d, dense_floor=s)
            for f in (0.0, 0.25, 0.5) for d in (5, 10, 20) for s in (0.0, 0.25, 0.5)},
         **{f"f{f}d{d}+{w}": variant(floor=f, depth=d, shift=w)
            for f in (0.0, 0.25, 0.5, 0.75) for d in (5, 10, 20, 50) for w in (-0.1, 0.1)},
         **{f"p{p}f{f}d{d}": variant(floor=f, depth=d, peak=p)
            for p in (0.2, 0.3, 0.4, 0.5) for f in (0.0, 0.25, 0.5) for d in (5, 10, 20)},
         **{f"g{g}w{w}": variant(floor=1.0, depth=10, dense_gap=g, dense_weight=w)
            for g in (0.1, 0.2, 0.3, 0.5) for w in (0.5, 0.6, 0.8)},
         **{f"a{t}": variant(floor=1.0, depth=10, bm25_top=t) for t in (5, 10, 15, 20)},
         **{f"z{f}d{d}": variant(floor=f, depth=d, zero=True)
            for f in (0.0, 0.25, 0.5) for d in (5, 10, 20, 50)}}


def rule_of(name: str):
    """A rule of RULES, or one named by its parameters: 'floor:D10=3+K10=3' (floor_rule)."""
    if name in RULES:
        return RULES[name]
    kind, _, spec = name.partition(":")
    return {"floor": floor_rule}[kind](spec)


def ranks(order: list[int], gold: set) -> int | None:
    return next((j + 1 for j, i in enumerate(order[:10]) if i in gold), None)


def counts(rank_list, ks=(1, 5, 10)) -> list[int]:
    return [sum(1 for r in rank_list if r and r <= k) for k in ks]


def replay(names: list[str], rules: list[str]) -> dict:
    """Per set and rule: hybrid's recall@1/5/10 in questions, its worst margin over max(dense,
    keyword), and the sets where it fails (a margin under -1, or more than one question under
    rule "today" at some k: issue 37's bar)."""
    print("per set: questions; recall@1/5/10 in questions for dense, keyword; per rule hybrid's and its "
          "worst margin over max(dense, keyword) in questions")
    fails = {r: [] for r in rules}
    print("| set | n | dense | keyword | " + " | ".join(rules) + " |")
    print("|---" * (4 + len(rules)) + "|")
    results = {}
    for name in names:
        data, pools = load_pools(name)
        weight = data["weight"]
        dense = counts([ranks([i for i, _ in p.dense], set(r["gold"])) for p, r in pools])
        keyword = counts([ranks(r["keyword_mode"], set(r["gold"])) for p, r in pools])
        today = counts([ranks(rule_today(p, weight), set(r["gold"])) for p, r in pools])
        best = [max(a, b) for a, b in zip(dense, keyword)]
        cells = []
        results[name] = {"n": len(pools), "dense": dense, "keyword": keyword, "hybrid": {}}
        for rule in rules:
            fn = rule_of(rule)
            hy = counts([ranks(fn(p, weight), set(r["gold"])) for p, r in pools])
            results[name]["hybrid"][rule] = hy
            margin = min(h - b for h, b in zip(hy, best))
            if name not in HELD_OUT and (margin < -1 or min(h - t for h, t in zip(hy, today)) < -1):
                fails[rule].append(name)
            cells.append("/".join(map(str, hy)) + f" ({margin:+d})")
        print(f"| {name} | {len(pools)} | {'/'.join(map(str, dense))} | {'/'.join(map(str, keyword))} | "
              + " | ".join(cells) + " |")
    print("| shared sets failed | | | | " + " | ".join(str(len(fails[r])) for r in rules) + " |")
    for r in rules:
        if fails[r]:
            print(f"{r}: fails on {', '.join(fails[r])}")
    return results


def table(results: dict, rule: str = "today") -> None:
    """docs/benchmarks.md's table: recall@1/5/10 per set, and hybrid's worst margin over the
    better single method, in questions."""
    print("| set | questions | dense | keyword | hybrid | hybrid - max(dense, keyword), questions at k=1/5/10 |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        n = r["n"]

        def f(c, n=n):
            return " / ".join(f"{x / n:.3f}" for x in c)

        hy = r["hybrid"][rule]
        margins = [h - max(d, k) for h, d, k in zip(hy, r["dense"], r["keyword"])]
        mark = "" if min(margins) >= -1 else " **fails**"
        print(f"| {name}{' (held out)' if name in HELD_OUT else ''} | {n} | {f(r['dense'])} | {f(r['keyword'])} | "
              f"{f(hy)} | {' / '.join(f'{m:+d}' for m in margins)}{mark} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("dump", "replay"))
    ap.add_argument("sets", nargs="*", help=f"default: every saved set ({', '.join(SETS)})")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--indexes", default="indexes")
    ap.add_argument("--table", action="store_true", help="replay: also the docs table for the first rule")
    ap.add_argument("--limit", type=int, help="dump: fewer questions than the set's sample (saved as <set>-<limit>)")
    args = ap.parse_args()
    if args.command == "dump":
        for name in args.sets:
            print(dump(name, args.indexes, args.limit), flush=True)
        return
    names = args.sets or [n for n in SETS if (POOLS / f"{n}.json").exists()]
    results = replay(names, args.rules.split(","))
    if args.table:
        print()
        table(results, args.rules.split(",")[0])


if __name__ == "__main__":
    main()
