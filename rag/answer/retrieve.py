"""Retrieval. `Retriever`: dense (FAISS), keyword (SQLite FTS5 BM25) and hybrid fusion of the
two -> Hit[], over one index with the numbers of its encoder's profile. `QueryTranslator`: what
search reads for a query, its translation into the index's language where it needs one
(translate.py), else None."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rag.answer.translate import FOREIGN as COVERED
from rag.answer.translate import needs_translation
from rag.core.present import is_blank
from rag.core.records import Hit
from rag.core.settings import MODES, Settings
from rag.index.store import Snapshot, Store
from rag.language.text import clean
from rag.models.catalog import EncoderProfile, encoder_profile
from rag.models.encoder import Encoder

# `diverse` drops near-copies from a list this many times longer than asked for
# (boilerplate repeated across files: three copies of one passage were the worst seen).
DIVERSE_POOL = 3
NEAR_COPY = 0.8  # word Jaccard from which two passages count as one
# The keyword list is this many times deeper than the dense one: a dense candidate outside
# it has a BM25 score near zero anyway (scoring those rows exactly cost 20 ms at 100k).
KEYWORD_DEPTH = 4


class Retriever:
    """Dense, keyword and hybrid search over one index (its store and its encoder), with the
    numbers of the encoder's profile (models.catalog) unless the settings name others."""

    def __init__(self, store: Store, encoder: Encoder, settings: Settings, profile: EncoderProfile | None = None):
        self.store, self.encoder, self.settings = store, encoder, settings
        profile = profile or encoder_profile(getattr(encoder, "name", ""))
        self.candidates = settings.candidates
        # how much the index's own encoder earns against BM25
        self.fusion_weight = profile.fusion_weight if settings.fusion_weight is None else settings.fusion_weight
        self.multilingual = profile.multilingual  # it reads a question in any language itself (see `search`)

    def is_empty(self) -> bool:
        return self.store.is_empty()

    def next_chunk(self, chunk_id: int):
        """The chunk that follows `chunk_id` in its document, or None (a cut sentence's end)."""
        with self.store.snapshot() as snap:
            return snap.next_chunk(chunk_id)

    def search(self, query: str, k: int | None = None, mode: str | None = None, diverse: bool = False,
               asked: str | None = None) -> list[Hit]:
        """The k best passages (k and mode: the settings' unless given). `diverse`: skip
        near-copies of a passage already chosen, so k passages say k different things (MMR's
        aim, without its tuning). `asked`: the question in its own language when `query` is
        its translation; hybrid search counts its keyword matches too (passages in the
        question's language, in an English index). A multilingual encoder's dense search reads
        `asked`, not the translation: a 1.5B model's Hindi or Arabic is worse than the question
        (XQuAD English questions over Hindi paragraphs, dense r@5 0.53 on the translation, 0.95
        as asked; docs/benchmarks.md)."""
        k = self.settings.k if k is None else k
        mode = self.settings.mode if mode is None else mode
        query = clean(query)  # invisible characters split words, as they did in the indexed text
        if diverse:
            hits = []
            for hit in self.search(query, DIVERSE_POOL * k, mode, asked=asked):
                words = set(hit.text.lower().split())
                if all(_jaccard(words, set(h.text.lower().split())) < NEAR_COPY for h in hits):
                    hit.rank = len(hits) + 1
                    hits.append(hit)
                if len(hits) == k:
                    break
            return hits
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not query.strip():
            return []
        asked = clean(asked) if asked else None
        reads_asked = asked is not None and self.multilingual
        vector = self.encoder.encode_query(asked if reads_asked else query) if mode != "keyword" else None
        with self.store.snapshot() as snap:
            if mode == "dense":
                ranked = snap.dense(vector, k)
                dense = dict(ranked)
            elif mode == "keyword":
                ranked = snap.keyword(query, k)
                dense = {}
            else:
                ranked, dense = self._hybrid(snap, query, vector, k, asked, checked=reads_asked)
            rows = snap.chunks([i for i, _ in ranked])
        hits = []
        for i, score in ranked:
            row = rows.get(i)
            if row is not None:
                hits.append(Hit(len(hits) + 1, round(score, 4), row.source, row.page, row.heading,
                                row.text, i, row.start, row.end, dense.get(i)))
        return hits

    def _hybrid(self, snap: Snapshot, query: str, vector: np.ndarray, k: int, asked: str | None = None,
                checked: bool = False):
        """Hybrid search: both methods' candidates (`pool`), fused (`hybrid_rank`)."""
        pool = self.pool(snap, query, vector, k, asked, checked)
        return hybrid_rank(pool, k, self.fusion_weight), pool.cosines

    def pool(self, snap: Snapshot, query: str, vector: np.ndarray, k: int, asked: str | None = None,
             checked: bool = False) -> Pool:
        """What hybrid search fuses: the dense top-n, the BM25 list of the query (and of a
        translated question's own words) with the share of its words the index has, and the
        cosines of every list's top-n (benchmarks/hybrid.py saves these and replays rules on them).
        `checked`: `vector` is the asked question's and `query` its translation, whose BM25
        list is trusted only as far as dense search agrees with it (`agreement`)."""
        n = max(self.candidates, k)
        dense = snap.dense(vector, n)
        lists = [(snap.keyword(q, KEYWORD_DEPTH * n), snap.coverage(q)) for q in (query, asked) if q]
        cosines = dict(dense)
        seen = set(cosines)
        missing = [i for ranked, _ in lists for i, _ in ranked[:n] if i not in seen and not seen.add(i)]
        cosines.update(snap.cosines(vector, missing))
        return Pool(n, dense, lists, cosines, checked)


@dataclass
class Pool:
    """One question's candidates for hybrid search. `dense`: the dense top-n (id, cosine),
    best first; `keyword`: per text searched (the query, then a translated question's own
    words) its BM25 list (id, score), best first, and the share of its words in the index;
    `cosines`: the cosine of every dense candidate and of each keyword list's top-n;
    `checked`: the first keyword list is a translation, trusted as far as dense agrees."""
    n: int
    dense: list[tuple[int, float]]
    keyword: list[tuple[list[tuple[int, float]], float]]
    cosines: dict[int, float]
    checked: bool = False


# Fused scores are placed in layers, so that hybrid search never drops what either method
# alone puts at its very top (issue 37: on git's man pages asked without their FAQ, dense search
# alone found 11 of 15 answers in its top 10, the weighted sum 8, as it trusted BM25 there). The
# weighted sum's top HEAD stays; after it come first the passages that one method ranks high
# (dense's top DEPTH[0], keyword's top DEPTH[1]), then the rest; and each FLOORS entry (depth d,
# m dense, m keyword) keeps each method's top m within the top d. Chosen on the shared sets
# (benchmarks/hybrid.py, rule "layers"): SQuAD v1.1 r@5/r@10 +9/+12 questions, COVID-QA +5/+2,
# none drops more than one; the depths were set after git-pages' misses were seen
# (docs/benchmarks.md#hybrid-search-against-each-method-alone-issue-37).
LAYER_HEAD = 5
LAYER_DEPTH = (10, 20)
LAYER_FLOORS = ((5, 1, 1), (10, 3, 0))


def hybrid_rank(pool: Pool, k: int, weight: float, layers: bool = True) -> list[tuple[int, float]]:
    """The k best (id, fused score) of a pool: the union of the dense top-n and the merged
    keyword list's top-n, each candidate scored by both methods (`fuse`), then placed in layers
    (LAYER_*; `layers` False: by fused score alone, as before issue 37): the first three are
    always the three best fused scores; from the fourth on a passage one method ranks near its
    top may come before a higher fused score."""
    n = pool.n
    dense = dict(pool.dense)
    keyword = trusted_keyword(pool)
    missing = [i for i in list(keyword)[:n] if i not in dense]
    dense.update({i: pool.cosines[i] for i in missing if i in pool.cosines})
    fused = fuse(dense, keyword, set(dense) | set(missing), weight, top=1.0)
    order = [i for i, _ in sorted(fused.items(), key=lambda item: -item[1])]
    if not layers:
        return [(i, fused[i]) for i in order[:k]]
    by_dense = [i for i, _ in pool.dense]
    by_keyword = [i for i, s in keyword.items() if s > 0]  # trusted, best first
    inner = set(order[:LAYER_HEAD]) | set(by_dense[:LAYER_DEPTH[0]]) | set(by_keyword[:LAYER_DEPTH[1]])
    order = [i for i in order if i in inner] + [i for i in order if i not in inner]
    floors = [(d, list(dict.fromkeys(by_dense[:m_dense] + by_keyword[:m_keyword])))
              for d, m_dense, m_keyword in LAYER_FLOORS]
    return [(i, fused[i]) for i in place(order, floors, k)]


def trusted_keyword(pool: Pool) -> dict[int, float]:
    """The keyword side of a pool: its BM25 lists merged, each times its trust (the coverage of
    its words; a translation's, as far as dense search agrees), best first."""
    lists = [(dict(ranked), keyword_trust(coverage) if ranked else 0.0) for ranked, coverage in pool.keyword]
    if pool.checked and lists:
        scores, trust = lists[0]
        lists[0] = scores, trust * agreement(scores, dict(pool.dense))
    return merge_keyword(lists)


def place(order: list[int], floors: list[tuple[int, list[int]]], k: int) -> list[int]:
    """The first k of `order` with every floor (depth d, ids) met: those ids all within the top
    d, each as late as it can be placed; the others keep their order."""
    at = {i: j for j, i in enumerate(order)}
    floors = [(d, [i for i in ids if i in at]) for d, ids in floors]
    out: list[int] = []
    taken: set[int] = set()
    rest = iter(order)
    for position in range(1, min(k, len(order)) + 1):
        due = [i for d, ids in floors if position <= d
               for i in ids if i not in taken and sum(j not in taken for j in ids) > d - position]
        pick = min(due, key=at.__getitem__) if due else next(i for i in rest if i not in taken)
        out.append(pick)
        taken.add(pick)
    return out


# Keyword search counts in proportion to how much of the question the index's words cover
# (Snapshot.coverage): fully from COVERED on, not at all up to UNCOVERED. A question in another
# language than the documents shares only numbers and names with them, and BM25 over those
# ranked noise first (English questions over Chinese XQuAD: fused r@1 0.57 against dense 0.69
# before; README table). The bounds sit in the gap between the two cases, every language alike.
# COVERED is translate.FOREIGN, one number: from that share of its words in the index a
# question reads as in the index's language.

UNCOVERED = 0.2


def keyword_trust(coverage: float) -> float:
    return min(1.0, max(0.0, (coverage - UNCOVERED) / (COVERED - UNCOVERED)))


# A translation's words all occur in the index (they are the model's own common words) also
# where it says something else than the question: XQuAD English questions over Hindi paragraphs
# gave BM25 on the translation r@1 0.12, and trusted by coverage it dragged hybrid from 0.82
# (as asked) to 0.23. What the multilingual encoder, reading the question itself, puts among its
# candidates is the check: the share of the translation's AGREE_TOP best passages among them
# (Hindi 0.16 on average, Chinese 0.66; docs/benchmarks.md).
AGREE_TOP = 5


def agreement(keyword: dict[int, float], dense: dict[int, float]) -> float:
    """Share of the BM25 list's AGREE_TOP best (ids best first) among the dense candidates."""
    top = list(keyword)[:AGREE_TOP]
    return sum(1 for i in top if i in dense) / len(top) if top else 0.0


def merge_keyword(lists: list[tuple[dict[int, float], float]]) -> dict[int, float]:
    """(BM25 scores, trust) lists as one, in [0, 1], best first: each score divided by its
    list's best and times its trust; a passage in several keeps its best."""
    merged: dict[int, float] = {}
    for scores, trust in lists:
        best = max(scores.values(), default=0.0) or 1.0
        for i, s in scores.items():
            merged[i] = max(merged.get(i, 0.0), trust * s / best)
    return dict(sorted(merged.items(), key=lambda item: -item[1]))


def fuse(dense: dict[int, float], keyword: dict[int, float], ids, weight: float,
         trust: float = 1.0, top: float | None = None) -> dict[int, float]:
    """Convex combination of the cosine rescaled to [0, 1] over the candidates (min-max) and
    the BM25 score divided by the best one (or by `top`), times `trust` (keyword_trust); a
    score a method did not give counts as 0. Rescaling makes one weight fit every encoder: e5's
    cosines of a question's candidates span about 0.1, MiniLM's about 0.5 (benchmarks/fusion.py)."""
    top = top or max(keyword.values(), default=0.0) or 1.0
    lo, hi = min(dense.values(), default=0.0), max(dense.values(), default=0.0)
    spread = (hi - lo) or 1.0
    kw = (1 - weight) * trust / top
    return {i: weight * ((dense[i] - lo) / spread if i in dense else 0.0) + kw * keyword.get(i, 0.0)
            for i in ids}


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


class QueryTranslator:
    """What search reads for a query, in the index's language: a question in another script
    than the index's, or one whose words the index mostly lacks, is translated (translate.py);
    None where it is searched as asked. `translator` is None where nothing is translated.
    `wait=False` (a search): never wait for the translator, busy with another question;
    `cancel`: the asker left (the translation stops, translate.Translator)."""

    def __init__(self, translator, store: Store):
        self.translator, self.store = translator, store

    def __call__(self, query: str, cancel=None, wait: bool = True) -> str | None:
        translator = self.translator
        if translator is None or is_blank(query) or (cancel is not None and cancel.is_set()):
            return None  # (nothing visible: no model is asked to translate control characters)

        def coverage():
            with self.store.snapshot() as snap:
                return snap.coverage(clean(query))

        if not needs_translation(query, translator.language, coverage):
            return None
        return translator(query, cancel=cancel, wait=wait)
