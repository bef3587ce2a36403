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


@pytest.fixture
def stub_server():
    """A stand-in `rag serve` on 127.0.0.1: answers every POST with `stub.reply` (JSON) and keeps
    what it was sent."""
    import http.server
    import threading
    from types import SimpleNamespace

    stub = SimpleNamespace(reply={}, requests=[])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stub.requests.append((self.path, self.headers.get("Authorization"), json.loads(body)))
            data = json.dumps(stub.reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield stub
    server.shutdown()
    server.server_close()


def test_ask_server_prints_the_rebuilt_answer_like_a_local_one(stub_server, tmp_path):
    """`rag ask --server`: the answer rebuilt from the server's fields (never its Markdown) and
    printed as `rag ask` prints a local one; the key from RAG_API_KEY, the index from RAG_INDEX."""
    import os

    from rag.core import present
    from rag.core.records import Answer, Hit, Sentence, Source, Timings

    hit = Hit(1, 0.812, "docs/light.md", 3, "", "The lamp was first lit in 1897 by the keeper.", 5)
    answer = Answer("When was it lit?", short="1897", short_first=True,
                    sentences=[Sentence("The lamp was first lit in 1897 by the keeper.", [1]),
                               Sentence("It had \x1b]0;x\x07 a bell.", [], False)],
                    sources=[Source(1, hit, hit.text, cited=True, evidence=hit.text)],
                    timings=Timings(10.0, 100.0, 500.0, 9, 30.0))
    stub_server.reply = {"id": "x", "object": "chat.completion", "choices": [], **answer.to_dict()}
    env = {**os.environ, "RAG_API_KEY": "k-1", "RAG_INDEX": str(tmp_path / "handbook")}
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "When was it lit?", "--server", stub_server.url],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    path, key, body = stub_server.requests[0]
    assert (path, key, body["model"]) == ("/v1/chat/completions", "Bearer k-1", "handbook")
    assert r.stdout.startswith(present.terminal(answer, bold=False) + "\n")  # no tty: no bold, no ** either
    assert "1897: The lamp was first lit in 1897 by the keeper. [1] It had \\x1b]0;x\\x07 a bell." in r.stdout
    assert "\nSources:\n*[1] docs/light.md, page 3  (score 0.812)" in r.stdout and "**" not in r.stdout
    assert f"total 500 ms, 30 tokens/s (server {stub_server.url})" in r.stderr

    stub_server.reply = {"found": "maybe", "sources": "none"}  # not a rag server's answer
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "x", "--server", stub_server.url],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "is it a rag server?" in r.stderr and "Traceback" not in r.stderr
