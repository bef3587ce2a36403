"""`rag serve`: the HTTP API. OpenAI-compatible chat, models and embeddings (any OpenAI client
works unchanged) with the answer's sources as extra fields, plus rag's own search, index and
document endpoints. A thin layer over `rag.RAG`, like the CLI and the web page.

Under load: searches run in a thread pool and never wait behind generation; generation goes
through a bounded line in front of the one decoder (full: 429 with Retry-After); a client that
leaves frees its place; every request has a total deadline; SIGTERM lets in-flight requests
finish (uvicorn's graceful shutdown) and an upload's ingest reach its commit."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import ipaddress
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.core.errors import BadIndex, IndexLocked, RagError
from rag.http.keys import Key, Keys

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """What one request may ask for; over a limit is a JSON error, never a slow server."""
    max_body_bytes: int = 1 * 2**20  # JSON requests
    max_upload_bytes: int = 64 * 2**20  # one multipart upload (each file also under max_file_mb)
    max_question_chars: int = 4000
    max_history: int = 32  # earlier messages of a conversation
    max_message_chars: int = 16000  # each earlier message
    max_k: int = 50
    max_tokens: int = 512
    max_embed_inputs: int = 256
    max_embed_chars: int = 8000
    waiting: int = 8  # questions in line for the decoder beyond the one it answers
    deadline_s: float = 120.0  # total time for one request, waiting included
    search_threads: int = 4


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
             422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 504: "timeout_error"}

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# --- request bodies ----------------------------------------------------------------------

class Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[Part] | None = None


class ChatRequest(BaseModel):
    """OpenAI's chat request; fields rag does not use (temperature, top_p, ...) are accepted and
    ignored (answers are greedy and copied from the passages). `k` and `mode` are rag's own."""
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    k: int | None = Field(None, ge=1)
    mode: Literal["dense", "keyword", "hybrid"] | None = None


class SearchRequest(BaseModel):
    query: str
    index: str | None = None
    model: str | None = None  # OpenAI clients name the index `model`: either works
    k: int = Field(5, ge=1)
    mode: Literal["dense", "keyword", "hybrid"] | None = None


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["passage", "query"] = "passage"  # rag's own: e5 encodes questions differently


HIT_KEYS = ("rank", "score", "source", "page", "heading", "text", "chunk_id")  # as `rag search --json`
OPENAI_KEYS = {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}


# --- the line in front of the decoder ------------------------------------------------------

class Ticket:
    def __init__(self, gate: "Gate"):
        self.gate, self.released = gate, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate._leave()


class Gate:
    """`running` questions at the decoder and up to `waiting` in line (FIFO); anyone past that
    is told to come back (429, Retry-After from recent answer times). Lives on the event loop."""

    def __init__(self, running: int, waiting: int):
        self.running, self.waiting = running, waiting
        self.inside = 0  # in line or answering
        self._sem: asyncio.Semaphore | None = None
        self.seconds = deque([2.0], maxlen=32)  # recent answer times

    def retry_after(self) -> int:
        mean = sum(self.seconds) / len(self.seconds)
        return max(1, min(120, math.ceil(mean * self.inside / self.running)))

    async def enter(self, deadline: float) -> Ticket:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.running)
        if self.inside >= self.running + self.waiting:
            raise ApiError(429, f"{self.inside} questions are being answered or waiting; try again shortly",
                           "queue_full", headers={"Retry-After": str(self.retry_after())})
        self.inside += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self.inside -= 1
            raise ApiError(504, "the question waited past its deadline for the decoder", "deadline_exceeded") from None
        except BaseException:  # the client left while waiting: its place is free
            self.inside -= 1
            raise
        return Ticket(self)

    def _leave(self) -> None:
        self.inside -= 1
        self._sem.release()


_END = object()


def _produce(rag, kwargs: dict, cancel: threading.Event, deadline: float, loop, queue: asyncio.Queue) -> None:
    """Run `rag.stream` in a worker thread, handing each item to the event loop; stops as soon
    as the client is gone or the deadline passes (closing the stream stops the decoder)."""
    def put(item):
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening
            cancel.set()

    stream = rag.stream(**kwargs)
    try:
        for item in stream:
            if cancel.is_set() or time.monotonic() > deadline:
                break
            put(item)
    except BaseException as e:  # noqa: BLE001 - handed to the request, which answers with it
        put(e)
    finally:
        stream.close()
        put(_END)


# --- the app -------------------------------------------------------------------------------

def default_indexes() -> list[str]:
    """Without --index: every index under indexes/, else `default` (made by the first upload)."""
    from rag.index.store import is_index_dir

    root = Path("indexes")
    found = sorted(p.name for p in root.iterdir() if is_index_dir(p)) if root.is_dir() else []
    return found or ["default"]


class State:
    def __init__(self, indexes: list[str], keys: Keys | None, limits: Limits):
        from rag.core.paths import index_name
        from rag.qa import RAG

        self.keys, self.limits = keys, limits
        self.indexes: dict = {}
        for spec in indexes:
            name = index_name(spec)
            if name in self.indexes:
                raise RagError(f"two indexes are both named {name!r}; serve one of them, or rename a folder")
            self.indexes[name] = RAG(spec)
        self.gate = Gate(1, limits.waiting)
        self.search_pool = concurrent.futures.ThreadPoolExecutor(limits.search_threads, "rag-search")
        self.answer_pool = concurrent.futures.ThreadPoolExecutor(2, "rag-answer")
        self.write_pool = concurrent.futures.ThreadPoolExecutor(1, "rag-write")
        self.ready = threading.Event()
        self.warm: dict = {}
        self.warm_error: str | None = None

    def warm_up(self) -> None:
        from rag.index.store import is_index_dir

        try:
            start = time.perf_counter()
            for rag in self.indexes.values():
                rag.encoder.model  # each index's encoder (shared when two use the same one)
                if is_index_dir(rag.root):
                    rag.store  # opened once here, not by the first searches at once
            first = next(iter(self.indexes.values()))
            self.warm = {**first.warm_up(), "total_s": round(time.perf_counter() - start, 2)}
            self.ready.set()
            log.info("models loaded in %.1f s", self.warm["total_s"])
        except Exception as e:  # noqa: BLE001 - /readyz reports it
            self.warm_error = f"{type(e).__name__}: {e}"
            log.error("warm-up failed: %s", self.warm_error)

    def close(self) -> None:
        for pool in (self.write_pool, self.answer_pool, self.search_pool):
            pool.shutdown(wait=True)  # an upload's ingest reaches its commit


def create_app(indexes: list[str] | None = None, keys: Keys | None = None, limits: Limits | None = None,
               warm: bool = True) -> FastAPI:
    """The ASGI app (uvicorn runs it; tests may too). `warm`: load the models at start."""
    state = State(indexes or default_indexes(), keys, limits or Limits())

    @asynccontextmanager
    async def lifespan(app):
        if warm:
            threading.Thread(target=state.warm_up, name="rag-warm-up", daemon=True).start()
        else:
            state.ready.set()
        yield
        await asyncio.get_running_loop().run_in_executor(None, state.close)

    app = FastAPI(title="rag", version=_version(), lifespan=lifespan, docs_url=None,
                  description="Answers with sources from your indexed documents. OpenAI-compatible "
                              "(`/v1/chat/completions`, `/v1/models`, `/v1/embeddings`); see docs/api.md.")
    app.state.rag = state
    app.add_middleware(BodyLimit, state=state)
    _offline_docs(app)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        if first.get("type") == "json_invalid":
            return ApiError(400, f"the body is not valid JSON ({first.get('msg', '')})", "invalid_json").response()
        return ApiError(422, f"{where or 'body'}: {first.get('msg', 'invalid')}", "invalid_value", where).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(e.status_code, "http_error")
        return ApiError(e.status_code, str(e.detail), code).response()

    @app.exception_handler(RagError)
    async def _rag_error(request, e: RagError):
        return _rag_api_error(e).response()

    @app.exception_handler(Exception)
    async def _crash(request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": {"message": f"internal error ({type(e).__name__})", "type": "server_error",
                                       "param": None, "code": "internal_error"}}, status_code=500)

    def principal(request: Request) -> Key | None:
        if state.keys is None:
            return None
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("x-api-key")
        key = state.keys.find(token)
        if key is None:
            raise ApiError(401, "missing or unknown API key: send `Authorization: Bearer KEY`", "invalid_api_key")
        return key

    def readable(key: Key | None) -> list[str]:
        return [n for n in state.indexes if key is None or key.can_read(n)]

    def index(name: str | None, key: Key | None, write: bool = False, param: str = "model"):
        if not name:
            raise ApiError(422, f"{param}: name the index to use (GET /v1/models lists them)", "missing_index", param)
        rag = state.indexes.get(name)
        if rag is None:
            raise ApiError(404, f"no index named {name!r} on this server (GET /v1/models lists them)",
                           "model_not_found", param)
        if key is not None and not key.can_read(name):
            raise ApiError(403, f"this key may not read the index {name!r}", "index_forbidden", param)
        if write and key is not None and not key.can_write(name):
            raise ApiError(403, f"this key may not change the index {name!r} (read-only key)", "write_forbidden")
        return rag

    async def in_thread(pool, request: Request, fn, *args):
        """Run fn in a pool within the request's deadline."""
        deadline = request.state.deadline
        future = asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ApiError(504, "the request ran past its deadline", "deadline_exceeded") from None

    # --- health ----------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Models are loaded: questions are answered at full speed")
    async def readyz():
        if state.ready.is_set():
            return {"status": "ready", "indexes": list(state.indexes), "warm_up": state.warm,
                    "answering": state.gate.inside}
        if state.warm_error:
            return JSONResponse({"status": "failed", "error": state.warm_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    # --- OpenAI-compatible -------------------------------------------------------------------

    @app.get("/v1/models", tags=["openai"], summary="The indexes this key may read")
    async def models(key: Key | None = Depends(principal)):
        return {"object": "list", "data": [_model(n) for n in readable(key)]}

    @app.get("/v1/models/{name}", tags=["openai"], summary="One index, as an OpenAI model")
    async def model(name: str, key: Key | None = Depends(principal)):
        index(name, key)
        return _model(name)

    @app.post("/v1/chat/completions", tags=["openai"],
              summary="Answer the last user message from the index named by `model`, with sources")
    async def chat(body: ChatRequest, request: Request, key: Key | None = Depends(principal)):
        rag = index(body.model, key)
        kwargs = _chat_args(body, state.limits)
        ticket = await _or_gone(request, state.gate.enter(request.state.deadline))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        started = time.monotonic()
        try:
            future = state.answer_pool.submit(_produce, rag, kwargs, cancel, request.state.deadline, loop, queue)
        except BaseException:
            ticket.release()
            raise

        def finished(_):
            state.gate.seconds.append(time.monotonic() - started)
            try:
                loop.call_soon_threadsafe(ticket.release)
            except RuntimeError:
                pass

        future.add_done_callback(finished)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body.model}
        items = _items(queue, cancel, request.state.deadline)
        if body.stream:
            return StreamingResponse(_sse(items, meta, cancel), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            answer = await _or_gone(request, _last(items))
        finally:
            cancel.set()
        return _completion(answer, meta)

    @app.post("/v1/embeddings", tags=["openai"], summary="Vectors from the index's encoder")
    async def embeddings(body: EmbeddingsRequest, request: Request, key: Key | None = Depends(principal)):
        rag = index(body.model, key)
        texts = [body.input] if isinstance(body.input, str) else body.input
        lim = state.limits
        if not texts or len(texts) > lim.max_embed_inputs:
            raise ApiError(422, f"input: give 1 to {lim.max_embed_inputs} texts", "invalid_value", "input")
        if any(len(t) > lim.max_embed_chars for t in texts):
            raise ApiError(422, f"input: each text at most {lim.max_embed_chars} characters", "input_too_long", "input")

        def encode():
            if body.input_type == "query":
                return np.stack([rag.encoder.encode_query(t) for t in texts])
            return rag.encoder.encode(texts)

        vectors = await in_thread(state.search_pool, request, encode)
        data = []
        for i, v in enumerate(vectors):
            v = np.asarray(v, dtype="<f4")
            emb = base64.b64encode(v.tobytes()).decode() if body.encoding_format == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "data": data, "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    # --- rag's own ---------------------------------------------------------------------------

    @app.post("/v1/search", tags=["rag"], summary="The k best passages (as `rag search --json`)")
    async def search(body: SearchRequest, request: Request, key: Key | None = Depends(principal)):
        name = body.index or body.model
        rag = index(name, key, param="index")
        if body.k > state.limits.max_k:
            raise ApiError(422, f"k: at most {state.limits.max_k}", "invalid_value", "k")
        if len(body.query) > state.limits.max_question_chars:
            raise ApiError(422, f"query: at most {state.limits.max_question_chars} characters", "query_too_long", "query")
        start = time.perf_counter()
        search, translate = _existing(rag, "search"), _existing(rag, "translated_query")

        def translated_search(query, k, mode):  # a question in another language is searched in the index's
            searched = translate(query)
            return searched, search(query, k, mode)  # the translation is remembered

        searched, hits = await in_thread(state.search_pool, request, translated_search, body.query, body.k, body.mode)
        return {"object": "search.result", "index": name, "query": body.query, "searched_as": searched,
                "hits": [{k: getattr(h, k) for k in HIT_KEYS} for h in hits],
                "took_ms": round((time.perf_counter() - start) * 1000, 1)}

    @app.get("/v1/indexes/{name}", tags=["rag"], summary="What the index holds (as `rag info --json`)")
    async def info(name: str, request: Request, key: Key | None = Depends(principal)):
        rag = index(name, key, param="name")
        return {"name": name, **asdict(await in_thread(state.search_pool, request, _existing(rag, "info")))}

    @app.get("/v1/indexes/{name}/documents", tags=["rag"], summary="The documents of the index")
    async def documents(name: str, request: Request, key: Key | None = Depends(principal)):
        rag = index(name, key, param="name")
        docs = await in_thread(state.search_pool, request, _existing(rag, "documents"))
        return {"object": "list", "index": name, "data": [asdict(d) for d in docs]}

    @app.post("/v1/indexes/{name}/documents", tags=["rag"],
              summary="Upload files (multipart, field `files`) and ingest them; returns the ingest report")
    async def upload(name: str, request: Request, key: Key | None = Depends(principal)):
        rag = index(name, key, write=True, param="name")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(422, "send the files as multipart/form-data (field `files`)", "not_multipart")
        try:
            form = await request.form(max_files=64, max_fields=64)
        except BodyTooLarge:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed multipart body
            raise ApiError(400, f"cannot read the multipart body ({e})", "invalid_multipart") from None
        files = [(f.filename or "upload", await f.read()) for _, f in form.multi_items() if hasattr(f, "read")]
        await form.close()
        if not files:
            raise ApiError(422, "no files in the upload (multipart field `files`)", "no_files", "files")
        # waits for another writer of the index (the web page, `rag ingest`) up to 30 s
        report = await asyncio.get_running_loop().run_in_executor(state.write_pool, rag.upload, files)
        return report.to_dict()

    @app.delete("/v1/indexes/{name}/documents", tags=["rag"],
                summary="Remove a document (or all under a folder) by the path the list shows")
    async def remove(name: str, path: str, request: Request, key: Key | None = Depends(principal)):
        rag = index(name, key, write=True, param="name")
        removed = await asyncio.get_running_loop().run_in_executor(state.write_pool, _existing(rag, "remove"), path)
        if not removed:
            raise ApiError(404, f"no document at {path!r} in {name!r} (GET .../documents lists them)",
                           "document_not_found", "path")
        return {"removed": removed}

    return app


def _offline_docs(app: FastAPI) -> None:
    """The API docs page at /docs with Swagger UI's files served from the swagger-ui-bundle
    package: FastAPI's default loads them from a CDN, a blank page on a machine offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="rag API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css", swagger_favicon_url="")


def _model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "rag"}


def _existing(rag, method: str):
    """rag.<method>, with a missing index reported as 404 rather than a usage error."""
    def call(*args):
        from rag.index.store import is_index_dir

        if not is_index_dir(rag.root):
            raise ApiError(404, f"the index {rag.root.name!r} has no documents yet: upload some", "index_empty")
        return getattr(rag, method)(*args)
    return call


def _rag_api_error(e: RagError) -> ApiError:
    if isinstance(e, IndexLocked):
        return ApiError(409, str(e), "index_locked", headers={"Retry-After": "5"})
    if isinstance(e, BadIndex):
        return ApiError(503, str(e), "index_unavailable")
    return ApiError(400, str(e), "invalid_request")


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text or "" for p in content if p.type in ("text", "input_text"))


def _chat_args(body: ChatRequest, lim: Limits) -> dict:
    """The question (the last user message) and the conversation before it, within the limits."""
    turns = [m for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(422, "messages: the last message must be the user's question", "no_question", "messages")
    question = _text(turns[-1].content).strip()
    if not question:
        raise ApiError(422, "messages: the question is empty", "empty_question", "messages")
    if len(question) > lim.max_question_chars:
        raise ApiError(422, f"messages: the question is {len(question)} characters; at most "
                            f"{lim.max_question_chars}", "question_too_long", "messages")
    history = [{"role": m.role, "content": _text(m.content)} for m in turns[:-1]]
    if len(history) > lim.max_history:
        raise ApiError(422, f"messages: at most {lim.max_history} earlier messages", "history_too_long", "messages")
    if any(len(h["content"]) > lim.max_message_chars for h in history):
        raise ApiError(422, f"messages: an earlier message is over {lim.max_message_chars} characters",
                       "message_too_long", "messages")
    if body.k is not None and body.k > lim.max_k:
        raise ApiError(422, f"k: at most {lim.max_k}", "invalid_value", "k")
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None:
        max_tokens = min(max_tokens, lim.max_tokens)
    return {"question": question, "history": history or None, "k": body.k, "mode": body.mode,
            "max_tokens": max_tokens}


async def _or_gone(request: Request, awaitable):
    """Await, but give up (freeing what it held) when the client disconnects."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ApiError(499, "the client went away", "client_closed")
    finally:
        if not task.done():
            task.cancel()


async def _items(queue: asyncio.Queue, cancel: threading.Event, deadline: float):
    """The answer's drafts, then the Answer, as the worker thread produces them."""
    from rag.core.records import Answer

    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ApiError(504, "the answer ran past the request's deadline", "deadline_exceeded") from None
            if item is _END:
                raise ApiError(504, "the answer was stopped before it finished", "deadline_exceeded")
            if isinstance(item, RagError):
                raise _rag_api_error(item)
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Answer):
                return
    finally:
        cancel.set()


async def _last(items):
    last = None
    async for item in items:
        last = item
    return last


def _extras(answer) -> dict:
    """The answer's own fields (sources, short_answer, found, timings, ...) passed through."""
    return {k: v for k, v in answer.to_dict().items() if k not in OPENAI_KEYS}


def _usage(answer) -> dict:
    tokens = int(getattr(answer.timings, "tokens", 0) or 0)
    return {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}


def _completion(answer, meta: dict) -> dict:
    return {**_extras(answer), **meta, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": _usage(answer)}


async def _sse(items, meta: dict, cancel: threading.Event):
    """OpenAI's chunks. Drafts (the decoder's raw span, replaced by the composed answer) go only
    in `rag_draft`, never in the content: the content is only ever appended to."""
    import json

    from rag.core.records import Answer

    def chunk(delta: dict, finish=None, **extra) -> str:
        body = {**extra, **meta, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for item in items:
            if isinstance(item, Answer):
                yield chunk({"content": item.text})
                yield chunk({}, "stop", **_extras(item), usage=_usage(item))
            else:
                yield chunk({}, rag_draft=str(getattr(item, "text", item)))
    except ApiError as e:
        yield f"data: {json.dumps(json.loads(e.response().body), ensure_ascii=False)}\n\n"
    except Exception as e:  # noqa: BLE001 - the status line is sent: the error goes in the stream
        log.exception("answer failed")
        yield f"data: {json.dumps({'error': {'message': f'internal error ({type(e).__name__})', 'type': 'server_error', 'param': None, 'code': 'internal_error'}})}\n\n"
    finally:
        cancel.set()
    yield "data: [DONE]\n\n"


# --- body size ------------------------------------------------------------------------------

class BodyTooLarge(StarletteHTTPException):
    """Raised while the body arrives (no Content-Length); an HTTPException so FastAPI's body
    parsing passes it on instead of calling it a parse error."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the {_size(limit)} limit")


UPLOAD_PATH = re.compile(r"^/v1/indexes/[^/]+/documents/?$")
DRAIN_BYTES = 256 * 2**20  # an oversized body is read (and dropped) up to this, so the client sees the 413


class BodyLimit:
    """Refuse bodies over the limit (uploads have their own) with 413, before anything parses them."""

    def __init__(self, app, state: State):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        lim = self.state.limits
        upload = scope["method"] == "POST" and UPLOAD_PATH.match(scope["path"])
        limit = lim.max_upload_bytes if upload else lim.max_body_bytes
        scope.setdefault("state", {})["deadline"] = time.monotonic() + lim.deadline_s
        too_large = ApiError(413, f"the request body is over the {_size(limit)} limit", "body_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            if int(length) <= DRAIN_BYTES:
                while (await receive()).get("more_body"):
                    pass
            return await too_large.response()(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n // 1024} KB"


def _version() -> str:
    """The installed package's version (pyproject.toml), read without importing `rag` itself."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rag")
    except PackageNotFoundError:
        return "unknown"


# --- entry point ----------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(indexes: list[str] | None = None, host: str = "127.0.0.1", port: int = 8000,
          keys_file: str | None = None, limits: Limits | None = None) -> None:
    """Run the API until SIGINT/SIGTERM; in-flight requests finish first."""
    import sys

    import uvicorn

    if not is_loopback(host) and not keys_file:
        raise RagError(f"refusing to listen on {host} without --keys FILE (anyone who reaches it could read "
                       f"and change the indexes); make one with `python -m rag.keys add keys.json --index NAME`")
    keys = Keys.load(keys_file) if keys_file else None
    limits = limits or Limits()
    app = create_app(indexes, keys, limits)
    names = ", ".join(app.state.rag.indexes)
    shown = f"[{host}]" if ":" in host else host
    print(f"rag serve: http://{shown}:{port}  (indexes: {names}; API docs at /docs; "
          f"{'keys from ' + keys_file if keys else 'no keys: this machine only'}; Ctrl+C stops)", file=sys.stderr)
    # uvicorn logs request lines, never headers: keys stay out of the logs
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning",
                timeout_graceful_shutdown=int(limits.deadline_s) + 5)
