"""Issue 20, findings 6-13: cluster faults, pathological files, invisible characters, a read-only
or full disk, bad settings and bad eval datasets. Each ends in one clear line (exit 2 from the
CLI) or is handled, and nothing already indexed is lost. Real files, real mounts, real Ray; the
fake encoder (rag/models/fakes.py), since what is checked is the plumbing around it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tmpfs

from rag import RAG
from rag.core.errors import BadDataset, BadSetting, CannotWrite, DiskFull
from rag.core.settings import Settings

FAKES = {"encoder": "fake", "generator": "fake", "translator": "off"}
FAKES_ENV = {f"RAG_{k.upper()}": v for k, v in FAKES.items()}


def rag(*args, env=None, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "rag.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **FAKES_ENV, **(env or {})}, timeout=timeout)


def one_line(r) -> str:
    """The CLI's stderr is exactly one `rag: error:` line, no traceback."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rag: error: "), r.stderr[-2000:]
    return lines[0]


# --- 12: settings --------------------------------------------------------------------------

@pytest.mark.parametrize("name, value, says", [
    ("RAG_K", "abc", "k = 'abc': must be a whole number from 1 to 1,000 (from RAG_K)"),
    ("RAG_MAX_FILE_MB", "lots", "max_file_mb = 'lots': must be a number from"),
    ("RAG_MODE", "bogus", "mode = 'bogus': must be one of dense, keyword, hybrid"),
    ("RAG_MAX_TEXT_MB", "nan", "max_text_mb = 'nan'"),
    ("RAG_REQUEST_TIMEOUT", "inf", "request_timeout = 'inf'"),
    ("RAG_FUSION_WEIGHT", "1.5", "fusion_weight = '1.5': must be a number from 0 to 1"),
    ("RAG_COPY", "maybe", "copy = 'maybe': must be true or false"),
    ("RAG_CHUNK_SIZE", "12.5", "chunk_size = '12.5': must be a whole number"),
    ("RAG_CHUNK_OVERLAP", "200", "chunk_overlap = 200 must be smaller than chunk_size = 128"),
    ("RAG_MAX_CHUNKS_PER_FILE", "0", "max_chunks_per_file = '0'"),
])
def test_a_bad_environment_value_is_named_with_its_range(monkeypatch, tmp_path, name, value, says):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(BadSetting) as e:
        Settings.load()
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("toml, says", [
    ('k = "abc"\n', "k = 'abc'"),
    ("chunk_size = [1, 2]\n", "chunk_size = [1, 2]: must be a whole number"),
    ("k = 4\nk = 5\n", "not valid TOML"),
    ("k = \n", "not valid TOML"),
    ("chunk_sise = 64\n", "unknown setting 'chunk_sise'"),
    ("max_text_mb = nan\n", "max_text_mb = nan"),
    ("follow_links = 1\n", "follow_links = 1: must be true or false"),
])
def test_a_bad_rag_toml_is_one_line(monkeypatch, tmp_path, toml, says):
    (tmp_path / "rag.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadSetting) as e:
        Settings.load()
    assert says in str(e.value) and "\n" not in str(e.value)


def test_arguments_and_replace_are_checked_too():
    with pytest.raises(BadSetting, match="chunk_overlap = 64 must be smaller than chunk_size = 64"):
        Settings.load(chunk_size=64, chunk_overlap=64)
    with pytest.raises(BadSetting, match="k = 0"):
        Settings().replace(k=0)
    with pytest.raises(BadSetting, match="temperature = nan"):
        Settings(temperature=float("nan"))
    s = Settings.load(max_file_mb=1, k=3, min_score=None)  # ints for floats are fine
    assert (s.max_file_mb, s.k, s.min_score) == (1.0, 3, None)


def test_cli_says_a_bad_setting_in_one_line_exit_2(tmp_path):
    r = rag("search", "anything", "--index", tmp_path / "none", env={"RAG_K": "abc"})
    assert r.returncode == 2 and "RAG_K" in one_line(r)
    (tmp_path / "rag.toml").write_text("[broken\n")
    r = rag("info", "--index", tmp_path / "none", cwd=tmp_path)
    assert r.returncode == 2 and "rag.toml is not valid TOML" in one_line(r)


# --- 13: rag eval datasets -----------------------------------------------------------------

@pytest.mark.parametrize("name, text, says", [
    ("truncated.json", '{"data": [{"paragraphs": [{"context": "c", "qas"', "not valid JSON"),
    ("wrong.json", '{"data": "x"}', "expected SQuAD-format JSON"),
    ("bad.jsonl", '{"question": "q?", "answers": ["a"]}\n{"question": \n', "line 2: not valid JSON"),
    ("list.jsonl", '{"question": "q?"}\n[1, 2]\n', "line 2: expected an object"),
    ("empty.json", "", "is empty"),
    ("blank.jsonl", "\n\n", "is empty"),
    ("null.jsonl", '{"question": null, "answers": ["a"]}\n', 'line 1: "question" must be a non-empty string, not null'),
    ("null.json", '{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "ok?"}, {"question": null}]}]}]}',
     'data[0].paragraphs[0].qas[1]: "question" must be a non-empty string, not null'),
    ("answers.json", '{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": [1]}]}]}]}',
     '"answers" must be a list of'),
    ("noqs.json", '{"data": []}', "holds no questions"),
])
def test_eval_names_the_first_bad_record(tmp_path, name, text, says):
    from rag.evaluate import load

    (tmp_path / name).write_text(text)
    with pytest.raises(BadDataset) as e:
        load(tmp_path / name)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_cli_eval_of_a_bad_dataset_is_one_line_exit_2(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"question": "fine?", "answers": ["a"]}\n["not", "a", "record"]\n')
    r = rag("eval", tmp_path / "d.jsonl", "--index", tmp_path / "none")
    assert r.returncode == 2 and "d.jsonl: line 2: expected an object" in one_line(r)


# --- 9: invisible characters -------------------------------------------------------------

ZW = {"zero-width space": "\u200b", "zero-width non-joiner": "\u200c", "zero-width joiner": "\u200d",
      "word joiner": "\u2060", "byte-order mark": "\ufeff", "soft hyphen": "\u00ad"}
WORDS = ["quetzalcoatlus", "brachiosaurus", "ankylosaurus", "pachycephalosaurus", "stegosaurus",
         "dimetrodon"]


def test_invisible_characters_inside_words_are_found_by_keyword_and_dense_search(tmp_path):
    from rag.language.text import clean

    docs = tmp_path / "docs"
    docs.mkdir()
    for (what, mark), word in zip(ZW.items(), WORDS):
        hidden = word[:4] + mark + word[4:7] + mark + word[7:]
        (docs / f"{word}.txt").write_text(f"Notes on fossils. The {hidden} was described from a skeleton "
                                          f"found in a quarry ({what}).\n")
    r = RAG(tmp_path / "ix", **FAKES)  # its vectors see whole words only where the text was cleaned
    r.ingest([docs])
    for word in WORDS:
        hits = r.search(word, k=1, mode="keyword")
        assert hits and Path(hits[0].source).stem == word, word
        assert word in hits[0].text  # the stored passage is clean
        dense = r.search(f"Which fossil is the {word}?", k=1, mode="dense")
        assert Path(dense[0].source).stem == word, word
        page = (docs / f"{word}.txt").read_text()
        assert clean(page[hits[0].start:hits[0].end]) == hits[0].text  # offsets into the file as it is
    question = WORDS[0][:3] + "\u200b" + WORDS[0][3:] + "\u00ad"  # the question is cleaned too
    assert Path(r.search(question, k=1, mode="keyword")[0].source).stem == WORDS[0]


def test_clean_offsets_point_into_the_original_text():
    from rag.language.text import clean_with_offsets

    text = "a\u200bb\u00ad\u00adc d\ufeffe"
    cleaned, where = clean_with_offsets(text)
    assert cleaned == "abc de" and [text[where(i)] for i in range(len(cleaned))] == list(cleaned)


# --- 8: pathological files ---------------------------------------------------------------

def test_csv_rows_and_json_elements_are_grouped_with_their_keys():
    from rag.readers.documents import read

    rows = "".join(f"{i},city{i},country{i % 7}\n" for i in range(3000))
    doc = read("t.csv", ("id,city,country\n" + rows).encode())
    assert 10 < len(doc.sections) < 100  # neither one per row nor one for the file
    assert all(line.startswith("id: ") and "; city: city" in line for s in doc.sections for line in s.text.split("\n"))
    assert "id: 2999; city: city2999; country: country3" in doc.text
    items = json.dumps([{"name": f"bird {i}", "wings": 2} for i in range(5000)]).encode()
    doc = read("t.json", items)
    assert 10 < len(doc.sections) < 200  # was one section (so one passage) per element
    assert "[4321].name: bird 4321\n[4321].wings: 2" in doc.text
    for s in doc.sections:  # offsets into the document's text
        assert doc.text[s.start:s.start + len(s.text)] == s.text


def test_a_file_over_max_chunks_per_file_fails_alone_and_fast(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.csv").write_text("id,value\n" + "".join(f"{i},{i % 97}\n" for i in range(1_000_000)))  # 9 MB
    (docs / "good.md").write_text("# Kiwi\n\nThe kiwi is a flightless bird of New Zealand.\n")
    started = time.perf_counter()
    report = RAG(tmp_path / "ix", max_chunks_per_file=20_000, **FAKES).ingest([docs])
    took = time.perf_counter() - started
    assert [(Path(f.path).name, "max_chunks_per_file" in f.reason) for f in report.failed] == [("big.csv", True)]
    assert report.added == 1 and took < 120, took
    assert "kiwi" in RAG(tmp_path / "ix").search("flightless bird", k=1)[0].text


def test_a_large_file_commits_its_neighbours_before_it_is_encoded(tmp_path):
    """Killed while the large file encodes, the small files before it are searchable."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a-small.txt").write_text("The okapi lives in the forests of Congo.\n")
    (docs / "b-large.txt").write_text("\n\n".join(f"Paragraph {i} says the number {i * 13} in words." for i in range(1000)))
    env = {"RAG_COMMIT_EVERY_CHUNKS": "100", "RAG_CRASH_AT": "file-stored:2"}  # dies storing the large file
    r = rag("ingest", docs, "--index", tmp_path / "ix", "--json", env=env)
    assert r.returncode != 0
    hits = RAG(tmp_path / "ix").search("Where does the okapi live?", k=1)
    assert hits and "okapi" in hits[0].text


# --- 10, 11: read-only and full disks ----------------------------------------------------

def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def test_an_index_on_a_read_only_disk_is_searched_not_called_damaged(tmp_path, corpus):
    with tmpfs(tmp_path / "ro", "64m") as disk:
        index = disk / "ix"
        assert rag("ingest", corpus, "--index", index).returncode == 0  # another process: no file stays open
        remount(disk, "ro")
        hits = RAG(index).search("Fresnel lens", k=1)
        assert "Fresnel" in hits[0].text  # reading works
        with pytest.raises(CannotWrite, match="read-only file system"):
            RAG(index).ingest([corpus])
        r = rag("ingest", corpus, "--index", index)
        line = one_line(r)
        assert r.returncode == 2 and "read-only" in line and "damaged" not in line and "rebuild" not in line
        r = rag("remove", corpus / "bees.txt", "--index", index)
        assert r.returncode == 2 and "read-only" in one_line(r)
        r = rag("ingest", corpus, "--index", disk / "new")  # a new index there
        assert r.returncode == 2 and "cannot create the index" in one_line(r)
        assert sorted(os.listdir(disk)) == ["ix"]  # nothing renamed, nothing half-made
        remount(disk, "rw")
        assert RAG(index).info().documents == 4


def test_a_full_disk_during_ingest_is_one_line_and_the_index_stays(tmp_path, corpus):
    with tmpfs(tmp_path / "small", "2m") as disk:
        index = disk / "ix"
        RAG(index, chunk_size=32, chunk_overlap=4, **FAKES).ingest([corpus])  # small passages: many vectors, cheaply
        before = RAG(index).info()
        more = tmp_path / "more"
        more.mkdir()
        for i in range(30):  # about 3,000 passages: their vectors (the fake encoder's 256 numbers) need 3 MB
            (more / f"part{i}.txt").write_text("\n\n".join(
                f"Section {i}-{j}: the ledger lists crate {i * 1000 + j} of copper wire." for j in range(200)))
        r = rag("ingest", more, "--index", index, "--no-prune", "--json")
        line = one_line(r)
        assert r.returncode == 2 and "no space left" in line and "last commit" in line, line
        after = RAG(index).info()
        assert (after.documents, after.chunks) == (before.documents, before.chunks)
        assert "Fresnel" in RAG(index).search("Fresnel lens", k=1)[0].text
        assert not [f for f in os.listdir(index) if f.endswith(".tmp")]


def test_disk_problems_are_not_damage():
    import errno
    import sqlite3

    from rag.index.store import write_problem

    root = Path("/nonexistent/ix")
    assert isinstance(write_problem(root, OSError(errno.ENOSPC, "No space left on device")), DiskFull)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorname = "SQLITE_FULL"
    assert isinstance(write_problem(root, full, strict=True), DiskFull)
    assert isinstance(write_problem(root, RuntimeError("write error: 0 != 1 (No space left on device)")), DiskFull)
    assert "read-only" in str(write_problem(root, OSError(errno.EROFS, "Read-only file system"))).lower()
    assert write_problem(root, ValueError("a bug")) is None


# --- 6, 7: Ray faults --------------------------------------------------------------------

def test_an_unreachable_ray_cluster_is_one_line_before_the_write_lock(tmp_path, corpus):
    pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
    import fcntl

    index = tmp_path / "ix"
    RAG(index, **FAKES).ingest([corpus / "bees.txt"])
    with open(index / "write.lock", "a+") as lock:  # another writer holds the index
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.perf_counter()
        r = rag("ingest", corpus, "--index", index, "--ray", "127.0.0.1:1", "--json", timeout=120)
        assert time.perf_counter() - started < 60
    line = one_line(r)  # the cluster is tried first: not "being written by another rag process"
    assert r.returncode == 2 and "cannot reach a Ray cluster at 127.0.0.1:1" in line, line
    (tmp_path / "a-file").write_text("not a folder")
    r = rag("ingest", corpus, "--index", index, "--ray", "--json", env={"RAY_TMPDIR": str(tmp_path / "a-file")})
    assert r.returncode == 2 and "could not start a local Ray" in one_line(r)


def test_something_else_at_the_address_is_not_taken_for_ray():
    pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
    import socket
    import threading

    from rag.core.errors import RagError
    from rag.index.cluster import _reachable

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    def answer():  # an HTTP server, say, at the address given
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(RagError, match="not as a Ray cluster does"):
        _reachable(f"127.0.0.1:{server.getsockname()[1]}", 5)
    server.close()


@pytest.mark.slow
def test_a_file_that_kills_its_ray_worker_fails_alone(tmp_path):
    pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, fact in (("otter", "Sea otters hold hands while they sleep."),
                       ("poison", "This file kills every worker that reads it."),
                       ("yak", "Yaks live on the Tibetan plateau."), ("emu", "The emu is a large bird of Australia.")):
        (docs / f"{name}.md").write_text(f"# {name}\n\n{fact}\n")
    started = time.perf_counter()
    r = rag("ingest", docs, "--index", tmp_path / "ix", "--ray", "--json", env={"RAG_RAY_CRASH_ON": "poison"},
            timeout=300)
    assert time.perf_counter() - started < 240
    assert r.returncode == 1, r.stderr[-2000:]  # one file failed, the rest is in
    report = json.loads(r.stdout)  # the report alone: Ray is left before it is printed
    assert report["added"] == 3
    [failed] = report["failed"]
    assert Path(failed["path"]).name == "poison.md" and "Ray worker" in failed["reason"]
    assert "Yaks" in RAG(tmp_path / "ix").search("Where do yaks live?", k=1)[0].text
