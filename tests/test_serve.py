"""`rag serve` as clients see it: a real server process on 127.0.0.1, the official `openai`
client and raw `httpx`, keys per index, bad input, and a short load test."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_ready

from rag.http.keys import Keys, add, digest

QUESTIONS = ["When was the Fresnel lens invented?",
             "How do honey bees communicate the direction of flowers?",
             "What is the most active volcano in Europe?"]
DOCS = {
    "lighthouse.md": "# Lighthouses\n\n## Fresnel lens\n\nThe Fresnel lens was invented by Augustin-Jean "
                     "Fresnel in 1822 to make lighthouse beams visible for over twenty miles.\n\n"
                     "## Keepers\n\nLighthouse keepers trimmed the wicks every four hours during the night.\n",
    "bees.txt": "Honey bees communicate the direction of flowers with a waggle dance. The angle of the "
                "dance relative to vertical encodes the direction relative to the sun.\n",
    "volcano.html": "<html><body><h1>Volcanoes</h1><p>Mount Etna on Sicily is the most active volcano in "
                    "Europe.</p><script>var secret='SCRIPTTEXT';</script></body></html>",
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- no server needed ------------------------------------------------------------------------

def test_keys_file_stores_hashes_and_rights(tmp_path):
    path = tmp_path / "keys.json"
    writer = add(path, ["*"], write=True, name="admin")
    reader = add(path, ["docs"], name="reader")
    text = path.read_text()
    assert writer not in text and reader not in text and digest(reader) in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    keys = Keys.load(path)
    assert keys.find(writer).can_write("anything")
    r = keys.find(reader)
    assert r.name == "reader" and r.can_read("docs") and not r.can_read("other") and not r.can_write("docs")
    assert keys.find("rag-wrong") is None and keys.find("") is None and keys.find(None) is None
    (tmp_path / "bad.json").write_text('{"keys": [{"sha256": "abc", "indexes": ["x"]}]}')
    with pytest.raises(Exception, match="64 hex digits"):
        Keys.load(tmp_path / "bad.json")


def test_refuses_a_public_address_without_keys(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rag.cli", "serve", "--host", "0.0.0.0", "--index", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "without --keys" in r.stderr and "Traceback" not in r.stderr


# --- a real server ---------------------------------------------------------------------------

class Server:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keys = root / "keys.json"
        self.admin = add(keys, ["*"], write=True, name="admin")
        self.reader = add(keys, ["docs"], name="reader")
        self.other = add(keys, ["other"], name="other")
        self.log = open(root / "server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve", "--index", str(root / "docs"), "--index", str(root / "other"),
             "--port", str(self.port), "--keys", str(keys), "--queue", "3", "--deadline", "60"],
            cwd=root, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        wait_ready(self.proc, self.url, root / "server.log", 300, 0.5)

    def headers(self, key: str | None) -> dict:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def get(self, path, key="admin", **kw):
        return httpx.get(self.url + path, headers=self.headers(getattr(self, key) if key else None), timeout=120, **kw)

    def post(self, path, key="admin", **kw):
        return httpx.post(self.url + path, headers=self.headers(getattr(self, key) if key else None), timeout=120, **kw)

    def chat(self, question, key="admin", model="docs", **extra):
        return self.post("/v1/chat/completions", key,
                         json={"model": model, "messages": [{"role": "user", "content": question}], **extra})

    def alive(self) -> bool:
        return self.proc.poll() is None and self.get("/healthz", None).json() == {"status": "ok"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    s = Server(root)
    r = s.post("/v1/indexes/docs/documents", files=[("files", (n, t.encode())) for n, t in DOCS.items()])
    assert r.status_code == 200 and r.json()["added"] == 3, r.text
    r = s.post("/v1/indexes/other/documents", files={"files": ("zebra.txt", b"Zebras have black and white stripes.")})
    assert r.status_code == 200 and r.json()["added"] == 1, r.text
    s.alone = {q: s.chat(q).json()["answer"] for q in QUESTIONS}
    yield s
    if s.proc.poll() is None:
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(30)
    s.log.close()


def error(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    assert e["message"] and e["type"] and "code" in e
    return e


@pytest.mark.slow
def test_health_models_info_documents(server):
    assert server.get("/healthz", None).json() == {"status": "ok"}
    ready = server.get("/readyz", None).json()
    assert ready["status"] == "ready" and ready["indexes"] == ["docs", "other"]
    page = server.get("/docs", None).text
    assert "swagger" in page.lower() and "cdn" not in page  # works offline: the files are served here
    assert server.get("/docs-assets/swagger-ui-bundle.js", None).status_code == 200
    assert "/v1/chat/completions" in server.get("/openapi.json", None).json()["paths"]
    assert [m["id"] for m in server.get("/v1/models").json()["data"]] == ["docs", "other"]
    assert [m["id"] for m in server.get("/v1/models", "reader").json()["data"]] == ["docs"]
    assert server.get("/v1/models/docs", "reader").json()["id"] == "docs"
    info = server.get("/v1/indexes/docs").json()
    assert info["name"] == "docs" and info["documents"] == 3 and info["chunks"] >= 3
    docs = server.get("/v1/indexes/docs/documents", "reader").json()["data"]
    assert sorted(Path(d["path"]).name for d in docs) == sorted(DOCS)
    assert all(d["status"] == "ok" and d["chunks"] >= 1 for d in docs)


@pytest.mark.slow
def test_openai_client_reads_answer_and_sources(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key=server.reader, max_retries=0)
    r = client.chat.completions.create(model="docs", messages=[{"role": "user", "content": QUESTIONS[0]}])
    text = r.choices[0].message.content
    assert "1822" in text and r.choices[0].finish_reason == "stop" and r.model == "docs"
    extra = r.model_extra
    assert extra["found"] is True and extra["short_answer"] and extra["timings"]["total_ms"] > 0
    sources = extra["sources"]
    assert sources[0]["source"].endswith("lighthouse.md") and "1822" in sources[0]["text"]
    assert set(sources[0]) >= {"n", "source", "page", "heading", "score", "text", "cited", "evidence"}
    assert any(s["cited"] for s in sources)

    content, last, drafts = "", None, 0
    for chunk in client.chat.completions.create(model="docs", stream=True,
                                                messages=[{"role": "user", "content": QUESTIONS[0]}]):
        content += chunk.choices[0].delta.content or ""
        drafts += bool((chunk.model_extra or {}).get("rag_draft"))
        last = chunk
    assert content == text  # only appended to: no draft ever in the content
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["sources"] == sources and last.model_extra["found"] is True

    # a follow-up: "it" is the Fresnel lens of the previous question
    r = client.chat.completions.create(model="docs", messages=[
        {"role": "system", "content": "ignored"}, {"role": "user", "content": "Who invented the Fresnel lens?"},
        {"role": "assistant", "content": "Augustin-Jean Fresnel"}, {"role": "user", "content": "When was it invented?"}])
    assert r.model_extra["sources"][0]["source"].endswith("lighthouse.md")

    e = client.embeddings.create(model="docs", input=["lighthouse", "honey bees"])  # base64 by default
    assert len(e.data) == 2 and len(e.data[0].embedding) == 384
    assert abs(sum(x * x for x in e.data[0].embedding) - 1) < 1e-3


@pytest.mark.slow
def test_langchain_chat_openai(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(base_url=server.url + "/v1", api_key=server.reader, model="docs",
                                      max_retries=0)
    reply = llm.invoke(QUESTIONS[0])
    assert reply.content == server.alone[QUESTIONS[0]]
    assert "".join(c.content for c in llm.stream(QUESTIONS[0])) == server.alone[QUESTIONS[0]]


@pytest.mark.slow
def test_search_embeddings_and_ask_over_http(server):
    r = server.post("/v1/search", "reader", json={"index": "docs", "query": "waggle dance", "k": 2})
    hits = r.json()["hits"]
    assert r.status_code == 200 and len(hits) == 2
    assert list(hits[0]) == ["rank", "score", "source", "page", "heading", "text", "chunk_id"]
    assert hits[0]["source"].endswith("bees.txt")
    assert server.post("/v1/search", json={"model": "docs", "query": "Etna", "mode": "keyword"}).json()["hits"][0][
        "source"].endswith("volcano.html")
    r = server.post("/v1/embeddings", json={"model": "docs", "input": "lighthouse", "input_type": "query"})
    assert len(r.json()["data"][0]["embedding"]) == 384

    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", QUESTIONS[1], "--server", server.url,
                        "--index", "docs", "--json"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "RAG_API_KEY": server.reader})
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["answer"] == server.alone[QUESTIONS[1]] and answer["sources"][0]["source"].endswith("bees.txt")
    assert time.monotonic() - start < 30
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", QUESTIONS[1], "--server", server.url,
                        "--index", "other"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "RAG_API_KEY": server.reader})
    assert r.returncode == 2 and "403" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_upload_names_rights_and_remove(server, tmp_path):
    r = server.post("/v1/indexes/docs/documents", "reader", files={"files": ("a.txt", b"x")})
    assert error(r, 403)["code"] == "write_forbidden"
    r = server.post("/v1/indexes/docs/documents", files=[
        ("files", ("../../escape.txt", b"The harbour of Valletta has a blue crane.")),
        ("files", ("tool.exe", b"MZ binary"))])
    report = r.json()
    assert r.status_code == 200 and report["added"] == 1, r.text
    assert report["failed"][0]["path"] == "tool.exe" and "unsupported" in report["failed"][0]["reason"]
    assert not (server.root.parent / "escape.txt").exists() and not (server.root / "escape.txt").exists()
    saved = server.root / "docs" / "uploads" / "escape.txt"
    assert saved.read_bytes() == b"The harbour of Valletta has a blue crane."
    hits = server.post("/v1/search", json={"index": "docs", "query": "blue crane Valletta", "k": 1}).json()["hits"]
    assert hits[0]["source"] == str(saved)

    r = httpx.delete(server.url + "/v1/indexes/docs/documents", params={"path": str(saved)},
                     headers=server.headers(server.reader))
    assert error(r, 403)["code"] == "write_forbidden"
    r = httpx.delete(server.url + "/v1/indexes/docs/documents", params={"path": str(saved)},
                     headers=server.headers(server.admin))
    assert r.json() == {"removed": 1}
    r = httpx.delete(server.url + "/v1/indexes/docs/documents", params={"path": str(saved)},
                     headers=server.headers(server.admin))
    assert error(r, 404)["code"] == "document_not_found"
    assert server.get("/v1/indexes/docs").json()["documents"] == 3


@pytest.mark.slow
def test_bad_input_is_a_json_error_and_the_server_serves_on(server):
    url = server.url + "/v1/chat/completions"
    auth = server.headers(server.admin)
    r = httpx.post(url, content=b'{"model": "docs", "messages": [', headers={**auth, "Content-Type": "application/json"})
    assert error(r, 400)["code"] == "invalid_json"
    assert error(server.post("/v1/chat/completions", json={"model": "docs", "messages": "hello"}), 422)["param"] == "messages"
    assert error(server.post("/v1/chat/completions", json={"model": 3}), 422)
    assert error(server.chat(QUESTIONS[0], k="many"), 422)["param"] == "k"
    assert error(server.chat(QUESTIONS[0], k=10_000), 422)["param"] == "k"
    assert error(server.chat(QUESTIONS[0], stream="perhaps"), 422)
    assert error(server.post("/v1/search", json={"index": "docs", "query": "x", "k": 0}), 422)
    assert error(server.post("/v1/embeddings", json={"model": "docs", "input": []}), 422)
    r = httpx.post(url, content=b"x" * (10 * 2**20), headers={**auth, "Content-Type": "application/json"}, timeout=60)
    assert error(r, 413)["code"] == "body_too_large"

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 2**16
    r = httpx.post(url, content=chunks(), headers={**auth, "Content-Type": "application/json"}, timeout=60)
    assert error(r, 413)["code"] == "body_too_large"
    assert error(server.chat(QUESTIONS[0], model="nope"), 404)["code"] == "model_not_found"
    assert error(server.chat(QUESTIONS[0], key=None), 401)["code"] == "invalid_api_key"
    assert error(httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer rag-forged"}), 401)
    assert error(server.chat(QUESTIONS[0], key="reader", model="other"), 403)["code"] == "index_forbidden"
    assert error(server.get("/v1/indexes/docs", "other"), 403)
    assert error(server.chat("why " * 25_000), 422)["code"] == "question_too_long"
    history = [{"role": "user", "content": "hi"}] * 40 + [{"role": "user", "content": QUESTIONS[0]}]
    assert error(server.post("/v1/chat/completions", json={"model": "docs", "messages": history}), 422)["code"] == \
        "history_too_long"
    assert error(server.post("/v1/chat/completions", json={
        "model": "docs", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
        422)["code"] == "no_question"
    assert error(server.get("/v1/nothing-here"), 404)
    assert server.alive()
    assert server.post("/v1/search", json={"index": "docs", "query": "Etna"}).status_code == 200


@pytest.mark.slow
def test_a_client_that_leaves_frees_its_place(server):
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", server.url + "/v1/chat/completions", headers=server.headers(server.admin),
                           json={"model": "docs", "stream": True,
                                 "messages": [{"role": "user", "content": QUESTIONS[2]}]}) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first chunk, then hang up
    body = json.dumps({"model": "docs", "messages": [{"role": "user", "content": QUESTIONS[2]}]}).encode()
    for _ in range(10):  # more than the line holds: each asks, then hangs up at once
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + server.admin.encode() +
                      b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.monotonic() + 30
    while server.get("/readyz", None).json()["answering"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.get("/readyz", None).json()["answering"] == 0  # no place kept by a client gone
    assert server.chat(QUESTIONS[2]).json()["answer"] == server.alone[QUESTIONS[2]]


@pytest.mark.slow
def test_load_mixed_search_and_chat(server):
    """24 clients for 15 s: no 5xx, a full line answers 429 with Retry-After, every answer is the
    one asked alone, searches do not wait behind generation, memory stays put."""
    before = rss_mb(server.proc.pid)
    stop = time.monotonic() + 15
    results, lock = [], threading.Lock()

    def client(n):
        with httpx.Client(timeout=90, headers=server.headers(server.admin)) as c:
            i = 0
            while time.monotonic() < stop:
                q = QUESTIONS[(n + i) % len(QUESTIONS)]
                start = time.monotonic()
                if (n + i) % 2:
                    r = c.post(server.url + "/v1/search", json={"index": "docs", "query": q, "k": 3})
                    kind = "search"
                else:
                    r = c.post(server.url + "/v1/chat/completions",
                               json={"model": "docs", "messages": [{"role": "user", "content": q}]})
                    kind = "chat"
                took = time.monotonic() - start
                body = r.json()
                with lock:
                    results.append((kind, r.status_code, took, q, body, r.headers.get("retry-after")))
                if r.status_code == 429:
                    time.sleep(0.2)
                i += 1

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(client, range(24)))
    statuses = {(k, s) for k, s, *_ in results}
    assert statuses <= {("search", 200), ("chat", 200), ("chat", 429)}, statuses
    chats = [r for r in results if r[0] == "chat" and r[1] == 200]
    assert chats and all(body["answer"] == server.alone[q] for _, _, _, q, body, _ in chats)
    assert all(ra and int(ra) >= 1 for k, s, _, _, _, ra in results if s == 429)
    assert any(s == 429 for _, s, *_ in results)
    searches = sorted(t for k, s, t, *_ in results if k == "search")
    chat_times = sorted(r[2] for r in chats)
    assert searches[len(searches) // 2] < chat_times[len(chat_times) // 2]
    assert rss_mb(server.proc.pid) - before < 400
    assert server.alive()


@pytest.mark.slow
def test_sigterm_lets_the_answer_in_flight_finish(server):
    """Last: stops the module's server."""
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("r", server.chat(QUESTIONS[0])))
    t.start()
    deadline = time.monotonic() + 20
    while not server.get("/readyz", None).json()["answering"] and time.monotonic() < deadline:
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGTERM)
    t.join(120)
    assert got["r"].status_code == 200 and got["r"].json()["answer"] == server.alone[QUESTIONS[0]]
    assert server.proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
