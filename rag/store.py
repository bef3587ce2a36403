"""An index directory: SQLite (documents, chunk texts, keyword index) + FAISS (vectors,
ids = chunk ids) + manifest.json.

Crash safety has one commit point, the SQLite transaction. A writer saves the new FAISS
index as `vectors.<generation+1>.faiss` first (fsync'd), then commits the transaction that
records that generation. Killed before the commit, the old generation stays current and the
new file is an orphan that the next writer deletes; killed after it, the new one is. Readers
always load the FAISS file named by the generation they read inside their own transaction,
so the vectors and the texts they see always belong together. One writer at a time (flock)."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import IndexError_, IndexLocked
from .text import STOPWORDS, has_cjk, segment

FORMAT_VERSION = 1
DB_NAME, MANIFEST_NAME, LOCK_NAME = "chunks.sqlite", "manifest.json", "write.lock"

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
    text, heading, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, heading)
    VALUES (new.id, rag_segment(new.text), rag_segment(new.heading)); END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, heading)
    VALUES ('delete', old.id, rag_segment(old.text), rag_segment(old.heading)); END;
"""


def is_index_dir(path: Path) -> bool:
    return (path / DB_NAME).is_file() and (path / MANIFEST_NAME).is_file()


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
        raise IndexError_(damaged(root, f"{MANIFEST_NAME} is unreadable ({type(e).__name__})")) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise IndexError_(f"{root} has index format {found}, this rag reads format {FORMAT_VERSION}; "
                          "re-ingest into a new index")
    return manifest


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
    # the keyword index holds Chinese cut into words (English unchanged): see rag.text
    conn.create_function("rag_segment", 1, lambda t: segment(t) if t else t, deterministic=True)
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL" if readonly else "PRAGMA synchronous=FULL")
    return conn


def _vectors_file(root: Path, generation: int) -> Path:
    return root / f"vectors.{generation}.faiss"


class Store:
    """Read access to an index directory; `writer()` gives the single write session."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not is_index_dir(self.root):
            raise IndexError_(f"{self.root} is not a rag index (no {MANIFEST_NAME}/{DB_NAME}); "
                              "create it with `rag ingest PATH --index ...`")
        self.manifest = read_manifest(self.root)
        with damage_reported(self.root):
            self._conn = _connect(self.root / DB_NAME)
        self._lock = threading.RLock()
        self._faiss = None
        self._generation = -1
        with self.snapshot() as conn:  # a damaged database fails here, with a clear message
            if (self.root / DB_NAME).stat().st_size <= QUICK_CHECK_BYTES:
                problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                if problem != "ok":
                    raise sqlite3.DatabaseError(problem)
            self.meta(conn, "generation")

    # --- creation ----------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | Path, manifest: dict) -> "Store":
        """Make a new, empty index directory (atomically: manifest written last)."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        with _connect(root / DB_NAME) as conn:
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        _write_json(root / MANIFEST_NAME, {"format": FORMAT_VERSION, "created": now, **manifest})
        return cls(root)

    # --- reading -----------------------------------------------------------------------

    @contextmanager
    def snapshot(self):
        """A read transaction: everything read inside sees one committed state."""
        with self._lock, damage_reported(self.root):
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def meta(self, conn, key: str, default=None):
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def _vectors(self, conn):
        """The FAISS index matching the snapshot's generation (reloaded when a writer moved on)."""
        generation = int(self.meta(conn, "generation", 0))
        if generation != self._generation:
            path = _vectors_file(self.root, generation)
            self._faiss = _read_faiss(path, self.meta(conn, "vectors_crc32"), mmap=True) if generation else None
            self._generation = generation
        return self._faiss

    def dense_search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self.snapshot() as conn:
            return self._dense(conn, vector, k)

    def _dense(self, conn, vector, k):
        index = self._vectors(conn)
        if index is None or index.ntotal == 0:
            return []
        scores, ids = index.search(vector.reshape(1, -1).astype(np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def keyword_search(self, query: str, k: int) -> list[tuple[int, float]]:
        with self.snapshot() as conn:
            return self._keyword(conn, query, k)

    def _keyword(self, conn, query: str, k: int):
        """BM25 via FTS5; higher score is better (FTS5's bm25() is negated)."""
        terms = _fts_query(query)
        if not terms or k <= 0:
            return []
        rows = conn.execute(
            "SELECT rowid, -bm25(chunks_fts, 1.0, 0.5) FROM chunks_fts WHERE chunks_fts MATCH ? "
            "ORDER BY bm25(chunks_fts, 1.0, 0.5) LIMIT ?", (terms, k)).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    def _cosines(self, conn, vector: np.ndarray, ids: list[int]) -> dict[int, float]:
        """Exact similarity of the query to given chunks (their stored vectors)."""
        index = self._vectors(conn)
        if index is None or not ids:
            return {}
        out = {}
        for i in ids:
            try:
                out[i] = float(index.reconstruct(int(i)) @ vector)
            except RuntimeError:  # index type without reconstruction
                pass
        return out

    def chunks(self, ids: list[int], conn=None) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        sql = (f'SELECT c.id, c.text, c.page, c.heading, c.start, c."end", '
               f"(SELECT MIN(path) FROM documents d WHERE d.sha256=c.sha256 AND d.status='ok') "
               f"FROM chunks c WHERE c.id IN ({marks})")
        rows = (conn or self._conn).execute(sql, ids).fetchall()
        return {r[0]: ChunkRow(r[0], r[1], r[2], r[3] or "", r[4], r[5], r[6] or "") for r in rows}

    def is_empty(self) -> bool:
        with self.snapshot() as conn:
            return conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is None

    def documents(self) -> list[dict]:
        with self.snapshot() as conn:
            rows = conn.execute(
                "SELECT d.path, d.sha256, d.size, d.status, d.error, d.updated, c.n_chunks "
                "FROM documents d LEFT JOIN contents c ON c.sha256=d.sha256 ORDER BY d.path").fetchall()
        keys = ("path", "sha256", "size", "status", "error", "updated", "chunks")
        return [dict(zip(keys, r)) for r in rows]

    def stats(self) -> dict:
        with self.snapshot() as conn:
            docs = conn.execute("SELECT COUNT(*) FROM documents WHERE status='ok'").fetchone()[0]
            failed = conn.execute("SELECT path, error FROM documents WHERE error IS NOT NULL ORDER BY path").fetchall()
            n_chunks = conn.execute("SELECT COALESCE(SUM(n_chunks),0), COALESCE(SUM(n_tokens),0) FROM contents").fetchone()
            index = self._vectors(conn)
            last = self.meta(conn, "last_ingest")
        size = sum(f.stat().st_size for f in self.root.iterdir() if f.is_file())
        return {
            "index": str(self.root), "documents": docs, "chunks": n_chunks[0], "tokens": n_chunks[1],
            "vectors": index.ntotal if index is not None else 0,
            "index_type": _describe(index), "encoder": self.manifest.get("encoder"),
            "dimension": self.manifest.get("dimension"),
            "chunk_size": self.manifest.get("chunk_size"), "chunk_overlap": self.manifest.get("chunk_overlap"),
            "size_bytes": size, "created": self.manifest.get("created"), "last_ingest": last,
            "failed": [{"path": p, "reason": e} for p, e in failed],
        }

    def writer(self, wait: float = 0.0, ann_threshold: int = 200_000) -> "Writer":
        return Writer(self, wait=wait, ann_threshold=ann_threshold)

    def close(self):
        self._conn.close()


class Writer:
    """The one write session on an index. Use as a context manager; `commit()` makes all
    changes so far durable and visible at once; leaving without commit discards them."""

    def __init__(self, store: Store, wait: float = 0.0, ann_threshold: int = 200_000):
        self.store, self.root = store, store.root
        self.ann_threshold = ann_threshold
        self._lock_file = open(self.root / LOCK_NAME, "a+")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._lock_file.close()
                    raise IndexLocked(f"{self.root} is being written by another rag process; "
                                      "wait for it to finish (or pass --wait SECONDS)") from None
                time.sleep(0.2)
        try:
            with damage_reported(self.root):
                self.conn = _connect(self.root / DB_NAME)
                self.conn.executescript(SCHEMA)  # adds tables an older rag did not have
                self.conn.execute("BEGIN IMMEDIATE")
                self.generation = int(self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
        except BaseException:
            self._lock_file.close()
            raise
        self._clean_orphans()
        existing = _vectors_file(self.root, self.generation)
        row = self.conn.execute("SELECT value FROM meta WHERE key='vectors_crc32'").fetchone()
        self.index = _read_faiss(existing, row[0] if row else None) if self.generation else None
        self.dirty = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.conn is not None:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

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

    def add_content(self, sha256: str, chunks, vectors: np.ndarray, n_tokens: int) -> None:
        """Store one file's chunks and their vectors under its content hash."""
        import faiss

        ids = []
        for c in chunks:
            cur = self.conn.execute(
                'INSERT INTO chunks (sha256, ord, text, page, heading, start, "end") VALUES (?,?,?,?,?,?,?)',
                (sha256, c.ord, c.text, c.page, c.heading, c.start, c.end))
            ids.append(cur.lastrowid)
        self.conn.execute("INSERT OR REPLACE INTO contents VALUES (?,?,?)", (sha256, len(ids), n_tokens))
        if self.index is None:
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        if len(ids):
            self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
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

    def documents(self) -> dict[str, tuple]:
        rows = self.conn.execute("SELECT path, sha256, mtime, size, status, error FROM documents")
        return {r[0]: r[1:] for r in rows}

    # --- commit ------------------------------------------------------------------------

    def commit(self) -> None:
        if not self.dirty:
            return
        self._maybe_convert()
        generation = self.generation + 1
        if self.index is not None:
            checksum = _write_faiss(self.index, _vectors_file(self.root, generation))
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('vectors_crc32', ?)", (checksum,))
        self.conn.execute("UPDATE meta SET value=? WHERE key='generation'", (str(generation),))
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_ingest', ?)",
                          (time.strftime("%Y-%m-%dT%H:%M:%S"),))
        self.conn.execute("COMMIT")  # the commit point
        self.generation = generation
        self._clean_orphans()
        self.conn.execute("BEGIN IMMEDIATE")
        self.dirty = False

    def _maybe_convert(self) -> None:
        """Exact search while small; an IVF index (trained on the data) above the threshold."""
        import faiss

        if self.index is None or self.index.ntotal < self.ann_threshold:
            return
        if not isinstance(self.index, faiss.IndexIDMap2):
            return
        self.index = build_ivf(*flat_contents(self.index))


def flat_contents(index) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, ids) of an IndexIDMap2 around a flat index."""
    import faiss

    flat = faiss.downcast_index(index.index)
    vectors = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d).copy()
    return vectors, faiss.vector_to_array(index.id_map).astype(np.int64)


def ivf_lists(n: int) -> int:
    """About sqrt(n) lists (k-means on 2 cores stays at seconds even for millions of vectors),
    with at least 39 training points per list (faiss' minimum)."""
    return int(max(1, min(65536, np.sqrt(n), n // 39)))


def build_ivf(vectors: np.ndarray, ids: np.ndarray, target_recall: float = 0.98):
    """IVF-Flat (inner product): supports add and remove by id, like the flat index. nprobe is
    calibrated on the data itself so that recall@10 against exact search is >= target_recall."""
    import faiss

    d, n = vectors.shape[1], len(vectors)
    nlist = ivf_lists(n)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(vectors[rng.choice(n, size=min(n, nlist * 64), replace=False)])
    index.add_with_ids(vectors, ids)
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct + remove by id
    index.nprobe = calibrate_nprobe(index, vectors, ids, target_recall)
    return index


def calibrate_nprobe(index, vectors: np.ndarray, ids: np.ndarray, target: float = 0.98, k: int = 10,
                     queries: int = 200) -> int:
    """Smallest nprobe (doubling) whose recall@k against exact search reaches `target` (plus
    a 0.005 margin) on queries made from the data: the sum of two stored vectors, normalised.
    Measured at 100k chunks, such queries need the same nprobe as real questions, while
    "stored vector plus noise" queries asked for far too few probes (real recall@10 0.88)."""
    import faiss

    rng = np.random.default_rng(1)
    m = min(queries, len(vectors))
    q = vectors[rng.choice(len(vectors), m)] + vectors[rng.choice(len(vectors), m)]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(q, k)
    truth = ids[truth]
    nprobe = 1
    while True:
        index.nprobe = nprobe
        _, found = index.search(q, k)
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)])
        if recall >= target + 0.005 or nprobe >= index.nlist:
            return nprobe
        nprobe = min(index.nlist, nprobe * 2)


def _describe(index) -> str:
    import faiss

    if index is None:
        return "empty"
    if isinstance(index, faiss.IndexIDMap2):
        return "flat (exact)"
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return f"ivf (nlist={ivf.nlist}, nprobe={ivf.nprobe})"
    return type(index).__name__


def _read_faiss(path: Path, checksum: str | None = None, mmap: bool = False):
    """Readers map the vector file instead of copying it into memory (flat indexes): pages are
    shared, evictable page cache. The file's CRC-32, recorded in the commit that named it, is
    checked first (once per generation and process; README gives the cost at 100k and 1M)."""
    import faiss

    if checksum is not None:
        try:
            actual = file_crc32(path)
        except OSError:
            actual = "missing"
        if actual != checksum:
            raise IndexError_(damaged(path.parent, f"{path.name} is damaged (checksum {actual}, recorded {checksum})"))
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except RuntimeError as e:
        raise IndexError_(damaged(path.parent, f"{path.name} is missing or unreadable")) from e


def file_crc32(path: Path, block: int = 1 << 24) -> str:
    """CRC-32 of a file: a damage check, not a defence against tampering; the fastest of the
    checksums measured here (about 1 GB/s, against 0.6 for SHA-256)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(block):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _write_faiss(index, path: Path) -> str:
    """Write, fsync and return the CRC-32 of the file."""
    import faiss

    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    _fsync(tmp)
    checksum = file_crc32(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)
    return checksum


# A database up to this size is checked with PRAGMA quick_check when opened (it reads every
# page, so its cost grows with the file); a larger one relies on SQLite's own errors, which
# are reported the same way.
QUICK_CHECK_BYTES = 256 * 2**20


def damaged(root: Path, what: str) -> str:
    return (f"the index {root} is damaged: {what}. Rebuild it from your documents with "
            f"`rag rebuild --index {root}` (or `rag ingest PATH --index NEW`)")


@contextmanager
def damage_reported(root: Path):
    """SQLite's 'file is not a database' / 'malformed' become one clear IndexError_."""
    try:
        yield
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            raise
        raise IndexError_(damaged(root, f"{DB_NAME}: {e}")) from None


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries (so a rename survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fts_query(text: str) -> str:
    """A question as an FTS5 OR-query of its words, segmented like the index (quoted, so no
    FTS syntax leaks in)."""
    import re

    words = [w for w in re.findall(r"\w+", segment(text).lower())
             if w not in STOPWORDS and (len(w) > 1 or has_cjk(w))]
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))
