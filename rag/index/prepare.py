"""One file's bytes -> its chunks: read (with the index's limits), split, and the text each
chunk is encoded from. The one unit both ingest engines use: the local one (`ingest.py`) and
each Ray worker (`cluster.py`), so a file becomes the same chunks wherever it is read."""

from __future__ import annotations

import logging
from pathlib import Path

from rag.core.errors import UnreadableFile
from rag.core.settings import Settings
from rag.index.chunking import Splitter
from rag.index.store import FileProblem
from rag.language.text import looks_english
from rag.models.catalog import encoder_profile
from rag.readers.base import Limits
from rag.readers.documents import read

log = logging.getLogger(__name__)
# How much of a document tells whether it reads as English (an English-only encoder's index
# says which files it cannot read densely).
LANGUAGE_SAMPLE_CHARS = 20_000


class Preparer:
    """Reads and splits files for one index's encoder and settings, and keeps what it passed
    over: pages a reader could not read, and files not in English for an English-only encoder."""

    def __init__(self, encoder, settings: Settings):
        self.encoder, self.settings = encoder, settings
        self.splitter = Splitter(encoder.tokenizer, settings.chunk_size, settings.chunk_overlap,
                                 settings.max_chunk_chars)
        self.limits = Limits.of(settings)
        self.english_only = not encoder_profile(encoder.name).multilingual
        self.skipped_pages: list[FileProblem] = []  # pages a reader could not read (a scan without OCR)
        self.foreign: list[str] = []  # files not in English, read into an English-only encoder's index

    def split(self, path: str | Path, data: bytes) -> list:
        """One file's bytes -> its chunks (UnreadableFile when it has no text, or more than
        `max_chunks_per_file`: bounded work per file)."""
        doc = read(path, data, self.limits)
        self.skipped_pages += [FileProblem(f"{path}, page {page}", why) for page, why in doc.skipped]
        if self.english_only and not looks_english(doc.text[:LANGUAGE_SAMPLE_CHARS]):
            self.foreign.append(str(path))
        chunks = self.splitter.split(doc, self.settings.max_chunks_per_file)
        if not chunks:
            raise UnreadableFile("no text found")
        return chunks


def reason(e: Exception) -> str:
    """The one line a person reads for a file that failed."""
    if isinstance(e, UnreadableFile):
        return str(e)
    log.debug("reading failed", exc_info=e)
    return f"{type(e).__name__}: {e}"


def embedded(chunk) -> str:
    """The text a chunk is encoded from: its heading path, then its text. A passage under
    "Ingesting on a Ray cluster" is about Ray even when its own words never say so (questions
    about rag's docs found the right passage 1 time in 3 more often with it; the benchmark
    corpora have no headings and are unchanged)."""
    return f"{chunk.heading}\n{chunk.text}" if chunk.heading else chunk.text
