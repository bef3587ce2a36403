"""A model server is untrusted input: a real hostile OpenAI-compatible server on 127.0.0.1
(http.server, one behaviour per model name) against `RAG(generator="openai:...")`, the CLI
and the web page. Every fault is one line (exit 2 in the CLI), bounded in time and memory,
never "not found"; what it sends is never interpreted (terminal sequences, Markdown)."""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag import RAG, RagError

QUESTION = "Who first lit the Quillfeather Lighthouse?"
ANSWER = "Tobias Renwick first lit the Quillfeather Lighthouse in 1897 [1]."


def event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"


class Hostile(BaseHTTPRequestHandler):
    """POST /v1/chat/completions; the model name picks the misbehaviour."""

    def log_message(self, *args):
        pass

    def _start(self, kind="text/event-stream"):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.end_headers()

    def _send(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:  # rag closed the connection: what it should do
            return False

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = body["model"]
        if model == "keepalive":  # a keep-alive comment forever, never an answer
            self._start()
            while self._send(b": keep-alive\n\n"):
                time.sleep(0.2)
        elif model == "silent":  # headers, then nothing at all
            self._start()
            time.sleep(6)
        elif model == "huge-event":  # one 50 MB event
            self._start()
            self._send(event("x" * 50_000_000))
        elif model == "many-events":  # 50,000 small events
            self._start()
            for _ in range(50_000):
                if not self._send(event("word ")):
                    return
            self._send(b"data: [DONE]\n\n")
        elif model == "digits":
            self._start()
            self._send(event("[" + "9" * 5000 + "] " + ANSWER) + b"data: [DONE]\n\n")
        elif model == "bad-json":
            self._start()
            self._send(event("Tobias") + b"data: {not json\n\n")
        elif model == "empty":
            self._start()
        elif model == "bad-body":
            self._start("application/json")
            self._send(b"{")
        elif model == "error-event":
            self._start()
            self._send(b"data: " + json.dumps({"error": {"message": "![t](http://127.0.0.1:9/t.png) **boom**\n<b>x</b>"}}).encode() + b"\n\n")
        elif model == "no-done":
            self._start()
            self._send(event("Tobias Renwick"))
        elif model == "control":
            self._start()
            self._send(event("\x1b]0;pwned\x07\x1b[2J" + ANSWER) + b"data: [DONE]\n\n")
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture(scope="module")
def hostile():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-server")
    docs = root / "docs"
    docs.mkdir()
    (docs / "lighthouse.md").write_text("# Lighthouses\n\nThe Quillfeather Lighthouse stands on the cape. It was "
                                        "first lit in 1897 by keeper Tobias Renwick.\n")
    RAG(root / "index").ingest([docs])
    return root / "index"


def ask(index, url, model, **settings):
    return RAG(index, generator=f"openai:{model}", openai_base_url=url, **settings).ask(QUESTION)


def test_keep_alives_cannot_hold_an_answer_past_its_deadline(index, hostile):
    start = time.monotonic()
    with pytest.raises(RagError, match="no complete answer within 2 s"):
        ask(index, hostile, "keepalive", answer_timeout=2)
    assert time.monotonic() - start < 6


def test_a_silent_server_times_out(index, hostile):
    start = time.monotonic()
    with pytest.raises(RagError, match="sent nothing for 1 s"):
        ask(index, hostile, "silent", request_timeout=1)
    assert time.monotonic() - start < 5


def test_what_arrives_is_capped(index, hostile):
    start = time.monotonic()
    with pytest.raises(RagError, match="sent more than"):
        ask(index, hostile, "huge-event")
    answer = ask(index, hostile, "many-events", max_tokens=48)  # max_tokens enforced on what arrives
    assert len(answer.text) < 2000 and answer.timings.total_ms < 20_000
    assert time.monotonic() - start < 30


def test_an_unbounded_citation_is_text(index, hostile):
    from rag.answer.citations import check_free_answer, cite_span

    answer = ask(index, hostile, "digits", max_tokens=1000)  # room for all 5,000 digits to arrive
    assert answer.found and "Renwick" in answer.text and answer.citations == [1]
    marker = "[" + "9" * 5000 + "]"
    assert check_free_answer(f"{marker} A lens.", ["A lens."])[0].cites == [1]
    assert [s.cited for s in cite_span(f"lens {marker}", [(answer.sources[0].hit, "A lens.")])] == [True]


@pytest.mark.parametrize("model, message", [("bad-json", "malformed JSON"), ("empty", "empty reply"),
                                            ("bad-body", "malformed JSON"), ("error-event", "reported an error"),
                                            ("no-done", "without \\[DONE\\]")])
def test_server_faults_are_one_line_never_not_found(index, hostile, model, message):
    with pytest.raises(RagError, match=message) as caught:
        ask(index, hostile, model)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_cli_exit_2_one_line_and_escaped_output(index, hostile):
    env = {**os.environ, "RAG_OPENAI_BASE_URL": hostile}
    run = lambda model: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "rag.cli", "ask", QUESTION, "--index", str(index), "--generator", f"openai:{model}"],
        env=env, capture_output=True, text=True, timeout=120)
    bad = run("bad-json")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.strip()] == [
        line for line in bad.stderr.splitlines() if line.startswith("rag: error:")]
    shown = run("control")
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout and "\\x1b]0;pwned" in shown.stdout


@pytest.mark.slow
def test_the_page_shows_a_server_error_as_text(index, hostile, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RAG_INDEX", str(index))
    monkeypatch.setenv("RAG_GENERATOR", "openai:error-event")
    monkeypatch.setenv("RAG_OPENAI_BASE_URL", hostile)
    at = AppTest.from_file(os.path.join(os.path.dirname(__file__), "..", "ui", "app.py"), default_timeout=180)
    at.run()
    at.chat_input[0].set_value(QUESTION).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("reported an error" in e for e in errors), errors
    assert all("![t](" not in e and "**boom**" not in e and "<b>" not in e for e in errors)  # escaped, not markup


@pytest.mark.parametrize("model", ["silent", "keepalive", "digits", "control", "error-event"])
def test_a_hostile_translator_costs_only_the_translation(index, hostile, model):
    # the question is searched as asked: no hang past the deadline, no error, no junk query
    rag = RAG(index, translator=f"openai:{model}", openai_base_url=hostile, request_timeout=1, answer_timeout=2)
    question = "灯塔是哪一年第一次点亮的？"
    assert rag.translated_query(question) is None
    hits = rag.search(question)
    assert hits and hits[0].source.endswith("lighthouse.md")
