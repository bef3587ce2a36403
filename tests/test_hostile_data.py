"""Issue 32, cases 1-5, 19 and 21: the index's data and who may touch it. A first ingest whose
only file fails, a DELETE with an empty or relative path, a link swapped in between the scan and
the read, an index folder replaced under a running server, a full disk during an upload, the
server's own paths in what a client reads, two ingests creating one index at once. Real files,
real mounts, a real app (FastAPI's TestClient); the fake models (rag/models/fakes.py)."""

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import tmpfs
from fastapi.testclient import TestClient

from rag import RAG
from rag.core.errors import IndexLocked, RagError
from rag.core.settings import Settings
from rag.http.app import create_app
from rag.index import store as store_module

FAKES = {"encoder": "fake", "generator": "fake", "translator": "off"}
FAKES_ENV = {f"RAG_{k.upper()}": v for k, v in FAKES.items()}
QUOKKA = "The quokka is a small wallaby that lives on Rottnest Island near Perth."
KIWI = "The kiwi is a flightless bird native to New Zealand and lays a very large egg."


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "rag.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **FAKES_ENV, **(env or {})}, timeout=300)


@contextmanager
def served(*indexes: Path):
    """A real app over these index folders, no keys, models not warmed (the fakes load at once)."""
    app = create_app([str(p) for p in indexes], None, Settings.load(**FAKES), warm=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def one_line_error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]["message"]
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


def upload(client, name: str, files: list[tuple[str, bytes]]):
    return client.post(f"/v1/indexes/{name}/documents", files=[("files", f) for f in files])


def sources(client, name: str, query: str) -> list[str]:
    r = client.post("/v1/search", json={"index": name, "query": query, "k": 5})
    assert r.status_code == 200, r.text
    return [h["text"] for h in r.json()["hits"]]


# --- 1: a first ingest whose only file fails -----------------------------------------------

def test_a_first_ingest_whose_only_file_fails_leaves_a_valid_empty_index(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "empty.txt").write_text("")
    index = tmp_path / "ix"
    report = RAG(index, **FAKES).ingest([folder])
    assert [Path(f.path).name for f in report.failed] == ["empty.txt"]
    info = RAG(index, **FAKES).info()  # not "damaged"
    assert (info.documents, info.vectors, info.failed[0].path) == (0, 0, str(folder / "empty.txt"))
    assert RAG(index, **FAKES).search("quokka") == []
    (folder / "quokka.txt").write_text(QUOKKA)
    assert RAG(index, **FAKES).ingest([folder]).added == 1
    assert "quokka" in RAG(index, **FAKES).search("quokka Rottnest", k=1)[0].text
    r = cli("info", "--index", index)
    assert r.returncode == 0 and "damaged" not in r.stderr, r.stderr


def test_an_index_left_without_a_vector_file_by_an_older_rag_is_read_as_empty(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "empty.txt").write_text("")
    index = tmp_path / "ix"
    RAG(index, **FAKES).ingest([folder])
    with sqlite3.connect(index / store_module.DB_NAME) as conn:  # as rag before issue 32 committed it
        conn.execute("UPDATE meta SET value='1' WHERE key='generation'")
    assert RAG(index, **FAKES).info().vectors == 0
    (folder / "quokka.txt").write_text(QUOKKA)
    assert RAG(index, **FAKES).ingest([folder]).added == 1
    assert "quokka" in RAG(index, **FAKES).search("quokka Rottnest", k=1)[0].text


def test_a_first_upload_that_fails_leaves_the_index_usable(tmp_path):
    index = tmp_path / "docs"
    with served(index) as client:
        r = upload(client, "docs", [("empty.txt", b"")])
        assert r.status_code == 200 and len(r.json()["failed"]) == 1, r.text
        assert client.get("/v1/indexes/docs").status_code == 200
        r = upload(client, "docs", [("quokka.txt", QUOKKA.encode())])
        assert r.status_code == 200 and r.json()["added"] == 1, r.text
        assert any("quokka" in t for t in sources(client, "docs", "quokka Rottnest"))


# --- 2: DELETE with an empty or relative path ------------------------------------------------

def test_delete_with_an_empty_or_relative_path_removes_nothing_of_the_servers(tmp_path, monkeypatch):
    index = tmp_path / "docs"
    with served(index) as client:
        assert upload(client, "docs", [("quokka.txt", QUOKKA.encode()), ("kiwi.txt", KIWI.encode())]).json()["added"] == 2
        monkeypatch.chdir(tmp_path)  # the server's working directory holds the index
        for empty in ("", "   "):
            r = client.delete("/v1/indexes/docs/documents", params={"path": empty})
            assert "empty" in one_line_error(r, 422)
        for elsewhere in (".", "docs", "docs/uploads", "../" + tmp_path.name, "uploads/../.."):
            r = client.delete("/v1/indexes/docs/documents", params={"path": elsewhere})
            assert r.status_code in (404, 422), (elsewhere, r.text)
        assert client.get("/v1/indexes/docs").json()["documents"] == 2
        r = client.delete("/v1/indexes/docs/documents", params={"path": "kiwi.txt"})  # as the client named it
        assert r.json() == {"removed": 1}, r.text
        r = client.delete("/v1/indexes/docs/documents", params={"path": str(index / "uploads" / "quokka.txt")})
        assert r.json() == {"removed": 1}, r.text  # an exact indexed path still works
        assert client.get("/v1/indexes/docs").json()["documents"] == 0


def test_rag_remove_refuses_an_empty_path(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "quokka.txt").write_text(QUOKKA)
    rag = RAG(tmp_path / "ix", **FAKES)
    rag.ingest([folder])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RagError, match="empty"):
        rag.remove("")
    assert rag.info().documents == 1


# --- 3: a link swapped in between the scan and the read --------------------------------------

def test_a_link_swapped_in_after_the_scan_is_not_followed(tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("The vault combination is seven nine three.")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(QUOKKA)
    (folder / "z.txt").write_text(KIWI)

    def swap(done, total, path):  # after the scan, before z.txt is read
        if done == 1:
            os.symlink(secret, folder / "z.tmp")
            os.replace(folder / "z.tmp", folder / "z.txt")

    rag = RAG(tmp_path / "ix", **FAKES)
    report = rag.ingest([folder], on_file=swap)
    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert "z.txt" in failed and "\n" not in failed["z.txt"], report
    assert not any("vault" in h.text for h in rag.search("vault combination", k=5))
    with rag.store.snapshot() as snap:
        assert not snap.execute("SELECT 1 FROM chunks WHERE text LIKE '%vault%'").fetchall()


def test_a_fifo_swapped_in_after_the_scan_does_not_hang_the_ingest(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(QUOKKA)
    (folder / "z.txt").write_text(KIWI)
    done_event = threading.Event()
    result = {}

    def swap(done, total, path):
        if done == 1:
            (folder / "z.txt").unlink()
            os.mkfifo(folder / "z.txt")

    def run():
        result["report"] = RAG(tmp_path / "ix", **FAKES).ingest([folder], on_file=swap)
        done_event.set()

    threading.Thread(target=run, daemon=True).start()
    if not done_event.wait(60):
        with open(folder / "z.txt", "wb"):  # let the stuck reader go
            pass
        pytest.fail("the ingest hung on a FIFO swapped in for a file")
    assert "z.txt" in {Path(f.path).name for f in result["report"].failed}


# --- 4: an index folder replaced while the server runs ----------------------------------------

def test_a_replaced_index_folder_is_served(tmp_path):
    docs, copy = tmp_path / "docs", tmp_path / "copy"
    for folder, text in ((tmp_path / "a", QUOKKA), (tmp_path / "b", KIWI)):
        folder.mkdir()
        (folder / "doc.txt").write_text(text)
    RAG(docs, **FAKES).ingest([tmp_path / "a"])
    RAG(copy, **FAKES).ingest([tmp_path / "b"])
    with served(docs) as client:
        assert any("quokka" in t for t in sources(client, "docs", "quokka Rottnest"))
        docs.rename(tmp_path / "docs.old")  # restored from a copy, as `rag rebuild` swaps folders
        copy.rename(docs)
        listed = [d["path"] for d in client.get("/v1/indexes/docs/documents").json()["data"]]
        assert listed == [str(tmp_path / "b" / "doc.txt")]
        assert any("kiwi" in t for t in sources(client, "docs", "kiwi flightless bird"))
        r = upload(client, "docs", [("note.txt", b"The harbour of Valletta has a blue crane.")])
        assert r.status_code == 200 and r.json()["added"] == 1, r.text
        assert any("Valletta" in t for t in sources(client, "docs", "blue crane Valletta"))
    assert RAG(docs, **FAKES).info().documents == 2


# --- 5: a full disk during an upload ----------------------------------------------------------

def test_a_full_disk_during_an_upload_is_507_and_leaves_nothing_behind(tmp_path):
    with tmpfs(tmp_path / "small", "2m") as disk:
        index = disk / "docs"
        with served(index) as client:
            assert upload(client, "docs", [("quokka.txt", QUOKKA.encode())]).json()["added"] == 1
            before = sorted(os.listdir(index / "uploads"))
            big = ("The ledger lists crates of copper wire. " * 80_000).encode()  # 3 MB on a 2 MB disk
            r = upload(client, "docs", [("kiwi.txt", KIWI.encode()), ("ledger.txt", big)])
            message = one_line_error(r, 507)
            assert "no space left" in message and str(disk) not in message, message
            assert sorted(os.listdir(index / "uploads")) == before  # no .part, no orphan kiwi.txt
            r = upload(client, "docs", [("kiwi.txt", KIWI.encode())])  # the next small one goes in
            assert r.status_code == 200 and r.json()["added"] == 1, r.text
            assert any("kiwi" in t for t in sources(client, "docs", "kiwi flightless bird"))


def test_a_disk_that_fills_during_an_uploads_ingest_is_507_and_drops_the_upload(tmp_path):
    with tmpfs(tmp_path / "small", "2m") as disk:
        index = disk / "docs"
        with served(index) as client:
            assert upload(client, "docs", [("quokka.txt", QUOKKA.encode())]).json()["added"] == 1
            rows = "\n\n".join(f"Section {i}: the ledger lists crate {i} of copper wire." for i in range(14_000))
            r = upload(client, "docs", [("ledger.txt", rows.encode())])  # 0.8 MB saved; its passages do not fit
            message = one_line_error(r, 507)
            assert "no space left" in message and str(disk) not in message, message
            assert sorted(os.listdir(index / "uploads")) == ["quokka.txt"]
            assert client.get("/v1/indexes/docs").json()["documents"] == 1
            r = upload(client, "docs", [("kiwi.txt", KIWI.encode())])
            assert r.status_code == 200 and r.json()["added"] == 1, r.text


# --- 19: the server's own paths ---------------------------------------------------------------

def test_reports_and_errors_over_http_never_name_the_servers_paths(tmp_path):
    index = tmp_path / "srv" / "docs"
    with served(index) as client:
        r = upload(client, "docs", [("quokka.txt", QUOKKA.encode()), ("../empty.txt", b"")])
        assert r.status_code == 200, r.text
        assert str(tmp_path) not in r.text, r.text
        assert [f["path"] for f in r.json()["failed"]] == ["../empty.txt"]  # as the client named it
        (index / store_module.DB_NAME).write_bytes(b"not a database" * 100)
    with served(index) as client:
        for r in (client.get("/v1/indexes/docs"), client.post("/v1/search", json={"index": "docs", "query": "x"}),
                  upload(client, "docs", [("kiwi.txt", KIWI.encode())])):
            message = one_line_error(r, 503)
            assert "damaged" in message and "'docs'" in message and str(tmp_path) not in message, message


# --- 21: two ingests creating one index at once -------------------------------------------------

def test_two_ingests_creating_one_index_at_once(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "quokka.txt").write_text(QUOKKA)
    index = tmp_path / "ix"
    both = threading.Barrier(2)
    flush = store_module.vectors.fsync

    def slow_disk(path):  # both writers reach the manifest's write together, as on a slow disk
        if Path(path).name.startswith(store_module.MANIFEST_NAME):
            try:
                both.wait(3)
            except threading.BrokenBarrierError:
                pass
        flush(path)

    monkeypatch.setattr(store_module.vectors, "fsync", slow_disk)
    outcomes = []

    def ingest():
        try:
            outcomes.append(RAG(index, **FAKES).ingest([folder]).added)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            outcomes.append(e)

    threads = [threading.Thread(target=ingest) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    errors = [e for e in outcomes if isinstance(e, Exception)]
    assert all(isinstance(e, IndexLocked) and "being written by another rag process" in str(e) for e in errors), errors
    assert len(errors) < 2 and RAG(index, **FAKES).info().documents == 1


def test_two_rag_ingest_processes_into_one_new_index(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(20):
        (folder / f"part{i}.txt").write_text(f"Section {i}: the ledger lists crate {i} of copper wire. " * 20)
    for round_ in range(3):
        index = tmp_path / f"ix{round_}"
        procs = [subprocess.Popen([sys.executable, "-m", "rag.cli", "ingest", str(folder), "--index", str(index)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **FAKES_ENV}) for _ in range(2)]
        results = [(p.wait(120), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        for code, err in results:
            assert code == 0 or "being written by another rag process" in err, err
        assert RAG(index, **FAKES).info().documents == 20
        shutil.rmtree(index)
