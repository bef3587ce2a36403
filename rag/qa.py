"""`RAG`: the one object the CLI, the UI and scripts use. Cheap to construct; the encoder
and decoder load on first use and are reused for every later call."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from .answer import EMPTY_INDEX, NOT_FOUND, Answer, Source, Timer, stream_answer
from .encoder import Encoder
from .errors import IndexError_, RagError
from .ingest import IngestReport, Ingestor
from .retrieve import Hit, Retriever
from .settings import Settings
from .store import STOPWORDS, Store, is_index_dir


def resolve_index(name_or_path: str | Path) -> Path:
    """A bare name means `indexes/NAME`; anything with a slash (or existing) is a path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if "/" in text or path.exists() or text.startswith("."):
        return path
    return Path("indexes") / text


class RAG:
    def __init__(self, index: str | Path = "indexes/default", settings: Settings | None = None, **overrides):
        self.root = resolve_index(index)
        explicit = {k for k, v in overrides.items() if v is not None}
        self.settings = (settings or Settings.load()).replace(**overrides)
        self._store: Store | None = None
        self._encoder: Encoder | None = None
        self._generator = None
        self._lock = threading.RLock()
        if is_index_dir(self.root):
            self._adopt_manifest(explicit)

    # --- parts, loaded lazily ----------------------------------------------------------

    def _adopt_manifest(self, explicit: set[str]) -> None:
        """An index keeps the encoder and chunking it was built with; asking for another is an error."""
        manifest = self.store.manifest
        for key in ("encoder", "chunk_size", "chunk_overlap"):
            if key in manifest and getattr(self.settings, key) != manifest[key]:
                if key in explicit:
                    raise IndexError_(f"index {self.root} was built with {key}={manifest[key]!r}, "
                                      f"not {getattr(self.settings, key)!r}; use another --index or re-ingest")
                self.settings = self.settings.replace(**{key: manifest[key]})

    @property
    def store(self) -> Store:
        if self._store is None:
            if not is_index_dir(self.root):
                raise IndexError_(f"no index at {self.root}: add documents with `rag ingest PATH --index {self.root}`")
            self._store = Store(self.root)
        return self._store

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            s = self.settings
            self._encoder = Encoder(s.encoder, s.device, s.encode_batch_size, s.encoder_runtime)
        return self._encoder

    @property
    def generator(self):
        if self._generator is None:
            from .generate import Generator

            s = self.settings
            self._generator = Generator(s.generator, s.backend, s.device, s.context_window)
        return self._generator

    @property
    def retriever(self) -> Retriever:
        return Retriever(self.store, self.encoder)

    # --- API -----------------------------------------------------------------------------

    def ingest(self, paths, prune: bool = True, progress: bool = False, wait: float = 0.0,
               on_file=None) -> IngestReport:
        """Add, update and remove documents so the index matches `paths` (files or folders)."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        missing = [str(p) for p in paths if not Path(p).expanduser().exists()]
        if missing:
            raise RagError(f"no such file or folder: {', '.join(missing)}")
        with self._lock:
            if not is_index_dir(self.root):
                encoder = self.encoder
                if self.settings.chunk_size > encoder.max_tokens:
                    raise RagError(f"chunk_size {self.settings.chunk_size} exceeds the encoder's "
                                   f"limit of {encoder.max_tokens} word pieces")
                self._store = Store.create(self.root, {
                    "encoder": self.settings.encoder, "dimension": encoder.dimension, "normalized": True,
                    "metric": "inner_product", "chunk_size": self.settings.chunk_size,
                    "chunk_overlap": self.settings.chunk_overlap})
            return Ingestor(self.store, self.encoder, self.settings).run(paths, prune, progress, wait, on_file)

    def search(self, query: str, k: int | None = None, mode: str | None = None,
               diverse: bool = False) -> list[Hit]:
        """The k best passages for `query` (`diverse`: without near-copies of each other)."""
        return self.retriever.search(query, k or self.settings.k, mode or self.settings.mode, diverse)

    def remove(self, path: str | Path, wait: float = 0.0) -> int:
        """Remove documents at `path` (a file, or everything under a folder); returns how many."""
        target = str(Path(path).expanduser().resolve())
        removed = 0
        with self.store.writer(wait=wait, ann_threshold=self.settings.ann_threshold) as w:
            for key in w.documents():
                if key == target or key.startswith(target.rstrip("/") + "/"):
                    w.drop_if_unused(w.delete_document(key))
                    removed += 1
            w.commit()
        return removed

    def info(self) -> dict:
        return self.store.stats()

    def documents(self) -> list[dict]:
        return self.store.documents()

    # --- answering ---------------------------------------------------------------------

    def _abstain(self) -> bool:
        from .models import ABSTAINS_WELL

        if self.settings.abstain == "auto":
            return self.settings.generator.lower() in ABSTAINS_WELL
        return self.settings.abstain.lower() in ("on", "1", "true", "yes")

    def ask(self, question: str, k: int | None = None, history: list | None = None,
            mode: str | None = None, max_tokens: int | None = None) -> Answer:
        """Answer `question` from the index, with numbered sources and timings."""
        answer = None
        for answer in self.stream(question, k=k, history=history, mode=mode, max_tokens=max_tokens):
            pass
        return answer

    def stream(self, question: str, k: int | None = None, history: list | None = None,
               mode: str | None = None, max_tokens: int | None = None):
        """Yield the answer text piece by piece, then the complete `Answer`."""
        timer = Timer()
        k = k or self.settings.k
        asked, query = rewrite_follow_up(question, history)
        if not is_index_dir(self.root) or self.store.is_empty():
            timer.mark("retrieve_ms")
            yield EMPTY_INDEX
            yield Answer(question, EMPTY_INDEX, [], found=False, timings=_final(timer))
            return
        hits = self.search(query, k=k, mode=mode, diverse=self.settings.diverse)
        timer.mark("retrieve_ms")
        top = hits[0].dense if hits else None
        if not hits or (top is not None and top < self.settings.min_score):
            sources = [Source(i, h.source, h.page, h.heading, h.score, h.text, chunk_id=h.chunk_id)
                       for i, h in enumerate(hits, 1)]
            yield NOT_FOUND
            yield Answer(question, NOT_FOUND, sources, found=False, timings=_final(timer))
            return
        with self._lock:  # one decoder, one question at a time
            yield from stream_answer(asked, hits, self.generator,
                                     max_tokens or self.settings.max_tokens, self.settings.copy, timer,
                                     prompt_k=self.settings.answer_k, asked=question,
                                     abstain=self._abstain())


PRONOUNS = {"it": "", "its": "'s", "they": "", "them": "", "their": "'s", "he": "", "him": "",
            "his": "'s", "she": "", "her": "'s", "this": "", "that": ""}


def rewrite_follow_up(question: str, history: list | None) -> tuple[str, str]:
    """(question for the decoder, query for retrieval). A follow-up's first pronoun is replaced
    by the topic of the previous question (its run of capitalised words and the noun after
    them): "and when did it close?" after "When did the Louvre museum open?" becomes "and when
    did the Louvre museum close?". Without such a pronoun, retrieval searches both questions."""
    previous = [_content(t) for t in history or [] if _role(t) == "user"]
    if not previous:
        return question, question
    words = re.findall(r"[\w'-]+", previous[-1])
    topic = []
    for i, w in enumerate(words):
        if i > 0 and w[:1].isupper():
            topic.append(w)
        elif topic:
            if i < len(words) - 1 and w.lower() not in STOPWORDS:
                topic.append(w)
            break
    if topic:
        def swap(m):
            word = m.group(0)
            return "the " * (words[words.index(topic[0]) - 1].lower() == "the") + " ".join(topic) + PRONOUNS[word.lower()]

        rewritten, n = re.subn(r"\b(" + "|".join(PRONOUNS) + r")\b", swap, question, count=1, flags=re.I)
        if n:
            return rewritten, rewritten
    return question, f"{previous[-1]} {question}"


def _role(turn) -> str:
    return turn.get("role", "") if isinstance(turn, dict) else "user"


def _content(turn) -> str:
    return turn.get("content", "") if isinstance(turn, dict) else str(turn)


def _final(timer: Timer) -> dict:
    timer.mark("total_ms")
    return {"retrieve_ms": timer.marks.get("retrieve_ms"), "first_token_ms": None,
            "total_ms": timer.marks["total_ms"], "tokens": 0, "tokens_per_s": None}
