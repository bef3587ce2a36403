"""`rag serve`: the HTTP API. OpenAI-compatible chat, models and embeddings (any OpenAI client
works unchanged) with the answer's sources as extra fields, plus rag's own search, index and
document endpoints. A thin layer over `rag.RAG`, like the CLI and the web page: this module
builds the app from the routers (health, chat, openai_routes, index_routes), answers every
error in one JSON shape, and runs it.

Under load: searches run in a thread pool and never wait behind generation; generation goes
through a bounded line in front of the one decoder (full: 429 with Retry-After); a client that
leaves frees its place; every request has a total deadline; SIGTERM lets in-flight requests
finish (uvicorn's graceful shutdown) and an upload's ingest reach its commit. The limits are
settings (`serve_*` in rag/core/settings.py: rag.toml, RAG_SERVE_*, --queue, --deadline)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.core.errors import RagError
from rag.core.settings import Settings
from rag.http import chat, health, index_routes, openai_routes
from rag.http.body import BodyLimit
from rag.http.connections import Guard, open_file_limit, quiet_logs
from rag.http.keys import Keys
from rag.http.protocol import ApiError, internal_error, rag_api_error
from rag.http.state import State, default_indexes

log = logging.getLogger(__name__)


def create_app(indexes: list[str] | None = None, keys: Keys | None = None, settings: Settings | None = None,
               warm: bool = True, stateless_mcp: bool = False) -> FastAPI:
    """The ASGI app (uvicorn runs it; tests may too). `warm`: load the models at start.
    `stateless_mcp`: /mcp keeps no session between requests (replicas.py: any replica may
    answer the next one)."""
    state = State(indexes or default_indexes(), keys, settings or Settings.load())

    @asynccontextmanager
    async def lifespan(app):
        if warm:
            threading.Thread(target=state.warm_up, name="rag-warm-up", daemon=True).start()
        else:
            state.ready.set()
        yield
        await asyncio.get_running_loop().run_in_executor(None, state.close)

    app = FastAPI(title="rag", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Answers with sources from your indexed documents. OpenAI-compatible "
                              "(`/v1/chat/completions`, `/v1/models`, `/v1/embeddings`); see docs/api.md.")
    app.state.rag = state
    s = state.settings
    app.add_middleware(BodyLimit, max_body_bytes=s.serve_max_body_bytes, max_upload_bytes=s.serve_max_upload_bytes,
                       deadline_s=s.serve_deadline)
    _offline_docs(app)
    _errors(app)
    for router in (health.router, openai_routes.models_router, chat.router, openai_routes.embeddings_router,
                   index_routes.search_router, index_routes.indexes_router):
        app.include_router(router)
    from rag.mcp.server import mount_mcp  # /mcp: the MCP tools, under the same keys and limits

    mount_mcp(app, state, stateless=stateless_mcp)
    return app


def _errors(app: FastAPI) -> None:
    """Every error, rag's or the framework's, as OpenAI's {"error": {...}} (protocol.ApiError)."""

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
        message = first.get("msg", "invalid")
        if first.get("type") == "value_error" and where is None:  # a body's own check names its field
            return ApiError(422, message.removeprefix("Value error, "), "invalid_value").response()
        return ApiError(422, f"{where or 'body'}: {message}", "invalid_value", where).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(e.status_code, "http_error")
        return ApiError(e.status_code, str(e.detail), code).response()

    @app.exception_handler(RagError)
    async def _rag_error(request, e: RagError):
        return rag_api_error(e).response()

    @app.exception_handler(Exception)
    async def _crash(request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(internal_error(e), status_code=500)


DOCS_SCHEMA = "/docs-assets/openapi-3.0.json"


def _offline_docs(app: FastAPI) -> None:
    """The API docs page at /docs with Swagger UI's files served from the swagger-ui-bundle
    package: FastAPI's default loads them from a CDN, a blank page on a machine offline. The
    newest swagger-ui-bundle (1.1.0) holds Swagger UI 4.15, which renders OpenAPI 3.0 only
    ("Unable to render this definition" on FastAPI's 3.1): the page reads the schema as 3.0
    (`openapi_30`); /openapi.json stays 3.1. ReDoc, which only loads from a CDN, is off."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    @app.get(DOCS_SCHEMA, include_in_schema=False)
    async def schema_30():
        return openapi_30(app.openapi())

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=DOCS_SCHEMA, title="rag API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css", swagger_favicon_url="")


def openapi_30(schema: dict) -> dict:
    """An OpenAPI 3.1 schema (JSON Schema 2020-12) as 3.0 says the same: `anyOf [X, null]` is
    X with `nullable`, a `const` a one-value `enum`, `examples` one `example`, a numeric
    `exclusiveMinimum`/`Maximum` the 3.0 boolean beside `minimum`/`maximum`."""
    def convert(node):
        if isinstance(node, list):
            return [convert(x) for x in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        for key in ("anyOf", "oneOf"):  # (before the options are converted: {"type": "null"} is seen as such)
            options = node.get(key)
            if isinstance(options, list) and {"type": "null"} in options:
                rest = [o for o in options if o != {"type": "null"}]
                del node[key]
                node["nullable"] = True
                if len(rest) == 1 and "$ref" in rest[0]:
                    node["allOf"] = rest
                elif len(rest) == 1:
                    node = {**rest[0], **node}
                else:
                    node[key] = rest
        node = {k: convert(v) for k, v in node.items()}
        if node.get("type") == "null":
            node = {k: v for k, v in node.items() if k != "type"} | {"nullable": True}
        if isinstance(node.get("type"), list):
            types = [t for t in node.pop("type") if t != "null"]
            node["nullable"] = True
            if len(types) == 1:
                node["type"] = types[0]
        if "const" in node:
            node["enum"] = [node.pop("const")]
        if isinstance(node.get("examples"), list):
            examples = node.pop("examples")
            if examples:
                node["example"] = examples[0]
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
                node[plain], node[bound] = node[bound], True
        return node

    converted = convert({k: v for k, v in schema.items() if k != "openapi"})
    return {"openapi": "3.0.3", **converted}


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


def door_keys(host: str, keys_file: str | None) -> Keys | None:
    """The keys a server listening on `host` checks; none only on this machine's own address."""
    if not is_loopback(host) and not keys_file:
        raise RagError(f"refusing to listen on {host} without --keys FILE (anyone who reaches it could read "
                       f"and change the indexes); make one with `python -m rag.http.keys add keys.json --index NAME`")
    return Keys.load(keys_file) if keys_file else None


def serve(indexes: list[str] | None = None, host: str = "127.0.0.1", port: int = 8000,
          keys_file: str | None = None, queue: int | None = None, deadline: float | None = None) -> None:
    """Run the API until SIGINT/SIGTERM; in-flight requests finish first. `queue` and `deadline`
    (the flags of `rag serve`) override the settings serve_queue and serve_deadline."""
    import sys

    import uvicorn

    keys = door_keys(host, keys_file)
    settings = Settings.load(serve_queue=queue, serve_deadline=deadline)
    app = create_app(indexes, keys, settings)
    names = ", ".join(app.state.rag.indexes)
    shown = f"[{host}]" if ":" in host else host
    print(f"rag serve: http://{shown}:{port}  (indexes: {names}; API docs at /docs; "
          f"{'keys from ' + keys_file if keys else 'no keys: this machine only'}; Ctrl+C stops)", file=sys.stderr)
    # idle and half-sent connections are closed and bounded in number (connections.py)
    guard = Guard(open_file_limit(settings.serve_max_connections, settings.serve_backlog), settings.serve_header_timeout)
    # uvicorn logs request lines, never headers: keys stay out of the logs
    config = uvicorn.Config(app, host=host.strip("[]"), port=port, log_level="warning", http=guard.protocol(),
                            timeout_keep_alive=settings.serve_keep_alive, backlog=settings.serve_backlog,
                            timeout_graceful_shutdown=int(settings.serve_deadline) + 5)
    quiet_logs()  # after uvicorn's own logging setup: a flood of bad requests logs a few lines a minute
    uvicorn.Server(config).run()
