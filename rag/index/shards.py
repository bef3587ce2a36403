"""An index split into shards: a folder whose manifest.json names N shard folders (`shard-0`
... `shard-N-1`), each an index of the plain format (store.py: a Store, crash-safe on its own),
plus the encoder and chunking every shard shares. A document lives in the shard its absolute
path hashes to (`route`: SHA-256, stable across processes and machines).

`Shards` offers what retrieval and the RAG facade use of a Store: `snapshot()` fans each read
out to the shards on a thread pool and merges. Chunk ids are global: a shard's id times N plus
the shard's number. Dense search takes the best cosines of the union (exact: each shard's own
top k holds every one of the global top k). Keyword search is BM25 with corpus-wide statistics:
each shard proposes its own BM25 best (deeper than asked), and every candidate is scored again
with the row count, average length and phrase document counts of all shards together, by FTS5's
own formula (`bm25`), so the merged ranking is the unsharded index's up to ties.

Each shard commits on its own: a writer killed between two shards' commits leaves each shard
at one of its committed states (the next ingest finishes the others)."""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from rag.core.errors import BadIndex, RagError
from rag.core.settings import Settings
from rag.index.ingest import Ingestor, IngestReport
from rag.index.store import (
    FORMAT_VERSION,
    LOCK_NAME,
    MANIFEST_NAME,
    SCHEMA,
    SHARD_PREFIX,
    ChunkRow,
    DocumentInfo,
    IndexInfo,
    Store,
    _identity,
    _lock,
    _write_json,
    is_index_dir,
    is_store_dir,
    read_manifest,
    writes_reported,
)
from rag.language import segment

MAX_SHARDS = 256
# Each shard proposes this many keyword candidates for k asked (its own BM25 ranks by its own
# statistics, which differ from the whole index's): SHARD_DEPTH x k + SHARD_SLACK. 2k + 10 missed
# a passage of the unsharded top 8 in about 1 of 3 random routings of tests/test_shards.py.
SHARD_DEPTH = 4
SHARD_SLACK = 40
# FTS5's bm25() constants (fts5_aux.c) and the keyword index's column weights (Snapshot.keyword)
BM25_K1, BM25_B = 1.2, 0.75
COLUMN_WEIGHTS = {"text": 1.0, "heading": 0.5}
WEIGHTS_SQL = ", ".join(str(w) for w in COLUMN_WEIGHTS.values())
LOOKUPS_FROM = 50  # a phrase in more rows than this many times the candidates: looked up per candidate
TOKENIZE = re.search(r"tokenize=('(?:[^']|'')*')", SCHEMA).group(1)  # the keyword index's tokenizer, as made


def route(path: str, n: int) -> int:
    """The shard (0..n-1) a document's absolute path belongs to: the same in every process."""
    digest = hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n


def is_sharded(root: Path) -> bool:
    return is_index_dir(Path(root)) and not is_store_dir(Path(root))


def shard_count(root: Path) -> int:
    """How many shards the index at `root` has (1: a plain index)."""
    return len(read_manifest(Path(root)).get("shards") or ()) if is_sharded(root) else 1


def open_index(root: Path) -> Store | Shards:
    """The index at `root`, sharded or not."""
    return Shards(root) if is_sharded(root) else Store(root)


def check_count(n) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SHARDS:
        raise RagError(f"--shards must be a whole number from 1 to {MAX_SHARDS}, not {n!r}")
    return n


class Shards:
    """A sharded index, read like a Store (see the module's doc)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        names = self.manifest.get("shards")
        if not isinstance(names, list) or not names or not all(
                isinstance(n, str) and n == Path(n).name and n.startswith(SHARD_PREFIX) for n in names):
            raise BadIndex(f"{self.root}/{MANIFEST_NAME} names no shards; re-ingest into a new index")
        self.stores = [Store(self.root / n) for n in names]
        self.n = len(self.stores)
        self.read_only = any(s.read_only for s in self.stores)
        self.segmenter = self.stores[0].segmenter
        self.identity = _identity(self.root)
        self._pool = ThreadPoolExecutor(min(self.n, 8), thread_name_prefix="rag-shard")

    @classmethod
    def create(cls, root: str | Path, manifest: dict, n: int, wait: float = 0.0) -> Shards:
        """A new, empty index of n shards (the top manifest written last: until it is there,
        there is no index at `root`, and the next try makes it again)."""
        root = Path(root)
        check_count(n)
        with writes_reported(root, creating=True):
            root.mkdir(parents=True, exist_ok=True)
            lock = _lock(root / LOCK_NAME, wait)
        try:
            if not is_index_dir(root):
                names = [f"{SHARD_PREFIX}{i}" for i in range(n)]
                for name in names:
                    Store.create(root / name, manifest, wait).close()
                with writes_reported(root, creating=True):
                    now = time.strftime("%Y-%m-%dT%H:%M:%S")
                    _write_json(root / MANIFEST_NAME, {"format": FORMAT_VERSION, "created": now,
                                                       **manifest, "shards": names})
        finally:
            lock.close()
        return cls(root)

    # --- what a Store offers ---------------------------------------------------------------

    def route(self, path: str) -> int:
        return route(path, self.n)

    def replaced(self) -> bool:
        return _identity(self.root) != self.identity or any(s.replaced() for s in self.stores)

    def map(self, fn, items) -> list:
        """fn over items on the shards' thread pool, in order."""
        return list(self._pool.map(fn, items))

    @contextmanager
    def snapshot(self):
        """One read transaction on every shard (each consistent on its own)."""
        with ExitStack() as stack:
            snaps = [stack.enter_context(s.snapshot()) for s in self.stores]
            yield ShardedSnapshot(self, snaps)

    def is_empty(self) -> bool:
        return all(s.is_empty() for s in self.stores)

    def generation(self) -> int:
        """Grows with every commit to any shard (Store.generation, added up)."""
        return sum(s.generation() for s in self.stores)

    def documents(self) -> list[DocumentInfo]:
        return sorted((d for s in self.stores for d in s.documents()), key=lambda d: d.path)

    def info(self) -> IndexInfo:
        parts = [s.info() for s in self.stores]
        m, first = self.manifest, parts[0]
        lasts = [p.last_ingest for p in parts if p.last_ingest]
        return IndexInfo(
            index=str(self.root), documents=sum(p.documents for p in parts), chunks=sum(p.chunks for p in parts),
            tokens=sum(p.tokens for p in parts), vectors=sum(p.vectors for p in parts),
            index_type=f"{self.n} shards ({first.index_type}, ...)", encoder=m.get("encoder"),
            dimension=m.get("dimension"), chunk_size=m.get("chunk_size"), chunk_overlap=m.get("chunk_overlap"),
            size_bytes=sum(p.size_bytes for p in parts), created=m.get("created"),
            last_ingest=max(lasts) if lasts else None,
            failed=sorted((f for p in parts for f in p.failed), key=lambda f: f.path))

    def writer(self, wait: float = 0.0, ann_threshold: int = Settings.ann_threshold) -> ShardedWriter:
        return ShardedWriter(self, wait, ann_threshold)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for s in self.stores:
            s.close()

    # --- ingest ---------------------------------------------------------------------------

    def ingest(self, encoder, settings: Settings, paths, prune: bool = True, progress: bool = True,
               wait: float = 0.0, on_file=None, engine: str = "local", address: str | None = None) -> IngestReport:
        """Each shard brought in step with the files routed to it, by its own writer (an
        Ingestor): one after the other here, all at once in threads with `engine="ray"`."""
        started = time.perf_counter()
        counted = threading.Lock()
        done_before = [0]

        def one(i: int) -> IngestReport:
            def seen(done, total, path):  # one progress count over all shards
                if on_file is not None:
                    with counted:
                        done_before[0] += 1
                        on_file(done_before[0], done_before[0] - done + total, path)

            ingestor = Ingestor(self.stores[i], encoder, settings)
            ingestor.ray_share = self.n  # every shard's Ray pool at once: each a share of the cluster
            return ingestor.run(paths, prune, progress and engine != "ray", wait, seen, engine, address,
                                keep=lambda p: self.route(p) == i)

        if engine == "ray":
            with ThreadPoolExecutor(self.n, thread_name_prefix="rag-shard-writer") as pool:
                reports = list(pool.map(one, range(self.n)))
        else:
            reports = [one(i) for i in range(self.n)]
        merged = merge_reports(reports)
        merged.seconds = round(time.perf_counter() - started, 3)
        return merged


def merge_reports(reports: list[IngestReport]) -> IngestReport:
    """The shards' ingest reports as one: counts added up; a file the scan skipped (which every
    shard's scan saw) listed once."""
    out = IngestReport()
    for r in reports:
        for key in ("added", "updated", "removed", "unchanged", "chunks", "tokens"):
            setattr(out, key, getattr(out, key) + getattr(r, key))
        out.failed += r.failed
        for node, count in r.files_per_node.items():
            out.files_per_node[node] = out.files_per_node.get(node, 0) + count
    out.skipped_files = list({(f.path, f.reason): f for r in reports for f in r.skipped_files}.values())
    out.skipped = len(out.skipped_files)
    out.notes = list(dict.fromkeys(n for r in reports for n in r.notes))
    return out


class ShardedWriter:
    """Write sessions on every shard at once (each shard's lock, taken in order); a document's
    changes go to its shard, a content is dropped from each shard where nothing uses it."""

    def __init__(self, shards: Shards, wait: float, ann_threshold: int):
        self.shards, self.root = shards, shards.root
        self.writers = []
        try:
            for s in shards.stores:
                self.writers.append(s.writer(wait=wait, ann_threshold=ann_threshold))
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        problem = None
        for w in self.writers:
            try:
                w.__exit__(kind, exc, tb)
            except Exception as e:  # noqa: BLE001 - each shard is closed; the first problem is raised
                problem = problem or e
        self.writers = []
        if problem is not None:
            raise problem

    def close(self):
        for w in self.writers:
            w.close()
        self.writers = []

    def _of(self, path: str):
        return self.writers[self.shards.route(path)]

    def documents(self) -> dict:
        return {path: row for w in self.writers for path, row in w.documents().items()}

    def has_content(self, sha256: str) -> bool:
        return any(w.has_content(sha256) for w in self.writers)

    def put_document(self, path: str, *args, **kwargs):
        return self._of(path).put_document(path, *args, **kwargs)

    def note_error(self, path: str, error: str) -> None:
        self._of(path).note_error(path, error)

    def delete_document(self, path: str) -> str | None:
        return self._of(path).delete_document(path)

    def drop_if_unused(self, sha256: str | None) -> None:
        for w in self.writers:
            if sha256 and w.has_content(sha256):
                w.drop_if_unused(sha256)

    def commit(self) -> None:
        for w in self.writers:
            w.commit()


class ShardedSnapshot:
    """Every shard's Snapshot, read as one index (global chunk ids: local * N + shard)."""

    def __init__(self, shards: Shards, snaps: list):
        self.shards, self.snaps, self.n = shards, snaps, len(snaps)
        self.store = shards

    def _global(self, shard: int, local: int) -> int:
        return local * self.n + shard

    def _split(self, ids) -> dict[int, list[int]]:
        by: dict[int, list[int]] = {}
        for i in ids:
            by.setdefault(int(i) % self.n, []).append(int(i) // self.n)
        return by

    def _fan(self, fn) -> list:
        """fn(shard number, snapshot) on every shard, on the pool."""
        return self.shards.map(lambda i: fn(i, self.snaps[i]), range(self.n))

    def meta(self, key: str, default=None):
        return self.snaps[0].meta(key, default)

    def is_empty(self) -> bool:
        return all(s.is_empty() for s in self.snaps)

    def dense(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k best cosines of all shards (each shard's own k best hold them all)."""
        found = self._fan(lambda i, s: [(self._global(i, c), score) for c, score in s.dense(vector, k)])
        return sorted((x for part in found for x in part), key=lambda x: -x[1])[:max(k, 0)]

    def cosines(self, vector: np.ndarray, ids: list[int]) -> dict[int, float]:
        out: dict[int, float] = {}
        for shard, local in self._split(ids).items():
            out.update({self._global(shard, c): s for c, s in self.snaps[shard].cosines(vector, local).items()})
        return out

    def chunks(self, ids: list[int]) -> dict[int, ChunkRow]:
        out: dict[int, ChunkRow] = {}
        for shard, local in self._split(ids).items():
            for c, row in self.snaps[shard].chunks(local).items():
                g = self._global(shard, c)
                out[g] = replace(row, chunk_id=g)
        return out

    def next_chunk(self, chunk_id: int) -> ChunkRow | None:
        shard = int(chunk_id) % self.n
        row = self.snaps[shard].next_chunk(int(chunk_id) // self.n)
        return replace(row, chunk_id=self._global(shard, row.chunk_id)) if row else None

    def sample_texts(self, n: int) -> list[str]:
        per = self._fan(lambda i, s: s.sample_texts(-(-n // self.n)))
        mixed = [t for group in zip(*[p + [None] * (max(map(len, per)) - len(p)) for p in per]) for t in group]
        return [t for t in mixed if t is not None][:n]

    def coverage(self, query: str) -> float:
        """Share of the question's keyword words that occur in some shard (Snapshot.coverage)."""
        words = segment.query_words(query, self.shards.segmenter)[:64]
        if not words:
            return 0.0
        probe = "(SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT 1)"
        sql = "SELECT " + ", ".join([probe] * len(words))
        rows = self._fan(lambda i, s: s.execute(sql, [f'"{w}"' for w in words]).fetchone())
        return sum(1 for found in zip(*rows) if any(found)) / len(words)

    def keyword(self, query: str, k: int) -> list[tuple[int, float]]:
        """(global chunk id, BM25) of the k best keyword matches over all shards, BM25 computed
        with the statistics of all shards together (as one unsharded index would)."""
        phrases = segment.query_words(query, self.shards.segmenter)
        if not phrases or k <= 0:
            return []
        depth = SHARD_DEPTH * k + SHARD_SLACK

        def propose(i, snap):
            ids = [c for c, _ in snap.keyword(query, depth)]
            stats = shard_stats(snap, phrases)
            return stats, {self._global(i, c): f for c, f in frequencies(snap, phrases, ids, stats).items()}

        parts = self._fan(propose)
        candidates = {c: f for _, found in parts for c, f in found.items()}
        scores = bm25(add_stats([stats for stats, _ in parts]), candidates)
        return sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]


# --- BM25 with corpus-wide statistics ---------------------------------------------------------


def varints(blob: bytes) -> list[int]:
    """SQLite's varints (FTS5 records: the averages record, docsize rows)."""
    out, i = [], 0
    while i < len(blob):
        value = 0
        for j in range(9):
            byte = blob[i]
            i += 1
            if j == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        out.append(value)
    return out


def shard_stats(snap, phrases: list[str]) -> tuple[int, int, list[int]]:
    """(rows, tokens in all columns, rows matching each phrase) of one keyword index: what
    FTS5's bm25() reads (xRowCount, xColumnTotalSize(-1), xQueryPhrase), from the same place
    (the averages record of chunks_fts_data, id 1)."""
    row = snap.execute("SELECT block FROM chunks_fts_data WHERE id=1").fetchone()
    numbers = varints(row[0]) if row and row[0] else [0]
    hits = [snap.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{p}"',)).fetchone()[0]
            for p in phrases]
    return numbers[0], sum(numbers[1:]), hits


def add_stats(parts) -> tuple[int, int, list[int]]:
    rows = sum(p[0] for p in parts)
    tokens = sum(p[1] for p in parts)
    hits = [sum(h) for h in zip(*[p[2] for p in parts])]
    return rows, tokens, hits


def texts_of(snap, ids: list[int]) -> dict[int, tuple[str, str]]:
    """(text, heading) of these chunks of one shard."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = snap.execute(f"SELECT id, text, heading FROM chunks WHERE id IN ({marks})", ids).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def idf(rows: int, n_hit: int) -> float:
    """FTS5's IDF of a phrase found in n_hit of rows (1e-6 where it would be 0 or less)."""
    value = math.log((rows - n_hit + 0.5) / (n_hit + 0.5))
    return value if value > 0 else 1e-6


def length_norm(length: int, avgdl: float) -> float:
    return BM25_K1 * (1 - BM25_B + BM25_B * length / avgdl)


def lengths(snap, ids: list[int]) -> dict[int, int]:
    """Each row's tokens in all columns, as FTS5 counts them (chunks_fts_docsize: a varint a column)."""
    marks = ",".join("?" * len(ids))
    return {i: sum(varints(sz)) for i, sz in
            snap.execute(f"SELECT id, sz FROM chunks_fts_docsize WHERE id IN ({marks})", ids)}


def frequencies(snap, phrases: list[str], ids: list[int], stats) -> dict[int, tuple[int, list[float]]]:
    """Each of these rows' length D and the weighted count f of each phrase in it (text 1,
    heading 0.5), read back from the shard's own FTS5: its bm25() of the one-phrase query under
    its own statistics `stats` (shard_stats), inverted: f = s K / (idf (k1 + 1) - s), rounded to
    the half the weights make it a multiple of. No text is read or cut again."""
    if not ids:
        return {}
    rows, tokens, hits = stats
    size = lengths(snap, ids)
    out = {i: (size.get(i, 0), [0.0] * len(phrases)) for i in ids}
    every = f"SELECT rowid, -bm25(chunks_fts, {WEIGHTS_SQL}) FROM chunks_fts WHERE chunks_fts MATCH ?"
    # SQLite runs `rowid IN (...)` as one FTS5 lookup per id (5 ms for 70 ids and 6 words, against
    # 0.25 ms for every match of them): every match unless the phrase's rows far outnumber the ids
    chosen = every + f" AND rowid IN ({','.join('?' * len(ids))})"
    wanted = set(ids)
    seen: dict[str, dict[int, float]] = {}
    for j, (phrase, n_hit) in enumerate(zip(phrases, hits)):
        if not n_hit or not rows:
            continue
        if phrase not in seen:
            weight = idf(rows, n_hit) * (BM25_K1 + 1)
            found = (snap.execute(every, [f'"{phrase}"']) if n_hit <= LOOKUPS_FROM * len(ids)
                     else snap.execute(chosen, [f'"{phrase}"', *ids]))
            seen[phrase] = {i: round(2 * s * length_norm(size.get(i, 0), tokens / rows) / (weight - s)) / 2
                            for i, s in found if i in wanted}
        for i, f in seen[phrase].items():
            out[i][1][j] = f
    return out


def bm25(stats: tuple[int, int, list[int]], candidates: dict[int, tuple[int, list[float]]]) -> dict[int, float]:
    """FTS5's bm25(chunks_fts, 1.0, 0.5), negated (higher is better), of each candidate (id ->
    (length, weighted count of each phrase)) under the given statistics (rows, tokens, rows
    per phrase): fts5_aux.c's formula, sum over phrases of idf * f (k1 + 1) / (f + K)."""
    rows, tokens, hits = stats
    if not candidates or not rows:
        return {}
    avgdl = tokens / rows
    weights = [idf(rows, h) for h in hits]
    scores = {}
    for i, (length, f) in candidates.items():
        norm = length_norm(length, avgdl)
        score = sum(w * (x * (BM25_K1 + 1)) / (x + norm) for w, x in zip(weights, f) if x)
        if score > 0:
            scores[i] = score
    return scores


def tokenized_frequencies(snap, phrases: list[str], ids: list[int], segmenter: int) -> dict[int, tuple[int, list[float]]]:
    """`frequencies` found another way (the tests' check of it): the rows' texts cut again and
    read by an FTS5 table in memory with the keyword index's tokenizer (fts5vocab instances:
    a phrase of several tokens counts where they follow each other)."""
    candidates = texts_of(snap, ids)
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, heading, tokenize={TOKENIZE})")
        mem.execute(f"CREATE VIRTUAL TABLE q USING fts5(text, tokenize={TOKENIZE})")
        mem.execute("CREATE VIRTUAL TABLE tv USING fts5vocab(t, instance)")
        mem.execute("CREATE VIRTUAL TABLE qv USING fts5vocab(q, instance)")
        mem.executemany("INSERT INTO t(rowid, text, heading) VALUES (?,?,?)",
                        [(i, segment.index_text(text, segmenter), segment.index_text(heading, segmenter))
                         for i, (text, heading) in candidates.items()])
        mem.executemany("INSERT INTO q(rowid, text) VALUES (?,?)", [(j + 1, p) for j, p in enumerate(phrases)])
        tokens_of = [[] for _ in phrases]
        for term, doc in mem.execute("SELECT term, doc FROM qv ORDER BY doc, offset"):
            tokens_of[doc - 1].append(term)
        at: dict[tuple[int, str], dict[int, str]] = {}
        for term, doc, col, offset in mem.execute("SELECT term, doc, col, offset FROM tv"):
            at.setdefault((doc, col), {})[offset] = term
        size = {i: sum(varints(sz)) for i, sz in mem.execute("SELECT id, sz FROM t_docsize")}
    finally:
        mem.close()
    out = {i: (size.get(i, 0), [0.0] * len(phrases)) for i in candidates}
    for (doc, col), positions in at.items():
        for j, ts in enumerate(tokens_of):
            count = sum(1 for o, t in positions.items()
                        if ts and t == ts[0] and all(positions.get(o + m) == ts[m] for m in range(1, len(ts))))
            out[doc][1][j] += COLUMN_WEIGHTS.get(col, 1.0) * count
    return out
