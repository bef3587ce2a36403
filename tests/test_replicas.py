"""`rag serve --ray`: the relay of one request through a replica's app (fast), and the real
thing: Ray Serve with two answerer replicas and a writer on a local Ray, asked by the openai
client, under load, with a replica killed; and on a simulated cluster of three nodes."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_ready, write_corpus

from rag.core.errors import RagError
from rag.http.replicas import is_write, parse_replicas, relay

ROOT = Path(__file__).resolve().parents[1]


def test_replicas_flag():
    assert parse_replicas("2") == (2, 2)
    assert parse_replicas("1:4") == (1, 4)
    for bad in ("0", "3:2", "two", "1:x", "-1"):
        with pytest.raises(RagError):
            parse_replicas(bad)


def test_only_changes_go_to_the_writer():
    assert is_write("POST", "/v1/indexes/docs/documents")
    assert is_write("DELETE", "/v1/indexes/docs/documents")
    assert not is_write("GET", "/v1/indexes/docs/documents")
    assert not is_write("POST", "/v1/chat/completions")
    assert not is_write("POST", "/v1/search")


def _scope(path: str, method: str = "GET") -> dict:
    return {"type": "http", "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000), "headers": [(b"host", b"127.0.0.1:8000"),
                                                         (b"content-type", b"application/json")]}


async def _collect(app, scope, body=b""):
    return [m async for m in relay(app, scope, body)]


def test_relay_passes_the_body_and_streams_the_pieces():
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request):
        return {"got": (await request.json())["x"]}

    @app.get("/stream")
    async def stream():
        async def pieces():
            for i in range(3):
                yield f"piece {i}\n"
        return StreamingResponse(pieces(), media_type="text/plain")

    messages = asyncio.run(_collect(app, _scope("/echo", "POST"), b'{"x": 42}'))
    assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 200
    assert b'"got":42' in b"".join(m.get("body", b"") for m in messages[1:])
    messages = asyncio.run(_collect(app, _scope("/stream")))
    bodies = [m["body"] for m in messages if m["type"] == "http.response.body" and m.get("body")]
    assert bodies == [b"piece 0\n", b"piece 1\n", b"piece 2\n"]  # piece by piece, not joined


def test_relay_of_an_app_that_fails_is_a_500_not_a_hang():
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    messages = asyncio.run(asyncio.wait_for(_collect(broken, _scope("/")), 10))
    assert messages[0]["status"] == 500 and b"internal_error" in messages[1]["body"]


def test_relay_tells_the_app_when_the_caller_leaves():
    left = asyncio.Event()

    async def slow(scope, receive, send):
        await receive()  # the body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        if (await receive())["type"] == "http.disconnect":
            left.set()

    async def leave_after_first():
        stream = relay(slow, _scope("/"), b"")
        await stream.__anext__()
        await stream.__anext__()
        await stream.aclose()
        await asyncio.wait_for(left.wait(), 5)

    asyncio.run(leave_after_first())


# --- the real thing -----------------------------------------------------------------------------

QUESTION = "What is the annual rainfall in Valletta?"


class RayServer:
    """`rag serve --ray ...` as a child process, its log in a file."""

    def __init__(self, root: Path, index: Path, *extra: str, env: dict | None = None, seconds: float = 240):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / f"serve-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--index", str(index),
                                      "--port", str(self.port), "--ray", *extra], cwd=root, stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            wait_ready(self.proc, self.url, self.log_path, seconds, pause=1)
        except BaseException:
            self.stop()
            raise

    def replicas(self, role: str = "answerer") -> list[dict]:
        return [r for r in httpx.get(self.url + "/readyz", timeout=10).json().get("replicas", []) if r["role"] == role]

    def wait_replicas(self, n: int, role: str = "answerer", seconds: float = 120) -> list[dict]:
        """/readyz says ready from the first answerer on: the list, once all n have started."""
        deadline = time.monotonic() + seconds
        while len(found := self.replicas(role)) < n and time.monotonic() < deadline:
            time.sleep(1)
        return found

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    from rag import RAG

    root = tmp_path_factory.mktemp("replicas")
    docs = write_corpus(root / "docs")
    RAG(root / "docs-index").ingest(docs)
    return root, root / "docs-index"


def _chat(url: str, model: str, question: str, timeout: float = 120):
    return httpx.post(url + "/v1/chat/completions", timeout=timeout,
                      json={"model": model, "messages": [{"role": "user", "content": question}]})


async def _load(url: str, model: str, clients: int, seconds: float, during=None) -> tuple[dict, list]:
    codes: dict[int, int] = {}
    bodies = []
    end = time.monotonic() + seconds

    async def client(n):
        async with httpx.AsyncClient(timeout=120) as c:
            while time.monotonic() < end:
                r = await c.post(url + "/v1/chat/completions", json={
                    "model": model, "messages": [{"role": "user", "content": (QUESTION, "Who invented the Fresnel lens?")[n % 2]}]})
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code not in (200, 429):
                    bodies.append(r.text)

    extra = [asyncio.to_thread(during)] if during else []
    await asyncio.gather(*(client(n) for n in range(clients)), *extra)
    return codes, bodies


@pytest.mark.slow
def test_two_replicas_answer_as_one_process_survive_a_kill_and_see_uploads(indexed):
    import openai
    from fastapi.testclient import TestClient

    from rag.http.app import create_app

    root, index = indexed
    with TestClient(create_app([str(index)])) as one:  # the one-process server, as the peer
        alone = openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=one)
        expected = alone.chat.completions.create(model="docs-index", messages=[{"role": "user", "content": QUESTION}])
    server = RayServer(root, index, "local", "--replicas", "2")
    try:
        replicas = server.wait_replicas(2)
        assert len(replicas) == 2 and all(isinstance(r["pid"], int) for r in replicas), replicas
        assert len({r["pid"] for r in replicas}) == 2 and len(server.wait_replicas(1, "writer")) == 1
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="-")
        for _ in range(2):  # whichever replica answers
            got = client.chat.completions.create(model="docs-index", messages=[{"role": "user", "content": QUESTION}])
            assert got.choices[0].message.content == expected.choices[0].message.content
        assert "550" in got.choices[0].message.content

        codes, bodies = asyncio.run(_load(server.url, "docs-index", 8, 20))
        assert set(codes) <= {200, 429} and codes.get(200, 0) >= 5, (codes, bodies[:2])

        victim = server.replicas()[0]["pid"]

        def kill_and_wait():
            time.sleep(3)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            while time.monotonic() - killed < 90:
                try:
                    pids = [r["pid"] for r in server.replicas()]
                except (httpx.HTTPError, ValueError):
                    pids = []
                if len(pids) == 2 and victim not in pids:
                    return time.monotonic() - killed
                time.sleep(1)
            return None

        back = []
        codes, bodies = asyncio.run(_load(server.url, "docs-index", 8, 15, during=lambda: back.append(kill_and_wait())))
        failed = {c: n for c, n in codes.items() if c not in (200, 429)}
        assert set(failed) <= {503} and sum(failed.values()) <= 2, (codes, bodies[:2])
        assert all('"replica_died"' in b for b in bodies), bodies[:2]
        assert back and back[0] is not None and back[0] < 90, "the killed replica was not replaced within 90 s"

        upload = httpx.post(server.url + "/v1/indexes/docs-index/documents", timeout=120, files={
            "files": ("festival.txt", b"The zorblax festival is held every March in the town of Quillby.")})
        assert upload.status_code == 200 and upload.json()["added"] == 1, upload.text
        for _ in range(4):  # every later answer, whichever replica gives it
            r = _chat(server.url, "docs-index", "When is the zorblax festival held?")
            assert r.status_code == 200 and any(s["source"].endswith("festival.txt") for s in r.json()["sources"]), r.text
    finally:
        server.stop()
    assert server.proc.returncode is not None


@pytest.mark.slow
def test_replicas_spread_over_the_nodes_of_a_cluster(tmp_path):
    """A simulated cluster (ray.cluster_utils.Cluster: a head and two worker nodes, each its own
    raylet) with the scripted models: one replica per node, answered through the one ingress."""
    from ray.cluster_utils import Cluster

    from rag import RAG

    fakes = {"RAG_ENCODER": "fake", "RAG_GENERATOR": "fake", "RAG_TRANSLATOR": "off"}
    index = tmp_path / "fake-index"
    RAG(index, encoder="fake", generator="fake", translator="off").ingest(write_corpus(tmp_path / "docs"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        server = RayServer(tmp_path, index, cluster.address, "--replicas", "2", env=fakes, seconds=180)
        try:
            replicas = server.wait_replicas(2)
            assert len(replicas) == 2 and len({r["node"] for r in replicas}) == 2, replicas
            r = _chat(server.url, "fake-index", "Who invented the Fresnel lens?")
            assert r.status_code == 200 and r.json()["sources"], r.text
        finally:
            server.stop()
    finally:
        cluster.shutdown()
