"""Fakes of the model parts, next to the real ones (as Haystack ships a mock embedder and a
mock chat generator): the same interfaces, no weights, deterministic, so the answer
pipeline's stages, ingest and the doors are tested in milliseconds. The real-model tests stay
above them, end to end. Select them by name where a name is all there is (a subprocess, a
server): `encoder = "fake"` and `generator = "fake"` (Settings, RAG_ENCODER / RAG_GENERATOR).

- `FakeEncoder`: a text's vector is its words hashed into `dimension` buckets, normalised, so
  the cosine of two texts grows with the words they share (a question finds the passage that
  holds its words, as a real encoder would on easy questions).
- `FakeDecoder`: a scripted reader. Each reply is taken from `replies` (a list, or a function of
  the messages), else it copies: the first sentence of the first passage it was shown (the
  span a tiny local model copies). A reply that is an Exception is raised mid-stream (a decoder
  that fails); `scores` scripts what `score` returns (the Judge's signals)."""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections.abc import Callable, Iterator

import numpy as np

from rag.models.decoders.base import Decoder

FAKE = "fake"
_WORD = re.compile(r"\w+")


class FakeTokenizer:
    """Words and punctuation marks as tokens, in the call shape of a transformers tokenizer."""

    def __call__(self, texts, add_special_tokens: bool = True, **_) -> dict:
        one = isinstance(texts, str)
        ids = [[_bucket(t, 30_000) for t in re.findall(r"\w+|[^\w\s]", text)] for text in ([texts] if one else texts)]
        return {"input_ids": ids[0] if one else ids}


@functools.lru_cache(maxsize=100_000)
def _bucket(word: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2b(word.lower().encode(), digest_size=8).digest(), "little") % n


class FakeEncoder:
    """Deterministic bag-of-words vectors with the real `Encoder`'s interface."""

    def __init__(self, name: str = FAKE, dimension: int = 256, max_tokens: int = 512):
        self.name, self.dimension, self.max_tokens = name, dimension, max_tokens
        self.tokenizer = FakeTokenizer()
        self.model = self  # loaded already (warm_up touches it)
        self.calls = 0  # how many encode calls were made (tests of caching and batching)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in zip(out, texts):
            for word in _WORD.findall(text):
                row[_bucket(word, self.dimension)] += 1.0
            norm = float(np.linalg.norm(row))
            row[:] = row / norm if norm else row
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def similarities(self, query: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return self.encode(texts) @ self.encode_query(query)


class FakeDecoder(Decoder):
    """A scripted decoder with the `Decoder` interface (and `score`). `copies`: behave as a
    local model (the pipeline copies, composes and judges) or as a chat model (writes freely)."""

    backend = FAKE

    def __init__(self, replies: list | Callable[[list[dict]], str] | None = None, copies: bool = True,
                 scores: list[list[float]] | None = None, n_ctx: int = 2048, name: str = FAKE):
        self.name, self.copies, self._n_ctx = name, copies, n_ctx
        self.replies = replies
        self.scores = scores
        self.prompts: list[list[dict]] = []  # every prompt it was given, in order
        self.lock = threading.Lock()

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def count(self, text: str) -> int:
        return len(re.findall(r"\w+|[^\w\s]", text))

    def stream(self, messages: list[dict], prefix: str = "", max_tokens: int = 64,
               stop: list[str] | None = None, temperature: float = 0.0, **copy) -> Iterator[str]:
        self.prompts.append(messages)
        reply = self._reply(messages, copy.get("copy_from") or [])
        if isinstance(reply, BaseException):
            yield "partial"
            raise reply
        for stop_at in stop or []:
            if stop_at and stop_at in reply:
                reply = reply[:reply.index(stop_at)]
        words = reply.split(" ")
        for i, word in enumerate(words[:max_tokens]):
            yield word if i == 0 else " " + word

    def score(self, messages: list[dict], prefix: str, candidates: list[str]) -> list[list[float]] | None:
        if self.scores is None:
            return None
        return [list(s) for s in self.scores[:len(candidates)]] + [[-5.0]] * (len(candidates) - len(self.scores))

    def _reply(self, messages: list[dict], sources: list[str]):
        if callable(self.replies):
            return self.replies(messages)
        if self.replies:
            return self.replies.pop(0)
        first = next((s for s in sources if s.strip()), "")
        return re.split(r"(?<=[.!?。！？])\s*", first.strip(), maxsplit=1)[0] if first else "unknown"
