"""`RAG`: the one object the CLI, the UI and scripts use. Cheap to construct; the encoder
and decoder load on first use and are reused for every later call."""

from __future__ import annotations

import threading
from pathlib import Path

from .encoder import Encoder
from .errors import IndexError_, RagError
from .ingest import IngestReport, Ingestor
from .retrieve import Hit, Retriever
from .settings import Settings
from .store import Store, is_index_dir


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
            self._encoder = Encoder(s.encoder, s.device, s.encode_batch_size)
        return self._encoder

    @property
    def retriever(self) -> Retriever:
        return Retriever(self.store, self.encoder)

    # --- API -----------------------------------------------------------------------------

    def ingest(self, paths, prune: bool = True, progress: bool = False, wait: float = 0.0) -> IngestReport:
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
            return Ingestor(self.store, self.encoder, self.settings).run(paths, prune, progress, wait)

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list[Hit]:
        """The k best passages for `query`."""
        return self.retriever.search(query, k or self.settings.k, mode or self.settings.mode)

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
