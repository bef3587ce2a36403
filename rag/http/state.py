"""What one `rag serve` process holds: a `RAG` per index it serves, the keys, the settings
(its limits among them), the line in front of the decoder and the thread pools. Searches get
their own pool so they never wait behind generation; writes get a pool of one, so two uploads
to an index do not race for its lock."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from pathlib import Path

from rag.core.errors import RagError
from rag.core.paths import index_name
from rag.core.settings import Settings
from rag.http.gate import Gate
from rag.http.keys import Keys
from rag.index.store import is_index_dir
from rag.qa import RAG

log = logging.getLogger(__name__)


def default_indexes() -> list[str]:
    """Without --index: every index under indexes/, else `default` (made by the first upload)."""
    root = Path("indexes")
    found = sorted(p.name for p in root.iterdir() if is_index_dir(p)) if root.is_dir() else []
    return found or ["default"]


class State:
    def __init__(self, indexes: list[str], keys: Keys | None, settings: Settings):
        self.keys, self.settings = keys, settings
        self.indexes: dict[str, RAG] = {}
        for spec in indexes:
            name = index_name(spec)
            if name in self.indexes:
                raise RagError(f"two indexes are both named {name!r}; serve one of them, or rename a folder")
            self.indexes[name] = RAG(spec, settings=settings)
        self.gate = Gate(1, settings.serve_queue)
        self.search_pool = concurrent.futures.ThreadPoolExecutor(settings.serve_search_threads, "rag-search")
        self.answer_pool = concurrent.futures.ThreadPoolExecutor(2, "rag-answer")
        self.write_pool = concurrent.futures.ThreadPoolExecutor(1, "rag-write")
        self.ready = threading.Event()
        self.warm: dict = {}
        self.warm_error: str | None = None

    def warm_up(self) -> None:
        """Load every index's encoder and decoder (shared where two use the same one) before the
        first question, and open each index (a damaged one fails /readyz here, and the first
        searches do not each open it at once)."""
        try:
            start = time.perf_counter()
            for rag in self.indexes.values():
                if is_index_dir(rag.root):
                    rag.info()  # opens the index: once here, not by the first searches at once
            took = [rag.warm_up() for rag in self.indexes.values()]
            self.warm = {**took[0], "total_s": round(time.perf_counter() - start, 2)}
            self.ready.set()
            log.info("models loaded in %.1f s", self.warm["total_s"])
        except Exception as e:  # noqa: BLE001 - /readyz reports it
            self.warm_error = f"{type(e).__name__}: {e}"
            log.error("warm-up failed: %s", self.warm_error)

    def close(self) -> None:
        for pool in (self.write_pool, self.answer_pool, self.search_pool):
            pool.shutdown(wait=True)  # an upload's ingest reaches its commit
