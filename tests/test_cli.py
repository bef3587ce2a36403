"""The `rag` command as a user runs it: real subprocesses, exit codes, --json shapes."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # rag processes that load the encoder


def rag(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rag.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_ingest_search_info_remove(corpus, tmp_path):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.5 broken")
    index = tmp_path / "idx"
    r = rag("ingest", corpus, "--index", index, "--json")
    assert r.returncode == 1  # one file failed, the rest ingested
    report = json.loads(r.stdout)
    assert set(report) >= {"added", "updated", "removed", "unchanged", "skipped", "failed", "seconds"}
    assert report["added"] == 4
    assert report["failed"][0]["path"].endswith("broken.pdf") and report["failed"][0]["reason"]
    assert f"failed {corpus / 'broken.pdf'}: corrupt PDF" in r.stderr

    r = rag("search", "Who invented the Fresnel lens?", "--index", index, "-k", "2", "--json")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert list(hits[0]) == ["rank", "score", "source", "page", "heading", "text", "chunk_id"]
    assert hits[0]["source"].endswith("lighthouse.md") and "Fresnel" in hits[0]["text"]

    r = rag("search", "rainfall in Valletta", "--index", index, "-k", "1")
    assert "report.pdf, page 2" in r.stdout

    info = json.loads(rag("info", "--index", index, "--json").stdout)
    assert info["documents"] == 4 and info["failed"][0]["path"].endswith("broken.pdf")
    assert "failed" in rag("info", "--index", index).stdout

    (corpus / "broken.pdf").unlink()
    r = rag("ingest", corpus, "--index", index)
    assert r.returncode == 0 and "unchanged 4" in r.stdout and "removed 1" in r.stdout
    assert json.loads(rag("remove", corpus / "bees.txt", "--index", index, "--json").stdout) == {"removed": 1}


def test_usage_errors_exit_2(tmp_path):
    r = rag("ingest", tmp_path / "missing", "--index", tmp_path / "idx")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = rag("search", "x", "--index", tmp_path / "nothing")
    assert r.returncode == 2 and "rag ingest" in r.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    (tmp_path / "bad" / "chunks.sqlite").write_text("")
    r = rag("info", "--index", tmp_path / "bad")
    assert r.returncode == 2 and "damaged" in r.stderr
    assert rag("frobnicate").returncode == 2


def test_bare_index_name_lives_under_indexes(corpus, tmp_path):
    r = rag("ingest", corpus / "bees.txt", "--index", "mine", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "indexes" / "mine" / "manifest.json").is_file()
