"""The two kinds of decoder the answer pipeline talks to.

- `Decoder`: anything that turns chat messages into a stream of text pieces within a
  context window (`count` says how much of it a text takes), and `score`s candidate answers
  where the backend can (None where it cannot). A remote chat model is only this.
- `LocalModel`: a model in this process (llama.cpp, transformers) that can also *copy*: with
  `copy_from`, every token it writes continues a verbatim span of those texts
  (`constraint.CopyConstraint`). It owns the lock that serialises generation on it, so any
  number of threads can ask at once: questions queue on the model, tokens never interleave."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from rag.core.paths import cpu_count
from rag.models.decoders.constraint import CopyConstraint


class Decoder:
    backend = ""
    copies = False  # can constrain its output to copies of the sources
    name = ""

    def warm_up(self) -> "Decoder":
        """Load what the first question would otherwise wait for (the web page and the HTTP
        server call this at start)."""
        return self

    @property
    def n_ctx(self) -> int:
        raise NotImplementedError

    def count(self, text: str) -> int:
        """Tokens `text` takes in the context window (an upper estimate where it cannot tokenize)."""
        raise NotImplementedError

    def render(self, messages: list[dict], prefix: str = "") -> str:
        """Chat messages as prompt text followed by `prefix` (the start of the reply)."""
        return "\n\n".join(m["content"] for m in messages) + "\n" + prefix

    def stream(self, messages: list[dict], prefix: str = "", max_tokens: int = 64,
               stop: list[str] | None = None, temperature: float = 0.0, **copy) -> Iterator[str]:
        raise NotImplementedError

    def score(self, messages: list[dict], prefix: str, candidates: list[str]) -> list[list[float]] | None:
        """Each candidate's token log-probabilities as the reply to `messages` after `prefix`
        (the confidence's decoder signals), or None where this backend cannot score: the
        answer then gets the confidence model fitted without them."""
        return None


class LocalModel(Decoder):
    """A model whose weights are in this process; loads on first use or `warm_up()`, once."""

    copies = True

    def __init__(self, path: str, device: str, context_window: int):
        self.name = self.path = path
        self.device = device
        self.context_window = context_window
        self.threads = cpu_count()
        self.lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._model = None
        self._first_cache: dict[str, tuple[int, ...]] = {}

    def warm_up(self) -> "LocalModel":
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load()
        return self

    @property
    def model(self):
        return self.warm_up()._model

    def _load(self):
        raise NotImplementedError

    # facts about the model, from its files
    has_chat_template: bool
    vocab_size: int

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        raise NotImplementedError

    def count(self, text: str) -> int:
        return len(self.tokenize(text, special=True))

    def render(self, messages: list[dict], prefix: str = "") -> str:
        """The model's own chat template where it has one, plain text otherwise."""
        if self.has_chat_template:
            return self._template(messages) + prefix
        return super().render(messages, prefix)

    def _template(self, messages: list[dict]) -> str:
        raise NotImplementedError

    def stream(self, messages: list[dict], prefix: str = "", max_tokens: int = 64,
               stop: list[str] | None = None, temperature: float = 0.0,
               copy_from: list[str] | None = None, avoid_first: str = "") -> Iterator[str]:
        """Yield the reply's text pieces. `copy_from`: restrict the output to verbatim spans of
        these texts; `avoid_first`: words the copy may not start with (the question's own words)."""
        prompt = self.render(messages, prefix)
        constraint = None
        if copy_from:
            sources = [self.tokenize(t) for t in copy_from] + [self.tokenize(" " + t) for t in copy_from]
            not_first = {t for w in set(avoid_first.split()) for t in self._first_tokens(w)}
            constraint = CopyConstraint(sources, self._stop_ids(), self.vocab_size, not_first=not_first)
        with self.lock:  # one generation at a time on this model, whoever asks
            yield from self._stream(prompt, max_tokens, stop or [], constraint, temperature)

    def _stream(self, prompt, max_tokens, stop, constraint, temperature) -> Iterator[str]:
        raise NotImplementedError

    def _stop_ids(self) -> set[int]:
        raise NotImplementedError

    def _first_tokens(self, word: str) -> tuple[int, ...]:
        """The token a word starts with, alone and after a space (cached: the same ~150 function
        words are looked up for every question)."""
        if word not in self._first_cache:
            self._first_cache[word] = tuple(self.tokenize(word)[:1] + self.tokenize(" " + word)[:1])
        return self._first_cache[word]
