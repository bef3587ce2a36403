"""A real `rag ingest` process killed with SIGKILL at each step of a write never leaves a
broken index: it keeps the last commit, whole files only. The kill points are named steps
of the writer (RAG_CRASH_AT, rag.store.crash_point), so every run hits the step it names.
What is checked is the writer's, not the encoder's: the processes encode with the fake encoder
(RAG_ENCODER=fake, rag/models/fakes.py), so each run takes about a second; the ingests before
a kill and after it, which no kill point stops, run in this process."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from rag import RAG
from rag.index.store import Store

FAKES = {"encoder": "fake", "generator": "fake", "translator": "off"}
FAKE = {f"RAG_{k.upper()}": v for k, v in FAKES.items()}


def write_corpus(root, start, n):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    words = "river mountain harbour lantern copper violin meadow glacier orchard compass".split()
    for i in range(start, start + n):
        text = "\n\n".join(" ".join(rng.choice(words, 60)) + f" file{i}" for _ in range(6))
        (root / f"doc{i}.txt").write_text(text)


def ingest(corpus, index, **env):
    return subprocess.run([sys.executable, "-m", "rag.cli", "ingest", str(corpus), "--index", str(index), "--json"],
                          env={**os.environ, **FAKE, **env}, capture_output=True, text=True, timeout=300)


def ingest_here(corpus, index, **settings):
    """The same ingest as `rag ingest`, in this process (its index closed after)."""
    rag = RAG(index, **FAKES, **settings)
    try:
        return rag.ingest([corpus])
    finally:
        rag.store.close()


def check_consistent(index) -> set[str]:
    """Vectors, texts, keyword index and per-content counts agree; returns the documents."""
    store = Store(index)
    with store.snapshot() as snap:
        n_chunks = snap.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        vectors = snap.vectors
        n_fts = snap.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]
        docs = {r[0] for r in snap.execute("SELECT path FROM documents WHERE status='ok'")}
        expected = snap.execute("SELECT COALESCE(SUM(n_chunks),0) FROM contents").fetchone()[0]
        orphans = snap.execute("SELECT COUNT(*) FROM documents d WHERE status='ok' AND NOT EXISTS "
                               "(SELECT 1 FROM chunks c WHERE c.sha256=d.sha256)").fetchone()[0]
        assert (vectors.ntotal if vectors is not None else 0) == n_chunks == n_fts == expected
        assert orphans == 0  # no document without its chunks
        if n_chunks:
            assert snap.keyword("harbour", 3)
            assert snap.dense(np.ones(vectors.d, dtype=np.float32) / np.sqrt(vectors.d), 3)
    store.close()
    return {os.path.basename(d) for d in docs}


@pytest.mark.parametrize("point, survives", [
    ("file-stored", "before"),      # chunks written inside the transaction, no commit yet
    ("vectors-written", "before"),  # the new vector file is on disk, SQLite still names the old one
    ("committed", "after"),         # the commit point passed; the old file not yet cleaned up
])
def test_kill_at_each_step_keeps_the_last_commit(tmp_path, point, survives):
    one_commit = {"RAG_COMMIT_EVERY_CHUNKS": "1000000"}
    corpus, index = tmp_path / "c", tmp_path / "idx"
    write_corpus(corpus, 0, 5)
    assert ingest_here(corpus, index, commit_every_chunks=1_000_000).added == 5
    before = check_consistent(index)
    write_corpus(corpus, 5, 20)
    after = {f"doc{i}.txt" for i in range(25)}
    killed = ingest(corpus, index, RAG_CRASH_AT=point, **one_commit)
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # it reached the step and died there
    assert check_consistent(index) == (before if survives == "before" else after)
    done = ingest_here(corpus, index, commit_every_chunks=1_000_000)  # the next writer finishes the work
    assert not done.failed and done.added + done.unchanged == 25
    assert check_consistent(index) == after
    assert len(list(index.glob("vectors.*.faiss"))) <= 2 and not list(index.glob("*.tmp"))


def test_kill_between_checkpoints_keeps_whole_files(tmp_path):
    """With frequent commits, a kill at the third commit keeps the files of the first two,
    each with all its chunks, and the next ingest does only the rest."""
    env = {"RAG_COMMIT_EVERY_CHUNKS": "20", "RAG_ENCODE_BATCH_SIZE": "8"}
    corpus, index = tmp_path / "c", tmp_path / "idx"
    write_corpus(corpus, 0, 40)
    killed = ingest(corpus, index, RAG_CRASH_AT="vectors-written:3", **env)
    assert killed.returncode == -signal.SIGKILL
    kept = check_consistent(index)
    assert 0 < len(kept) < 40
    kept_counts = chunk_counts(index)
    done = ingest_here(corpus, index, commit_every_chunks=20, encode_batch_size=8)
    assert not done.failed and done.unchanged == len(kept) and done.added == 40 - len(kept)
    assert len(check_consistent(index)) == 40
    full_counts = chunk_counts(index)
    assert all(kept_counts[name] == full_counts[name] for name in kept)  # every kept file whole


def chunk_counts(index) -> dict[str, int]:
    with Store(index).snapshot() as snap:
        rows = snap.execute("SELECT d.path, COUNT(c.id) FROM documents d JOIN chunks c ON c.sha256=d.sha256 "
                            "GROUP BY d.path").fetchall()
    return {os.path.basename(p): n for p, n in rows}
