"""Retrieval per language on XQuAD (240 SQuAD paragraphs and their questions, professionally
translated; the same paragraphs and ids in every language): recall@1/5/10 of hybrid (the
default), dense and keyword search, and questions in one language over paragraphs in another
(the same XQuAD question, asked in English over the Chinese paragraphs and back).

    .venv/bin/python benchmarks/languages.py                       # ar,de,en,hi,ru,th,zh,en:zh,zh:en, 300 q
    .venv/bin/python benchmarks/languages.py --langs th,hi --limit 300
    .venv/bin/python benchmarks/languages.py --pools /tmp/xquad       # + chunks and cosines for studies

Each documents' language has its index `<indexes>/eval-xquad.<lang>`, built once with the
default settings (`--encoder` builds another set of indexes under `--indexes`).
`--pools PREFIX` also saves the chunks and every question's cosines, so that fusion rules and
keyword segmentations can be compared offline without encoding again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.evaluate import eval_index, format_languages, is_hit, language_pairs, load, run_languages, sample  # noqa: E402

XQUAD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "xquad" / "xquad.{lang}.json"
LANGS = "ar,de,en,hi,ru,th,zh,en:zh,zh:en"


def pools(pattern: str, langs: str, limit: int, index_dir: str, out: str, **settings) -> None:
    """Everything a fusion or keyword study needs, offline: per documents' language its chunks
    (id, text, heading, source); per pair and question the cosine to every chunk and the gold
    chunk ids. `out`.json holds the texts, `out`.npz the cosines (dense search is exact at
    this size, so ranking by them is rag's dense ranking)."""
    import numpy as np

    meta, arrays = {"pairs": {}, "chunks": {}}, {}
    for asked, docs in language_pairs(langs):
        d, q = load(pattern.replace("{lang}", docs)), load(pattern.replace("{lang}", asked))
        rag = eval_index(d, Path(index_dir) / f"eval-{d.name}", **settings)
        with rag.store.snapshot() as snap:
            ids = [r[0] for r in snap.execute("SELECT id FROM chunks ORDER BY id")]
            rows = snap.chunks(ids)
        meta["chunks"][docs] = [[i, rows[i].text, rows[i].heading, Path(rows[i].source).name] for i in ids]
        questions = sample(q.questions, limit, 0)
        cos = np.zeros((len(questions), len(ids)), np.float32)
        with rag.store.snapshot() as snap:
            for n, question in enumerate(questions):
                c = snap.cosines(rag.encoder.encode_query(question.question), ids)
                cos[n] = [c[i] for i in ids]
        arrays[f"{asked}:{docs}"] = cos
        meta["pairs"][f"{asked}:{docs}"] = {
            "encoder": rag.info().encoder, "questions": [x.question for x in questions],
            "gold": [[i for i in ids if is_hit(rows[i], x, d.long_contexts)] for x in questions]}
    Path(out + ".json").write_text(json.dumps(meta, ensure_ascii=False))
    np.savez_compressed(out + ".npz", **arrays)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(XQUAD), help="path with {lang} (default: XQuAD)")
    ap.add_argument("--langs", default=LANGS, help="codes and question:documents pairs (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=300, help="questions per language (default: %(default)s)")
    ap.add_argument("--indexes", default="indexes", help="folder of the eval indexes (default: %(default)s)")
    ap.add_argument("--encoder", help="encoder for the indexes (default: rag's choice per index)")
    ap.add_argument("--pools", metavar="PREFIX", help="also save chunks and cosines to PREFIX.json and PREFIX.npz")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    settings = {"encoder": args.encoder} if args.encoder else {}
    result = run_languages(args.dataset, args.langs, limit=args.limit, index_dir=args.indexes,
                           progress=not args.json, **settings)
    if args.pools:
        pools(args.dataset, args.langs, args.limit, args.indexes, args.pools, **settings)
    print(json.dumps(result, indent=2) if args.json else format_languages(result))


if __name__ == "__main__":
    main()
