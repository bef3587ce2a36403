"""An index directory: SQLite (documents, chunk texts, keyword index) + FAISS (vectors,
ids = chunk ids) + manifest.json.

Crash safety has one commit point, the SQLite transaction. A writer saves the new FAISS
index as `vectors.<generation+1>.faiss` first (fsync'd), then commits the transaction that
records that generation. Killed before the commit, the old generation stays current and the
new file is an orphan that the next writer deletes; killed after it, the new one is. Readers
always load the FAISS file named by the generation they read inside their own transaction,
so the vectors and the texts they see always belong together. One writer at a time (flock)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.core.errors import BadIndex, CannotWrite, DiskFull, IndexLocked, damaged
from rag.core.settings import Settings
from rag.index import vectors
from rag.language import segment

FORMAT_VERSION = 1
DB_NAME, MANIFEST_NAME, LOCK_NAME = "chunks.sqlite", "manifest.json", "write.lock"
SHARD_PREFIX = "shard-"  # a sharded index's shard folders: shard-0, shard-1, ...

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, sha256 TEXT, mtime REAL, size INTEGER,
    status TEXT NOT NULL, error TEXT, updated REAL);
CREATE INDEX IF NOT EXISTS documents_sha ON documents(sha256);
CREATE TABLE IF NOT EXISTS contents (sha256 TEXT PRIMARY KEY, n_chunks INTEGER, n_tokens INTEGER);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL, ord INTEGER, text TEXT NOT NULL,
    page INTEGER, heading TEXT, start INTEGER, "end" INTEGER);
CREATE INDEX IF NOT EXISTS chunks_sha ON chunks(sha256);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, heading, content='chunks', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2 categories ''L* N* Co M*''');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, heading)
    VALUES (new.id, rag_segment(new.text), rag_segment(new.heading)); END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, heading)
    VALUES ('delete', old.id, rag_segment(old.text), rag_segment(old.heading)); END;
"""


def is_store_dir(path: Path) -> bool:
    """One index folder of the plain format (a Store): its database and manifest."""
    return (path / DB_NAME).is_file() and (path / MANIFEST_NAME).is_file()


def is_index_dir(path: Path) -> bool:
    """An index: a Store's folder, or a sharded index's (its manifest names shard folders,
    each a Store: rag/index/shards.py)."""
    return is_store_dir(path) or ((path / MANIFEST_NAME).is_file() and is_store_dir(path / f"{SHARD_PREFIX}0"))


@dataclass
class FileProblem:
    """A file that was not indexed (or not updated), and why: shown to the person as one line."""
    path: str
    reason: str


@dataclass
class DocumentRow:
    """A document as the writer sees it: what was indexed, from which version of the file."""
    path: str
    sha256: str | None
    mtime: float
    size: int
    status: str  # ok | failed
    error: str | None  # the last failure (a document can be ok and keep an error: the old version stays)

    @property
    def current(self) -> bool:
        """Indexed without error: a file with the same mtime and size needs no work."""
        return self.status == "ok" and self.error is None


@dataclass
class DocumentInfo:
    """A document as `rag info`/the UI list it."""
    path: str
    sha256: str | None
    size: int
    status: str
    error: str | None
    updated: float
    chunks: int


@dataclass
class IndexInfo:
    index: str
    documents: int
    chunks: int
    tokens: int
    vectors: int
    index_type: str
    encoder: str | None
    dimension: int | None
    chunk_size: int | None
    chunk_overlap: int | None
    size_bytes: int
    created: str | None
    last_ingest: str | None
    failed: list[FileProblem]


@dataclass
class ChunkRow:
    chunk_id: int
    text: str
    page: int | None
    heading: str
    start: int
    end: int
    source: str


def read_manifest(root: Path) -> dict:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError) as e:
        raise BadIndex(damaged(root, f"{MANIFEST_NAME} is unreadable ({type(e).__name__})")) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BadIndex(f"{root} has index format {found}, this rag reads format {FORMAT_VERSION}; "
                          "re-ingest into a new index")
    return manifest


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """A connection for reading and writing, or (`read_only`, an index on a read-only disk or
    without write permission) for reading: `mode=ro`, or `immutable=1` where SQLite cannot
    create the WAL's shared-memory file beside the database (no writer can be there either)."""
    for query in ("?mode=ro", "?immutable=1") if read_only else ("",):
        conn = sqlite3.connect(f"file:{path}{query}", uri=True, timeout=30, isolation_level=None,
                               check_same_thread=False)
        # the keyword index holds its words as rag.segment cuts them, in the index's own version
        # (an index made before versions existed has none: 1); read below, once the file is open
        version = [1]
        conn.create_function("rag_segment", 1, lambda t: segment.index_text(t, version[0]), deterministic=True)
        if read_only:
            try:
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
                version[0] = _segmenter(conn)
                return conn
            except sqlite3.OperationalError as e:
                conn.close()
                if e.sqlite_errorname != "SQLITE_CANTOPEN" or query != "?mode=ro":
                    raise
                continue
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        version[0] = _segmenter(conn)
    return conn


def _segmenter(conn: sqlite3.Connection) -> int:
    """The rag.language.segment version the index's keyword words were made with (1 before it was
    recorded; a new database, still without tables, gets the current one in Store.create)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='segmenter'").fetchone()
    except sqlite3.OperationalError:  # no meta table yet: a new file
        return segment.VERSION
    version = int(row[0]) if row and str(row[0]).isdigit() else 1
    if version not in segment.VERSIONS:
        raise BadIndex(f"the keyword index was built by a newer rag (segmenter {version}); "
                       "update rag or re-ingest into a new index")
    return version


def writable(root: Path) -> bool:
    """Whether this process may change the index at `root` (the folder and its database)."""
    return os.access(root, os.W_OK) and os.access(root / DB_NAME, os.W_OK)


class Snapshot:
    """One committed state of an index: every read through it sees the same texts and the
    vectors that belong to them (one SQLite read transaction, the FAISS file it names)."""

    def __init__(self, store: "Store", conn: sqlite3.Connection):
        self.store, self._conn = store, conn

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        """A read-only SQL query on this snapshot (tests, benchmarks, maintenance)."""
        return self._conn.execute(sql, params)

    def meta(self, key: str, default=None):
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    @property
    def vectors(self):
        """The FAISS index of this snapshot's generation (None while the index is empty)."""
        return self.store._vectors_for(self)

    def dense(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the k nearest chunks, best first."""
        index = self.vectors
        if index is None or index.ntotal == 0 or k <= 0:
            return []
        scores, ids = index.search(vector.reshape(1, -1).astype(np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def keyword(self, query: str, k: int) -> list[tuple[int, float]]:
        """(chunk id, BM25) of the k best keyword matches, best first (FTS5's bm25() is
        negated so that higher is better; the heading counts half as much as the text)."""
        terms = fts_query(query, self.store.segmenter)
        if not terms or k <= 0:
            return []
        rows = self._conn.execute(
            "SELECT rowid, -bm25(chunks_fts, 1.0, 0.5) FROM chunks_fts WHERE chunks_fts MATCH ? "
            "ORDER BY bm25(chunks_fts, 1.0, 0.5) LIMIT ?", (terms, k)).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    def sample_texts(self, n: int) -> list[str]:
        """About n passages spread evenly over the ids of the whole index, not the first files
        only: one rowid lookup each, so a million-passage index reads n passages, not all."""
        lo, hi = self._conn.execute("SELECT MIN(id), MAX(id) FROM chunks").fetchone()
        if lo is None:
            return []
        points = sorted({lo + (hi - lo) * i // max(1, n - 1) for i in range(n)})
        sql = "SELECT text FROM chunks WHERE id >= ? ORDER BY id LIMIT 1"
        return [row[0] for p in points for row in self._conn.execute(sql, (p,))]

    def coverage(self, query: str) -> float:
        """Share of the question's keyword words that occur somewhere in the index (0 without
        words): near 1 for a question in the documents' language, near 0 for one in another
        (XQuAD: 0.7 or more for nine in ten questions in the documents' language, 0.33 or less
        for nine in ten English questions over Chinese paragraphs). One cheap lookup per word."""
        words = segment.query_words(query, self.store.segmenter)[:64]
        if not words:
            return 0.0
        probe = "(SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT 1)"
        row = self._conn.execute("SELECT " + ", ".join([probe] * len(words)),
                                 [f'"{w}"' for w in words]).fetchone()
        return sum(1 for x in row if x) / len(words)

    def cosines(self, vector: np.ndarray, ids: list[int]) -> dict[int, float]:
        """Exact similarity of the query to the given chunks (their stored vectors)."""
        index = self.vectors
        return vectors.cosines(index, vector, ids) if index is not None and ids else {}

    def chunks(self, ids: list[int]) -> dict[int, ChunkRow]:
        """The stored passages with these ids, with the path of a document that holds them."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        sql = (f'SELECT c.id, c.text, c.page, c.heading, c.start, c."end", '
               f"(SELECT MIN(path) FROM documents d WHERE d.sha256=c.sha256 AND d.status='ok') "
               f"FROM chunks c WHERE c.id IN ({marks})")
        rows = self._conn.execute(sql, ids).fetchall()
        return {r[0]: ChunkRow(r[0], r[1], r[2], r[3] or "", r[4], r[5], r[6] or "") for r in rows}

    def next_chunk(self, chunk_id: int) -> ChunkRow | None:
        """The passage that follows this one in its document (None at the document's end)."""
        row = self._conn.execute(
            "SELECT n.id FROM chunks c JOIN chunks n ON n.sha256=c.sha256 AND n.ord=c.ord+1 WHERE c.id=?",
            (chunk_id,)).fetchone()
        return self.chunks([row[0]]).get(row[0]) if row else None

    def is_empty(self) -> bool:
        return self._conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is None


class Store:
    """Read access to an index directory; `writer()` gives the single write session."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not is_store_dir(self.root):
            raise BadIndex(f"{self.root} is not a rag index (no {MANIFEST_NAME}/{DB_NAME}); "
                           "create it with `rag ingest PATH --index ...`")
        self.manifest = read_manifest(self.root)
        self.read_only = not writable(self.root)  # searched as it is; writing says why not
        with damage_reported(self.root):
            self._conn = _connect(self.root / DB_NAME, self.read_only)
        self._lock = threading.RLock()
        self._faiss = None
        self._generation = -1
        self.segmenter = _segmenter(self._conn)
        self.identity = _identity(self.root)  # a folder swapped in at this path is another index
        with self.snapshot() as snap:  # a damaged database fails here, with a clear message
            if (self.root / DB_NAME).stat().st_size <= QUICK_CHECK_BYTES:
                problem = snap.execute("PRAGMA quick_check(1)").fetchone()[0]
                if problem != "ok":
                    raise sqlite3.DatabaseError(problem)
            snap.meta("generation")

    @classmethod
    def create(cls, root: str | Path, manifest: dict, wait: float = 0.0) -> "Store":
        """Make a new, empty index directory (atomically: manifest written last), under the
        writer's lock: a second process creating the same index at once waits `wait` seconds
        or is told the index is being written (IndexLocked); one that finds it made opens it."""
        root = Path(root)
        with writes_reported(root, creating=True):
            root.mkdir(parents=True, exist_ok=True)
            lock = _lock(root / LOCK_NAME, wait)
        try:
            if not is_index_dir(root):
                with writes_reported(root, creating=True):
                    conn = _connect(root / DB_NAME)
                    try:
                        conn.executescript(SCHEMA)
                        conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
                        conn.execute("INSERT OR IGNORE INTO meta VALUES ('segmenter', ?)", (str(segment.VERSION),))
                    finally:
                        conn.close()
                    now = time.strftime("%Y-%m-%dT%H:%M:%S")
                    _write_json(root / MANIFEST_NAME, {"format": FORMAT_VERSION, "created": now, **manifest})
        finally:
            lock.close()  # closing the file releases the flock
        return cls(root)

    def replaced(self) -> bool:
        """Whether the index folder (or its database) at this path is no longer the one this
        store opened: restored from a copy, or swapped in by `rag rebuild`."""
        return _identity(self.root) != self.identity

    @contextmanager
    def snapshot(self):
        """A read transaction: everything read through the Snapshot sees one committed state."""
        with self._lock, damage_reported(self.root):
            self._conn.execute("BEGIN")
            try:
                yield Snapshot(self, self._conn)
            finally:
                self._conn.execute("COMMIT")

    def _vectors_for(self, snap: Snapshot):
        """The FAISS index matching the snapshot's generation (reloaded when a writer moved on)."""
        generation = int(snap.meta("generation", 0))
        if generation != self._generation:
            self._faiss = _vectors_of(self.root, generation, snap.meta("vectors_crc32"), snap.is_empty, mmap=True)
            self._generation = generation
        return self._faiss

    def is_empty(self) -> bool:
        with self.snapshot() as snap:
            return snap.is_empty()

    def generation(self) -> int:
        """The committed state's number: it grows with every commit, by this process or another."""
        with self.snapshot() as snap:
            return int(snap.meta("generation", 0))

    def documents(self) -> list[DocumentInfo]:
        with self.snapshot() as snap:
            rows = snap.execute(
                "SELECT d.path, d.sha256, d.size, d.status, d.error, d.updated, COALESCE(c.n_chunks, 0) "
                "FROM documents d LEFT JOIN contents c ON c.sha256=d.sha256 ORDER BY d.path").fetchall()
        return [DocumentInfo(*r) for r in rows]

    def info(self) -> IndexInfo:
        with self.snapshot() as snap:
            docs = snap.execute("SELECT COUNT(*) FROM documents WHERE status='ok'").fetchone()[0]
            failed = snap.execute("SELECT path, error FROM documents WHERE error IS NOT NULL ORDER BY path").fetchall()
            n_chunks, n_tokens = snap.execute(
                "SELECT COALESCE(SUM(n_chunks),0), COALESCE(SUM(n_tokens),0) FROM contents").fetchone()
            index = snap.vectors
            last = snap.meta("last_ingest")
        m = self.manifest
        return IndexInfo(
            index=str(self.root), documents=docs, chunks=n_chunks, tokens=n_tokens,
            vectors=index.ntotal if index is not None else 0, index_type=vectors.describe(index),
            encoder=m.get("encoder"), dimension=m.get("dimension"), chunk_size=m.get("chunk_size"),
            chunk_overlap=m.get("chunk_overlap"),
            size_bytes=sum(f.stat().st_size for f in self.root.iterdir() if f.is_file()),
            created=m.get("created"), last_ingest=last, failed=[FileProblem(p, e) for p, e in failed])

    def writer(self, wait: float = 0.0, ann_threshold: int = Settings.ann_threshold) -> "Writer":
        return Writer(self, wait=wait, ann_threshold=ann_threshold)

    def close(self):
        self._conn.close()


_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Tests kill the writer at a named step to check what survives: RAG_CRASH_AT=name kills
    the process the first time it gets there, name:N the N-th time."""
    wanted = os.environ.get("RAG_CRASH_AT")
    if not wanted or not wanted.startswith(name):
        return
    _passes[name] = _passes.get(name, 0) + 1
    if wanted in (name, f"{name}:{_passes[name]}"):
        os.kill(os.getpid(), signal.SIGKILL)


class Writer:
    """The one write session on an index. Use as a context manager; `commit()` makes all
    changes so far durable and visible at once; leaving without commit discards them."""

    def __init__(self, store: Store, wait: float = 0.0, ann_threshold: int = Settings.ann_threshold):
        self.store, self.root = store, store.root
        self.ann_threshold = ann_threshold
        self.conn = None
        if store.read_only or not writable(self.root):
            raise CannotWrite(read_only_message(self.root))
        with writes_reported(self.root):
            self._lock_file = _lock(self.root / LOCK_NAME, wait)
        try:
            with writes_reported(self.root), damage_reported(self.root):
                self.conn = _connect(self.root / DB_NAME)
                self.conn.executescript(SCHEMA)  # adds tables an older rag did not have
                self.conn.execute("BEGIN IMMEDIATE")
                self.generation = int(self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
        except BaseException:
            self._lock_file.close()
            raise
        self._clean_orphans()
        row = self.conn.execute("SELECT value FROM meta WHERE key='vectors_crc32'").fetchone()
        self.index = _vectors_of(self.root, self.generation, row[0] if row else None, self._no_chunks)
        self.dirty = False

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        self.close()
        problem = write_problem(self.root, exc, strict=True) if exc is not None else None
        if problem is not None:  # a full disk mid-ingest: one line, the last commit intact
            raise problem from None

    def close(self):
        if self.conn is not None:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def _no_chunks(self) -> bool:
        return self.conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is None

    def _clean_orphans(self):
        keep = {self.generation, self.generation - 1}
        for f in self.root.glob("vectors.*.faiss*"):
            try:
                gen = int(f.name.split(".")[1])
            except ValueError:
                continue
            if gen not in keep or f.name.endswith(".tmp"):
                f.unlink(missing_ok=True)

    # --- changes -----------------------------------------------------------------------

    def has_content(self, sha256: str) -> bool:
        return self.conn.execute("SELECT 1 FROM contents WHERE sha256=?", (sha256,)).fetchone() is not None

    def add_content(self, sha256: str, chunks, vecs: np.ndarray, n_tokens: int) -> None:
        """Store one file's chunks and their vectors under its content hash."""
        ids = []
        for c in chunks:
            cur = self.conn.execute(
                'INSERT INTO chunks (sha256, ord, text, page, heading, start, "end") VALUES (?,?,?,?,?,?,?)',
                (sha256, c.ord, c.text, c.page, c.heading, c.start, c.end))
            ids.append(cur.lastrowid)
        self.conn.execute("INSERT OR REPLACE INTO contents VALUES (?,?,?)", (sha256, len(ids), n_tokens))
        if self.index is None:
            self.index = vectors.new_flat(vecs.shape[1])
        if len(ids):
            self.index.add_with_ids(vecs, np.asarray(ids, dtype=np.int64))
        self.dirty = True

    def remove_content(self, sha256: str) -> None:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE sha256=?", (sha256,))]
        self.conn.execute("DELETE FROM chunks WHERE sha256=?", (sha256,))
        self.conn.execute("DELETE FROM contents WHERE sha256=?", (sha256,))
        if ids and self.index is not None:
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))
        self.dirty = True

    def put_document(self, path: str, sha256: str | None, mtime: float, size: int,
                     status: str = "ok", error: str | None = None) -> str | None:
        """Insert or update a document row; returns the content hash it no longer points to."""
        old = self.conn.execute("SELECT sha256 FROM documents WHERE path=?", (path,)).fetchone()
        self.conn.execute(
            "INSERT INTO documents (path, sha256, mtime, size, status, error, updated) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, mtime=excluded.mtime, "
            "size=excluded.size, status=excluded.status, error=excluded.error, updated=excluded.updated",
            (path, sha256, mtime, size, status, error, time.time()))
        self.dirty = True
        previous = old[0] if old else None
        return previous if previous != sha256 else None

    def note_error(self, path: str, error: str) -> None:
        """Record a failure on a document that keeps its previous, still indexed version."""
        self.conn.execute("UPDATE documents SET error=?, updated=? WHERE path=?", (error, time.time(), path))
        self.dirty = True

    def delete_document(self, path: str) -> str | None:
        row = self.conn.execute("SELECT sha256 FROM documents WHERE path=?", (path,)).fetchone()
        if row is None:
            return None
        self.conn.execute("DELETE FROM documents WHERE path=?", (path,))
        self.dirty = True
        return row[0]

    def drop_if_unused(self, sha256: str | None) -> None:
        """Remove a content's chunks when no document points to it any more."""
        if sha256 and not self.conn.execute(
                "SELECT 1 FROM documents WHERE sha256=? AND status='ok'", (sha256,)).fetchone():
            self.remove_content(sha256)

    def documents(self) -> dict[str, DocumentRow]:
        rows = self.conn.execute("SELECT path, sha256, mtime, size, status, error FROM documents")
        return {r[0]: DocumentRow(*r) for r in rows}

    # --- commit ------------------------------------------------------------------------

    def commit(self) -> None:
        if not self.dirty:
            return
        self.index = vectors.maybe_approximate(self.index, self.ann_threshold)
        # no passage yet (a first ingest whose files all failed): no vector file, and generation 0
        # still says so; a generation names a vector file, or the index could not be read again
        generation = self.generation + 1 if self.index is not None else self.generation
        with writes_reported(self.root):
            if self.index is not None:
                checksum = vectors.write(self.index, vectors.vectors_file(self.root, generation))
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('vectors_crc32', ?)", (checksum,))
            crash_point("vectors-written")  # new vector file on disk, SQLite still names the old one
            self.conn.execute("UPDATE meta SET value=? WHERE key='generation'", (str(generation),))
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_ingest', ?)",
                              (time.strftime("%Y-%m-%dT%H:%M:%S"),))
            self.conn.execute("COMMIT")  # the commit point
        crash_point("committed")  # committed, the previous generation's file not yet cleaned
        self.generation = generation
        self._clean_orphans()
        self.conn.execute("BEGIN IMMEDIATE")
        self.dirty = False


def _identity(root: Path) -> tuple:
    """What tells one index folder at a path from another put there: the folder's and its
    database's device and inode (None where gone)."""
    found = []
    for path in (root, root / DB_NAME):
        try:
            st = os.stat(path)
            found.append((st.st_dev, st.st_ino))
        except OSError:
            found.append(None)
    return tuple(found)


def _vectors_of(root: Path, generation: int, checksum: str | None, no_chunks, mmap: bool = False):
    """The vector file a generation names (None for generation 0: no passage yet). An index
    whose first commit held no passage, made by a rag that moved the generation on without
    writing a vector file, has no checksum and no passages: it is read as the empty index it is."""
    if not generation:
        return None
    path = vectors.vectors_file(root, generation)
    if checksum is None and not path.exists() and no_chunks():
        return None
    return vectors.read(path, checksum, mmap=mmap)


def _lock(path: Path, wait: float):
    """An exclusive lock on `path` (flock: released by the kernel when the process dies),
    waiting up to `wait` seconds for another writer."""
    handle = open(path, "a+")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise IndexLocked(f"{path.parent} is being written by another rag process; "
                                  "wait for it to finish (or pass --wait SECONDS)") from None
            time.sleep(0.2)


# A database up to this size is checked with PRAGMA quick_check when opened (it reads every
# page, so its cost grows with the file); a larger one relies on SQLite's own errors, which
# are reported the same way.
QUICK_CHECK_BYTES = 256 * 2**20


# SQLite errors that say nothing about the database's health: a read-only disk or missing
# permission, a full disk, a busy or locked database. Only the others mean damage.
NOT_DAMAGE = {"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_FULL",
              "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_INTERRUPT", "SQLITE_NOMEM", "SQLITE_IOERR"}


@contextmanager
def damage_reported(root: Path):
    """SQLite's 'file is not a database' / 'malformed' become one clear BadIndex; a read-only
    disk or a full one is said as such (renaming a healthy index to .damaged helps no one)."""
    try:
        yield
    except sqlite3.DatabaseError as e:
        primary = "_".join((getattr(e, "sqlite_errorname", None) or "").split("_")[:2])  # SQLITE_IOERR_WRITE
        if primary in NOT_DAMAGE or (
                isinstance(e, sqlite3.OperationalError) and "locked" in str(e)):
            problem = write_problem(root, e)
            if problem is None:
                raise
            raise problem from None
        raise BadIndex(damaged(root, f"{DB_NAME}: {e}")) from None


def read_only_message(root: Path, reason: str = "") -> str:
    reason = reason or ("read-only file system" if _read_only_fs(root) else "no permission to write")
    return (f"the index {root} cannot be changed ({reason}): it can still be searched; "
            f"to add documents, copy it to a writable place or ingest into another --index")


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _free(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.1f} MB free"
    except OSError:
        return "free space unknown"


def write_problem(root: Path, e: BaseException, creating: bool = False, strict: bool = False) -> Exception | None:
    """The one-line error for a write that failed because of the disk (full, read-only, no
    permission, I/O), or None when `e` is something else. `strict`: only what cannot come
    from anything but the index's disk (an error that merely passed through a write session)."""
    if isinstance(e, (CannotWrite, BadIndex, IndexLocked)) or not isinstance(e, Exception):
        return None
    name, text = getattr(e, "sqlite_errorname", None) or "", str(e)
    code = e.errno if isinstance(e, OSError) else None
    line = (text.splitlines() or [type(e).__name__])[0][:200]
    if code in (errno.ENOSPC, errno.EDQUOT) or name == "SQLITE_FULL" or (
            isinstance(e, RuntimeError) and "No space left" in text):
        return DiskFull(f"no space left on the disk that holds {root} ({_free(root.parent if creating else root)}); "
                        + ("nothing was created" if creating else "the index is as it was at its last commit")
                        + ": free some space and try again")
    reason = e.strerror if isinstance(e, OSError) and e.strerror else ""
    if code == errno.EROFS or name in ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH") or (
            code in (errno.EACCES, errno.EPERM) and not strict):
        if creating:
            return CannotWrite(f"cannot create the index {root} ({reason or line}); choose a writable place "
                               "with --index PATH")
        return CannotWrite(read_only_message(root, reason))
    if name.startswith("SQLITE_IOERR") or (not strict and isinstance(e, OSError)) or (
            not strict and isinstance(e, RuntimeError) and "write" in text.lower()):
        what = "create" if creating else "write"
        return CannotWrite(f"cannot {what} the index {root} ({reason or line}); "
                           + ("nothing was created" if creating else "the index is as it was at its last commit"))
    return None


@contextmanager
def writes_reported(root: Path, creating: bool = False):
    """A failed write because of the disk becomes one line (CannotWrite, DiskFull)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - anything else passes through unchanged
        problem = write_problem(root, e, creating)
        if problem is None:
            raise
        raise problem from None


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    vectors.fsync(tmp)
    os.replace(tmp, path)
    vectors.fsync(path.parent)


def fts_query(text: str, version: int = segment.VERSION) -> str:
    """A question as an FTS5 OR-query of its words, cut as the index of that segmenter
    version cut its texts (quoted, so no FTS syntax leaks in)."""
    # words, not phrases: "state-of-the-art" must be four OR-ed terms
    return " OR ".join(f'"{w}"' for w in segment.query_words(text, version))


def new_manifest(encoder: str, dimension: int, chunk_size: int, chunk_overlap: int) -> dict:
    """What a new index records about how it was built (an index keeps its encoder and chunking)."""
    return {"encoder": encoder, "dimension": dimension, "normalized": True, "metric": "inner_product",
            "chunk_size": chunk_size, "chunk_overlap": chunk_overlap}


def listed_paths(root: Path) -> list[str]:
    """The document paths an index lists, read-only: enough of a damaged index to rebuild it."""
    shards = sorted(Path(root).glob(f"{SHARD_PREFIX}*"))
    if shards and not is_store_dir(Path(root)):  # a sharded index: every shard's
        return [p for shard in shards if shard.is_dir() for p in listed_paths(shard)]
    try:
        with sqlite3.connect(f"file:{Path(root) / DB_NAME}?mode=ro", uri=True) as conn:
            return [r[0] for r in conn.execute("SELECT path FROM documents")]
    except sqlite3.DatabaseError as e:
        raise BadIndex(f"cannot read the document list of {root} ({e}); ingest your folders "
                       f"again into a new index: rag ingest PATH --index NEW") from None
