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
from rag.http.keys import Keys
from rag.http.protocol import ApiError, internal_error, rag_api_error
from rag.http.state import State, default_indexes

log = logging.getLogger(__name__)


def create_app(indexes: list[str] | None = None, keys: Keys | None = None, settings: Settings | None = None,
               warm: bool = True) -> FastAPI:
    """The ASGI app (uvicorn runs it; tests may too). `warm`: load the models at start."""
    state = State(indexes or default_indexes(), keys, settings or Settings.load())

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
    s = state.settings
    app.add_middleware(BodyLimit, max_body_bytes=s.serve_max_body_bytes, max_upload_bytes=s.serve_max_upload_bytes,
                       deadline_s=s.serve_deadline)
    _offline_docs(app)
    _errors(app)
    for router in (health.router, openai_routes.models_router, chat.router, openai_routes.embeddings_router,
                   index_routes.search_router, index_routes.indexes_router):
        app.include_router(router)
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
        return ApiError(422, f"{where or 'body'}: {first.get('msg', 'invalid')}", "invalid_value", where).response()

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
          keys_file: str | None = None, queue: int | None = None, deadline: float | None = None) -> None:
    """Run the API until SIGINT/SIGTERM; in-flight requests finish first. `queue` and `deadline`
    (the flags of `rag serve`) override the settings serve_queue and serve_deadline."""
    import sys

    import uvicorn

    if not is_loopback(host) and not keys_file:
        raise RagError(f"refusing to listen on {host} without --keys FILE (anyone who reaches it could read "
                       f"and change the indexes); make one with `python -m rag.keys add keys.json --index NAME`")
    keys = Keys.load(keys_file) if keys_file else None
    settings = Settings.load(serve_queue=queue, serve_deadline=deadline)
    app = create_app(indexes, keys, settings)
    names = ", ".join(app.state.rag.indexes)
    shown = f"[{host}]" if ":" in host else host
    print(f"rag serve: http://{shown}:{port}  (indexes: {names}; API docs at /docs; "
          f"{'keys from ' + keys_file if keys else 'no keys: this machine only'}; Ctrl+C stops)", file=sys.stderr)
    # uvicorn logs request lines, never headers: keys stay out of the logs
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning",
                timeout_graceful_shutdown=int(settings.serve_deadline) + 5)
