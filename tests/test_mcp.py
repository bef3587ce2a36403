"""The MCP door (rag/mcp/) through the SDK's own client, against real processes: `rag mcp` over
stdio and `rag serve`'s /mcp over Streamable HTTP, with keys. The fake models (RAG_ENCODER=fake,
RAG_GENERATOR=fake: rag/models/fakes.py) keep these fast; one slow test answers with the real
default models over stdio."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from conftest import free_port, wait_ready, write_corpus
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from rag.http.keys import add
from rag.qa import RAG

FAKE_ENV = {"RAG_ENCODER": "fake", "RAG_GENERATOR": "fake", "RAG_TRANSLATOR": "off", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TOOLS = {"search", "ask", "list_indexes", "list_documents"}


@pytest.fixture(scope="module")
def indexes(tmp_path_factory) -> Path:
    """indexes/alpha (the corpus and a PDF) and indexes/beta (zebras), with the fake encoder."""
    root = tmp_path_factory.mktemp("mcp")
    RAG(root / "indexes" / "alpha", encoder="fake", translator="off").ingest([write_corpus(root / "docs")])
    (root / "zoo").mkdir()
    (root / "zoo" / "zebra.txt").write_text("Zebras have black and white stripes on their striped coats.\n")
    RAG(root / "indexes" / "beta", encoder="fake", translator="off").ingest([root / "zoo"])
    return root


def run(session_fn, client, *args):
    """Open an MCP session over `client` (a transport's context manager) and run session_fn in it."""
    async def main():
        async with client as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await session_fn(session, *args)
    return anyio.run(main)


def stdio(root: Path, *names: str, env: dict | None = None):
    args = ["-m", "rag.cli", "mcp"] + [a for n in names for a in ("--index", n)]
    env = {**(FAKE_ENV if env is None else env), **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}
    return stdio_client(StdioServerParameters(command=sys.executable, args=args, cwd=root, env=env),
                        errlog=open(root / "mcp-stderr.log", "a"))


def data(result) -> dict:
    assert not result.is_error, result.content
    return result.structured_content


def error_line(result) -> str:
    assert result.is_error, result.structured_content
    text = result.content[0].text
    assert "\n" not in text and "Traceback" not in text
    return text


# --- stdio -----------------------------------------------------------------------------------

async def _stdio_session(session: ClientSession):
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert TOOLS <= set(tools) and tools["search"].output_schema and tools["ask"].output_schema
    assert data(await session.call_tool("list_indexes", {}))["indexes"][0]["name"] == "alpha"
    docs = data(await session.call_tool("list_documents", {}))["documents"]
    assert {Path(d["path"]).name for d in docs} == {"lighthouse.md", "bees.txt", "volcano.html", "report.pdf"}

    found = data(await session.call_tool("search", {"query": "Who invented the Fresnel lens?", "k": 3}))
    top = found["hits"][0]
    assert found["index"] == "alpha" and top["source"].endswith("lighthouse.md") and "Fresnel" in top["text"]
    assert 0 <= top["start"] < top["end"] and top["rank"] == 1
    pdf = data(await session.call_tool("search", {"query": "annual rainfall in Valletta", "index": "alpha"}))["hits"][0]
    assert pdf["source"].endswith("report.pdf") and pdf["page"] == 2, pdf

    drafts = []

    async def progress(n, total, message):
        drafts.append(message)

    answer = data(await session.call_tool("ask", {"question": "Who invented the Fresnel lens?"},
                                          progress_callback=progress))
    assert answer["found"] and "Fresnel" in answer["answer"] and answer["question"] == "Who invented the Fresnel lens?"
    cited = [s for s in answer["sources"] if s["cited"]]
    assert cited and cited[0]["source"].endswith("lighthouse.md") and cited[0]["end"] > cited[0]["start"]
    assert {"short_answer", "confidence", "supporting", "timings"} <= set(answer)
    assert drafts and "Fresnel" in "".join(drafts)
    follow = data(await session.call_tool("ask", {"question": "and who kept them?", "history": [
        {"role": "user", "content": "Who invented the Fresnel lens?"}, {"role": "assistant", "content": "Fresnel"}]}))
    assert follow["sources"]

    # bad arguments are tool errors with one line; the session goes on
    assert "k must be between 1 and 50" in error_line(await session.call_tool("search", {"query": "bees", "k": 10**9}))
    assert data(await session.call_tool("search", {"query": "waggle dance bees", "k": 1}))["hits"][0]["source"].endswith(
        "bees.txt")
    assert "empty" in error_line(await session.call_tool("ask", {"question": "  \n"}))
    assert "at most 4000" in error_line(await session.call_tool("ask", {"question": "x" * 2**20}))
    assert "no index named 'nope'" in error_line(await session.call_tool("search", {"query": "bees", "index": "nope"}))
    assert data(await session.call_tool("list_indexes", {}))["indexes"][0]["documents"] == 4


def test_stdio_tools_search_ask_and_bad_arguments(indexes):
    run(_stdio_session, stdio(indexes, "alpha"))
    assert "rag mcp: serving alpha" in (indexes / "mcp-stderr.log").read_text()


async def _two_indexes(session: ClientSession):
    names = [i["name"] for i in data(await session.call_tool("list_indexes", {}))["indexes"]]
    assert names == ["alpha", "beta"]
    assert "name the index: one of alpha, beta" in error_line(await session.call_tool("search", {"query": "zebras"}))
    hit = data(await session.call_tool("search", {"query": "zebras stripes", "index": "beta"}))["hits"][0]
    assert hit["source"].endswith("zebra.txt")


def test_stdio_serves_several_indexes(indexes):
    run(_two_indexes, stdio(indexes, "alpha", "beta"))


# --- Streamable HTTP on rag serve ------------------------------------------------------------

class Serve:
    def __init__(self, root: Path):
        keys = root / "keys.json"
        keys.unlink(missing_ok=True)
        self.admin, self.alpha = add(keys, ["*"], name="admin"), add(keys, ["alpha"], name="alpha")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "serve.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--index", "alpha", "--index", "beta",
                                      "--port", str(self.port), "--keys", str(keys)], cwd=root, stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**os.environ, **FAKE_ENV})
        wait_ready(self.proc, self.url, root / "serve.log", 120, 0.3)

    def client(self, key: str | None):
        headers = {"Authorization": f"Bearer {key}"} if key else None
        return streamable_http_client(self.url + "/mcp", http_client=create_mcp_http_client(headers=headers))


@pytest.fixture(scope="module")
def serve(indexes):
    s = Serve(indexes)
    yield s
    s.proc.send_signal(signal.SIGTERM)
    s.proc.wait(30)
    s.log.close()


def test_http_refuses_a_session_without_a_key(serve):
    for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        r = httpx.post(serve.url + "/mcp", headers={**headers, "Accept": "application/json, text/event-stream"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(BaseException) as refused:  # the SDK's client: its initialize is refused
        run(lambda session: session.list_tools(), serve.client(None))
    assert "Server returned an error response" in repr(refused.value)
    r = httpx.post(serve.url + "/mcp", headers={"Authorization": f"Bearer {serve.admin}"}, content=b"x" * (2**20 + 1))
    assert r.status_code == 413  # the API's body limit


async def _admin(session: ClientSession):
    assert TOOLS <= {t.name for t in (await session.list_tools()).tools}
    assert [i["name"] for i in data(await session.call_tool("list_indexes", {}))["indexes"]] == ["alpha", "beta"]
    assert data(await session.call_tool("search", {"query": "zebras stripes", "index": "beta"}))["hits"][0][
        "source"].endswith("zebra.txt")
    answer = data(await session.call_tool("ask", {"question": "Who invented the Fresnel lens?", "index": "alpha"}))
    assert answer["found"] and "Fresnel" in answer["answer"]
    assert any(s["cited"] and s["source"].endswith("lighthouse.md") for s in answer["sources"])
    assert "k must be" in error_line(await session.call_tool("search", {"query": "x", "index": "alpha", "k": 10**9}))
    pdf = data(await session.call_tool("search", {"query": "annual rainfall in Valletta", "index": "alpha"}))["hits"][0]
    assert pdf["source"].endswith("report.pdf") and pdf["page"] == 2


def test_http_answers_at_mcp(serve):
    run(_admin, serve.client(serve.admin))


async def _alpha_only(session: ClientSession):
    assert [i["name"] for i in data(await session.call_tool("list_indexes", {}))["indexes"]] == ["alpha"]
    hits = data(await session.call_tool("search", {"query": "zebras stripes", "k": 10}))["hits"]  # alpha, its only one
    assert hits and not any("zebra" in h["source"] or "Zebra" in h["text"] for h in hits)
    for tool, args in (("search", {"query": "zebras stripes", "index": "beta"}),
                       ("ask", {"question": "What do zebras have?", "index": "beta"}),
                       ("list_documents", {"index": "beta"})):
        text = error_line(await session.call_tool(tool, args))
        assert "no index named 'beta'" in text and "zebra" not in text.lower()
    assert {Path(d["path"]).name for d in data(await session.call_tool("list_documents", {}))["documents"]} == {
        "lighthouse.md", "bees.txt", "volcano.html", "report.pdf"}


def test_http_key_for_one_index_gets_nothing_of_another(serve):
    run(_alpha_only, serve.client(serve.alpha))


# --- the real models -------------------------------------------------------------------------

async def _real_answer(session: ClientSession):
    answer = data(await session.call_tool("ask", {"question": "When was the Fresnel lens invented?"}))
    assert answer["found"] and "1822" in answer["answer"], json.dumps(answer)[:2000]
    assert any(s["cited"] and s["source"].endswith("lighthouse.md") for s in answer["sources"])


@pytest.mark.slow
def test_stdio_real_models_answer(tmp_path):
    RAG(tmp_path / "indexes" / "real").ingest([write_corpus(tmp_path / "docs")])
    env = {k: v for k, v in FAKE_ENV.items() if not k.startswith("RAG_")}
    run(_real_answer, stdio(tmp_path, "real", env=env))
