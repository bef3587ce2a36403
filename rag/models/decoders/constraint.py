"""Span-constrained decoding: every generated token must continue a verbatim copy of one of
the source texts, so a tiny model chooses *where* to copy from and when to stop, and cannot
invent words. Backend-free: it sees token ids and a row of logits."""

from __future__ import annotations

import numpy as np


class CopyConstraint:
    """Allows only tokens that extend a verbatim copy of one of the source token sequences.
    `stop_ids` (end of text, newline) are always allowed once something was copied;
    `not_first` tokens may not start the copy (the question's own words)."""

    def __init__(self, sources: list[list[int]], stop_ids: set[int], vocab_size: int, min_tokens: int = 1,
                 not_first: set[int] | None = None):
        self.sources = [np.asarray(s, dtype=np.int64) for s in sources if len(s)]
        self.stop_ids = [i for i in stop_ids if 0 <= i < vocab_size]
        self.vocab_size = vocab_size
        self.min_tokens = min_tokens
        # positions (source, index of the next token to copy) consistent with what was generated
        self.positions = [(s, i) for s, seq in enumerate(self.sources) for i in range(len(seq))]
        self.generated = 0
        self.not_first = not_first or set()

    def allowed(self) -> np.ndarray:
        ids = {int(self.sources[s][i]) for s, i in self.positions if i < len(self.sources[s])}
        if self.generated == 0 and ids - self.not_first:
            ids -= self.not_first
        if self.generated >= self.min_tokens or not ids:
            ids.update(self.stop_ids)
        return np.fromiter(ids, dtype=np.int64)

    def advance(self, token: int) -> None:
        self.generated += 1
        self.positions = [(s, i + 1) for s, i in self.positions
                          if i < len(self.sources[s]) and self.sources[s][i] == token]

    def mask(self, scores: np.ndarray) -> np.ndarray:
        allowed = self.allowed()
        masked = np.full_like(scores, -np.inf)
        allowed = allowed[allowed < scores.shape[-1]]
        masked[..., allowed] = scores[..., allowed]
        return masked
