"""Retrieval: dense (FAISS), keyword (SQLite FTS5 BM25) and hybrid fusion of the two -> Hit[]."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .encoder import Encoder
from .store import Store

MODES = ("dense", "keyword", "hybrid")


@dataclass
class Hit:
    rank: int
    score: float
    source: str
    page: int | None
    heading: str
    text: str
    chunk_id: int
    start: int = 0
    end: int = 0
    dense: float | None = None  # cosine similarity to the question, when known

    def to_dict(self) -> dict:
        return asdict(self)


class Retriever:
    # Fusion weight of the dense score; tuned on SQuAD v1.1 (benchmarks/retrieval.py).
    alpha = 0.5
    candidates = 50

    def __init__(self, store: Store, encoder: Encoder):
        self.store, self.encoder = store, encoder

    def search(self, query: str, k: int = 5, mode: str = "hybrid", diverse: bool = False) -> list[Hit]:
        """The k best passages. `diverse`: skip near-copies (word Jaccard >= 0.8) of a passage
        already chosen, so k passages say k different things (MMR's aim, without its tuning)."""
        if diverse:
            hits = []
            for hit in self.search(query, 3 * k, mode):
                words = set(hit.text.lower().split())
                if all(_jaccard(words, set(h.text.lower().split())) < 0.8 for h in hits):
                    hit.rank = len(hits) + 1
                    hits.append(hit)
                if len(hits) == k:
                    break
            return hits
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not query.strip():
            return []
        vector = self.encoder.encode_query(query) if mode != "keyword" else None
        with self.store.snapshot() as conn:
            if mode == "dense":
                ranked = self.store._dense(conn, vector, k)
                dense = dict(ranked)
            elif mode == "keyword":
                ranked = self.store._keyword(conn, query, k)
                dense = {}
            else:
                ranked, dense = self._hybrid(conn, query, vector, k)
            rows = self.store.chunks([i for i, _ in ranked], conn)
        hits = []
        for i, score in ranked:
            row = rows.get(i)
            if row is not None:
                hits.append(Hit(len(hits) + 1, round(score, 4), row.source, row.page, row.heading,
                                row.text, i, row.start, row.end, dense.get(i)))
        return hits

    def _hybrid(self, conn, query: str, vector: np.ndarray, k: int):
        """Convex combination of the dense cosine and the max-normalised BM25 score over the
        union of both top-n lists, each candidate scored by both methods."""
        n = max(self.candidates, k)
        dense = dict(self.store._dense(conn, vector, n))
        # one keyword query, deeper than the dense list: a dense candidate outside its top
        # 4n has a BM25 score near zero anyway (scoring those rows exactly cost 20 ms at 100k)
        keyword = dict(self.store._keyword(conn, query, 4 * n))
        missing = [i for i in list(keyword)[:n] if i not in dense]
        dense.update(self.store._cosines(conn, vector, missing))
        top = max(keyword.values(), default=0.0) or 1.0
        fused = {i: self.alpha * dense.get(i, 0.0) + (1 - self.alpha) * keyword.get(i, 0.0) / top
                 for i in set(dense) | set(missing)}
        ranked = sorted(fused.items(), key=lambda item: -item[1])[:k]
        return ranked, dense


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))
