"""`RAG`: the facade the CLI, the web page, the HTTP server and scripts use. Cheap to
construct; the encoder and decoder load on first use and are reused for every later call. It
builds the answer pipeline from parts (retriever, query translator, decoder factory, encoder,
the models' profiles, settings: rag/answer/pipeline.py), and no stage holds the RAG."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rag.answer.followup import rewrite_follow_up
from rag.answer.pipeline import AnswerPipeline, Question
from rag.answer.retrieve import QueryTranslator, Retriever
from rag.answer.translate import SAMPLE_PASSAGES, Translator, index_language
from rag.core.errors import BadIndex, RagError
from rag.core.records import Answer, Draft, Hit
from rag.core.settings import Settings
from rag.index import uploads
from rag.index.cluster import connect
from rag.index.ingest import Ingestor, IngestReport, absolute, sample_text, under
from rag.index.shards import Shards, check_count, open_index, shard_count
from rag.index.store import (
    DocumentInfo,
    FileProblem,
    IndexInfo,
    Store,
    is_index_dir,
    listed_paths,
    new_manifest,
    read_manifest,
)
from rag.models.catalog import (
    ENGLISH,
    choose_encoder,
    choose_generator,
    choose_translator,
    decoder_profile,
    encoder_profile,
)
from rag.models.decoders import decoder_for
from rag.models.encoder import Encoder, load_encoder
from rag.readers.base import Limits


@dataclass
class Found:
    """What a search found: the hits, and the translation searched instead of the query."""
    hits: list[Hit]
    searched: str | None = None


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
        self._translator = None
        self._retriever: Retriever | None = None
        self._pipeline: AnswerPipeline | None = None
        self._generation = -1  # the index's committed state the parts above were decided on
        self._lock = threading.RLock()
        if is_index_dir(self.root):
            self._adopt_manifest(explicit)

    # --- parts, loaded lazily ----------------------------------------------------------

    def _adopt_manifest(self, explicit: set[str]) -> None:
        """An index keeps the encoder and chunking it was built with; asking for another is an error."""
        manifest = read_manifest(self.root)  # not the database: a damaged one can still be rebuilt
        for key in ("encoder", "chunk_size", "chunk_overlap"):
            if key in manifest and getattr(self.settings, key) != manifest[key]:
                if key in explicit:
                    raise BadIndex(f"index {self.root} was built with {key}={manifest[key]!r}, "
                                      f"not {getattr(self.settings, key)!r}; use another --index or re-ingest")
                self.settings = self.settings.replace(**{key: manifest[key]})

    @property
    def store(self) -> Store | Shards:
        if self._store is None:
            if not is_index_dir(self.root):
                raise BadIndex(f"no index at {self.root}: add documents with `rag ingest PATH --index {self.root}`")
            self._store = open_index(self.root)  # a sharded index is read like one (rag/index/shards.py)
            self._generation = self._store.generation()  # (_fresh: what later commits change)
        return self._store

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            s = self.settings
            name = ENGLISH if s.encoder == "auto" else s.encoder  # "auto" is decided at the first ingest
            self._encoder = load_encoder(name, s.device, s.encode_batch_size, s.encoder_runtime)
        return self._encoder

    @property
    def generator_name(self) -> str:
        """The decoder's name: the setting, or for "auto" the one measured best for this
        index's encoder (rag/models/catalog.py: choose_generator)."""
        s = self.settings
        if s.generator != "auto":
            return s.generator
        return choose_generator(ENGLISH if s.encoder == "auto" else s.encoder)

    @property
    def generator(self):
        """The process-wide decoder for this RAG's settings (shared with every other RAG)."""
        if self._generator is None:
            self._generator = decoder_for(self.generator_name, self.settings)
        return self._generator

    @property
    def translator(self):
        """What turns a question in another language into a search query in the index's
        (rag/answer/translate.py): into English where the encoder reads English only, into the
        language of the passages' one non-Latin script otherwise; None where the setting is
        off, no translating decoder is installed or no such language applies. Decided once
        per state of the index (each ingest decides again)."""
        if self._translator is None:
            s = self.settings
            name = self.translator_name
            language = None
            if name.lower() != "off":
                english_only = not encoder_profile(s.encoder).multilingual
                sample = ""
                if not english_only and is_index_dir(self.root):
                    with self.store.snapshot() as snap:
                        sample = " ".join(snap.sample_texts(SAMPLE_PASSAGES))
                language = index_language(sample, english_only)
            self._translator = Translator(partial(decoder_for, name, s, "auto"), language) if language else False
        return self._translator or None

    @property
    def translator_name(self) -> str:
        s = self.settings
        return choose_translator() if s.translator.lower() == "auto" else s.translator

    def translated_query(self, query: str, wait: bool = True) -> str | None:
        """The query `search` reads for `query` in the index's language, or None where it is
        searched as asked: a question in another script than the index's, or one whose words
        the index mostly lacks, is translated (rag/answer/translate.py). `wait=False`: None
        where the translator is busy with another question."""
        return QueryTranslator(self.translator, self.store if self.translator else None)(query, wait=wait)

    def warm_up(self) -> dict:
        """Load the encoder and the decoder now, side by side (both loaders spend their time
        outside the GIL: reading files, ONNX Runtime and llama.cpp setting up), not at the
        first question; returns the seconds each took."""
        import time
        from concurrent.futures import ThreadPoolExecutor

        def timed(load):
            start = time.perf_counter()
            load()
            return round(time.perf_counter() - start, 2)

        encoder, generator = self.encoder, self.generator  # made here, so no two threads make one
        with ThreadPoolExecutor(2, thread_name_prefix="rag-warm-up") as pool:
            took = {"encoder_s": pool.submit(timed, lambda: encoder.model),
                    "decoder_s": pool.submit(timed, generator.warm_up)}
            return {name: future.result() for name, future in took.items()}

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = Retriever(self.store, self.encoder, self.settings, encoder_profile(self.settings.encoder))
        return self._retriever

    @property
    def pipeline(self) -> AnswerPipeline:
        """The answer pipeline, built from this index's parts (none of its stages holds the
        RAG). Without an index yet it is made again for each question, so an index another
        process creates is seen at the next one."""
        if self._pipeline is not None:
            return self._pipeline
        s, exists = self.settings, is_index_dir(self.root)
        retriever = self.retriever if exists else None
        translate = QueryTranslator(self.translator, self.store) if exists and self.translator else None
        # a question in another language than the passages: the translator's model reads it,
        # unless a decoder was named (rag/answer/pipeline.py: AnswerPipeline.reader_for)
        cross = partial(decoder_for, self.translator_name, s, "auto") if translate and s.generator == "auto" else None
        pipeline = AnswerPipeline(retriever, translate, partial(decoder_for, self.generator_name, s),
                                  self.encoder, encoder_profile(s.encoder),
                                  decoder_profile(self.generator_name, s.backend), s, cross_decoder=cross,
                                  language=self.translator.language if translate else None,
                                  cross_profile=decoder_profile(self.translator_name, s.backend) if cross else None)
        if exists:
            self._pipeline = pipeline
        return pipeline

    def _forget(self) -> None:
        """The documents (and with a first ingest, the encoder) changed: what was decided
        from them is decided again (the translator's language, the pipeline's parts)."""
        self._translator = self._retriever = self._pipeline = None

    def _fresh(self) -> None:
        """Another folder put at the index's path (restored from a copy, swapped in by another
        process's `rag rebuild`) is read from the next call on: the store and what was decided
        from it are made again, and the new folder's encoder and chunking are adopted. Another
        process's commit to the same index has what was decided from its documents made again."""
        store = self._store
        if store is None:
            return
        if not store.replaced():
            # another process committed (rag ingest beside rag serve, the writer of replicas.py):
            # what was decided from the documents (the translator's language) is decided again
            generation = store.generation()
            if generation != self._generation:
                self._generation = generation
                self._forget()
            return
        if self._store is store:
            self._store = None
        self._forget()
        encoder = self.settings.encoder
        if is_index_dir(self.root):
            self._adopt_manifest(set())
        if self.settings.encoder != encoder:
            self._encoder = None

    # --- API -----------------------------------------------------------------------------

    def ingest(self, paths, prune: bool = True, progress: bool = False, wait: float = 0.0,
               on_file=None, engine: str = "local", address: str | None = None,
               shards: int | None = None) -> IngestReport:
        """Add, update and remove documents so the index matches `paths` (files or folders).
        `engine="ray"`: read, split and encode on a Ray cluster (`address`, else a local Ray).
        `shards`: a new index is made of that many shards (rag/index/shards.py); an index keeps
        the number it was made with (None: whatever it has, 1 for a new one)."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        missing = [str(p) for p in paths if not Path(p).expanduser().exists()]
        if missing:
            raise RagError(f"no such file or folder: {', '.join(missing)}")
        if self.root.exists() and not self.root.is_dir():
            raise RagError(f"--index {self.root} is a file, not an index folder; name another path")
        if shards is not None:
            check_count(shards)
            if is_index_dir(self.root) and shard_count(self.root) != shards:
                raise RagError(f"index {self.root} has {shard_count(self.root)} shard(s), not {shards}: an index "
                               "keeps how it was made; leave out --shards or ingest into a new --index")
        if engine == "ray":  # a cluster that cannot be reached fails before a new index is made
            connect(address)
        with self._lock:
            self._fresh()
            if not is_index_dir(self.root):
                if self.settings.encoder == "auto":
                    sample = sample_text(paths, Limits.of(self.settings))
                    self.settings = self.settings.replace(encoder=choose_encoder(sample))
                    self._encoder = None
                    self._forget()
                encoder = self.encoder
                if self.settings.chunk_size > encoder.max_tokens:
                    raise RagError(f"chunk_size {self.settings.chunk_size} exceeds the encoder's "
                                   f"limit of {encoder.max_tokens} word pieces")
                s = self.settings
                # another process may create it at the same time: then it waits, or says so (IndexLocked)
                manifest = new_manifest(s.encoder, encoder.dimension, s.chunk_size, s.chunk_overlap)
                self._store = (Shards.create(self.root, manifest, shards, wait=wait) if (shards or 1) > 1
                               else Store.create(self.root, manifest, wait=wait))
                if self._store.manifest.get("encoder") != s.encoder:  # made by that other process
                    self._adopt_manifest(set())
                    self._encoder = None
            if isinstance(self.store, Shards):
                report = self.store.ingest(self.encoder, self.settings, paths, prune, progress, wait, on_file,
                                           engine, address)
            else:
                report = Ingestor(self.store, self.encoder, self.settings).run(paths, prune, progress, wait,
                                                                              on_file, engine, address)
            self._forget()  # the documents' language may have changed with them
            return report

    def search(self, query: str, k: int | None = None, mode: str | None = None,
               diverse: bool = False) -> list[Hit]:
        """The k best passages for `query` (`diverse`: without near-copies of each other). A
        question in another language than the index's is searched in translation
        (`translated_query`), its own words still counting in hybrid search."""
        return self.find(query, k, mode, diverse).hits

    def find(self, query: str, k: int | None = None, mode: str | None = None, diverse: bool = False) -> Found:
        """`search`, with the translation that was searched (None where the query was searched
        as asked): what `rag search` and the HTTP API show as "searched as"."""
        # a search never waits for the translator, busy with another question: it is searched as asked
        self._fresh()
        translated = self.translated_query(query, wait=False)
        hits = self.retriever.search(translated or query, _positive_k(k, self.settings.k),
                                     mode or self.settings.mode, diverse, asked=query if translated else None)
        return Found(hits, translated)

    def embed(self, texts: list[str], query: bool = False):
        """The index's encoder's unit vectors for `texts` (float32, one row each); `query`:
        encoded as questions are (e5 reads "query: " and "passage: " apart)."""
        import numpy as np

        if query:
            return np.stack([self.encoder.encode_query(t) for t in texts])
        return self.encoder.encode(texts)

    def remove(self, path: str | Path, wait: float = 0.0) -> int:
        """Remove documents at `path` (a file, or everything under a folder); returns how many."""
        if not str(path).strip():  # "" would be the working directory: everything under it
            raise RagError("name the document or folder to remove: the path is empty")
        self._fresh()
        target = str(absolute(path))
        removed = 0
        with self.store.writer(wait=wait, ann_threshold=self.settings.ann_threshold) as w:
            for key in w.documents():
                if under(key, target):
                    w.drop_if_unused(w.delete_document(key))
                    removed += 1
            w.commit()
        if removed:
            self._forget()  # the documents' language may have left with them
        return removed

    def rebuild(self, progress: bool = False) -> IngestReport:
        """Re-ingest every document an index lists into a fresh index, then swap it in; the old
        one is kept beside it as `<name>.damaged-<time>` until you delete it."""
        import shutil
        import time

        paths = listed_paths(self.root)
        try:
            shards = shard_count(self.root) if is_index_dir(self.root) else 1  # the fresh index keeps them
        except BadIndex:  # its manifest unreadable: one shard
            shards = 1
        fresh = self.root.with_name(self.root.name + ".rebuild")
        shutil.rmtree(fresh, ignore_errors=True)
        existing = [p for p in paths if Path(p).exists()]
        report = RAG(fresh, settings=self.settings).ingest(existing, prune=False, progress=progress, shards=shards)
        uploads = self.root / "uploads"
        if uploads.is_dir():
            shutil.move(str(uploads), str(fresh / "uploads"))
        self.root.rename(self.root.with_name(f"{self.root.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"))
        fresh.rename(self.root)
        self._store = None
        self._forget()
        report.failed += [FileProblem(p, "no longer exists") for p in paths if p not in existing]
        return report

    def upload(self, files: list[tuple[str, bytes]], wait: float = 30.0, on_file=None) -> IngestReport:
        """Keep files handed over by name and content (the web page's uploads) in the index's
        uploads/ folder and ingest them; refused ones (too large, unsupported) are reported
        as failed like any unreadable file. The report names each file as it was handed over.
        An upload that fails (a full disk: DiskFull) leaves none of its new files behind."""
        saved, refused, made, named = [], [], [], {}
        self._fresh()
        try:
            for name, data in files:
                reason = uploads.refusal(name, len(data), self.settings.max_file_mb)
                if reason:
                    refused.append(FileProblem(name, reason))
                else:
                    saved.append(uploads.save(self.root / "uploads", name, data, made))
                    named.setdefault(str(saved[-1]), name)
            report = self.ingest(saved, prune=False, wait=wait, on_file=on_file) if saved else IngestReport()
        except BaseException:
            self._drop_unlisted(made)
            raise
        report.failed = refused + report.failed
        return uploads.as_named(report, named)

    def _drop_unlisted(self, paths: list[Path]) -> None:
        """Delete the files an upload saved that the index does not list (its ingest failed)."""
        try:
            listed = {d.path for d in self.store.documents()} if is_index_dir(self.root) else set()
        except RagError:
            listed = set()
        for path in paths:
            if str(path) not in listed:
                path.unlink(missing_ok=True)

    def info(self) -> IndexInfo:
        self._fresh()
        return self.store.info()

    def documents(self) -> list[DocumentInfo]:
        self._fresh()
        return self.store.documents()

    # --- answering ---------------------------------------------------------------------

    def ask(self, question: str, k: int | None = None, history: list | None = None,
            mode: str | None = None, max_tokens: int | None = None) -> Answer:
        """Answer `question` from the index, with numbered sources and timings."""
        answer = None
        for answer in self.stream(question, k=k, history=history, mode=mode, max_tokens=max_tokens):
            pass
        return answer

    def stream(self, question: str, k: int | None = None, history: list | None = None,
               mode: str | None = None, max_tokens: int | None = None,
               cancel: threading.Event | None = None) -> Iterator[Draft | Answer]:
        """Yield `Draft` pieces of the decoder's span as it writes, then the complete `Answer`
        (the pipeline is in rag/answer/pipeline.py). The decoder queues concurrent questions on its
        own lock (one per loaded model). `cancel`: set when the asker has left (`rag serve`):
        the translation stops, and nothing after it starts; the stream then ends without an Answer."""
        s = self.settings
        self._fresh()
        text, query = rewrite_follow_up(question, history)
        q = Question(question, text, query, _positive_k(k, s.k), mode or s.mode, max_tokens or s.max_tokens,
                     cancel=cancel)
        yield from self.pipeline.stream(q)


def _positive_k(k: int | None, default: int) -> int:
    k = default if k is None else k
    if not isinstance(k, int) or k < 1:
        raise RagError(f"k must be a whole number of passages, at least 1 (got {k!r})")
    return k
