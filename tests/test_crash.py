"""A real `rag ingest` process killed with SIGKILL mid-way never leaves a broken index."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

from rag.store import Store


def write_corpus(root, start, n):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    words = "river mountain harbour lantern copper violin meadow glacier orchard compass".split()
    for i in range(start, start + n):
        text = "\n\n".join(" ".join(rng.choice(words, 60)) + f" file{i}" for _ in range(6))
        (root / f"doc{i}.txt").write_text(text)


def ingest_cmd(corpus, index):
    return [sys.executable, "-m", "rag.cli", "ingest", str(corpus), "--index", str(index), "--json"]


def check_consistent(index) -> set[str]:
    store = Store(index)
    with store.snapshot() as snap:
        n_chunks = snap.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        vectors = snap.vectors
        n_fts = snap.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]
        docs = {r[0] for r in snap.execute("SELECT path FROM documents WHERE status='ok'")}
        expected = snap.execute("SELECT COALESCE(SUM(n_chunks),0) FROM contents").fetchone()[0]
    assert (vectors.ntotal if vectors is not None else 0) == n_chunks == n_fts == expected
    if n_chunks == 0:
        return {os.path.basename(d) for d in docs}
    with store.snapshot() as snap:
        assert snap.keyword("harbour", 3)
        assert snap.dense(np.ones(384, dtype=np.float32) / np.sqrt(384), 3)
    store.close()
    return {os.path.basename(d) for d in docs}


def test_sigkill_mid_ingest_leaves_before_or_after(tmp_path):
    env = {**os.environ, "RAG_COMMIT_EVERY_CHUNKS": "1000000"}  # one commit: all or nothing
    corpus, index = tmp_path / "c", tmp_path / "idx"
    write_corpus(corpus, 0, 5)
    subprocess.run(ingest_cmd(corpus, index), env=env, check=True, capture_output=True)
    before = check_consistent(index)
    write_corpus(corpus, 5, 60)
    after = {f"doc{i}.txt" for i in range(65)}
    seen = set()
    for delay in (0.5, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0):
        proc = subprocess.Popen(ingest_cmd(corpus, index), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = check_consistent(index)
        assert state in (before, after), f"half-written index after kill at {delay}s"
        seen.add("after" if state == after else "before")
        if state == after:
            break
    assert "before" in seen  # at least one kill landed mid-ingest
    done = subprocess.run(ingest_cmd(corpus, index), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert check_consistent(index) == after
    assert len(list(index.glob("vectors.*.faiss"))) <= 2 and not list(index.glob("*.tmp"))


def test_sigkill_with_checkpoints_keeps_whole_files(tmp_path):
    """With frequent commits a kill keeps finished files and never a file's half."""
    env = {**os.environ, "RAG_COMMIT_EVERY_CHUNKS": "20", "RAG_ENCODE_BATCH_SIZE": "8"}
    corpus, index = tmp_path / "c", tmp_path / "idx"
    write_corpus(corpus, 0, 40)
    proc = subprocess.Popen(ingest_cmd(corpus, index), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(4.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (index / "manifest.json").exists():
        check_consistent(index)
    done = subprocess.run(ingest_cmd(corpus, index), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(check_consistent(index)) == 40
