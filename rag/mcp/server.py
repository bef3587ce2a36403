"""The MCP server for a set of indexes, over stdio (`rag mcp --index NAME`) or mounted at
`/mcp` on `rag serve` (Streamable HTTP), where it answers under the same keys (Bearer, each
key reading its own indexes), body limit, deadline and decoder queue as the rest of the API.
This package sits below rag.http (it never imports it): `mount_mcp` reads the served state
(its RAG per index, keys, settings, gate) by its attributes."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import time
from contextlib import asynccontextmanager

from mcp.server.mcpserver import MCPServer

from rag.core.errors import RagError
from rag.core.paths import index_name
from rag.core.settings import Settings
from rag.mcp.tools import Door, register
from rag.qa import RAG

log = logging.getLogger(__name__)

INSTRUCTIONS = ("Answers questions from the user's own indexed documents, citing each source's file, page and "
                "character span. `search` finds passages; `ask` answers with numbered sources and a confidence.")


def build_server(door: Door) -> MCPServer:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    server = MCPServer("rag", instructions=INSTRUCTIONS, log_level="WARNING")
    root.handlers[:], root.level = handlers, level  # the SDK configures logging; rag's stays as it was
    register(server, door)
    return server


def open_indexes(specs: list[str], settings: Settings) -> dict[str, RAG]:
    """One RAG per index (its models load once, on first use, and are reused)."""
    indexes: dict[str, RAG] = {}
    for spec in specs:
        name = index_name(spec)
        if name in indexes:
            raise RagError(f"two indexes are both named {name!r}; serve one of them, or rename a folder")
        indexes[name] = RAG(spec, settings=settings)
    return indexes


def serve_stdio(specs: list[str]) -> None:
    """`rag mcp`: the protocol on stdin/stdout until the client closes it. Everything else
    (logs, progress bars, warnings, whatever a library prints) goes to stderr: the protocol
    writes to a copy of fd 1, and fd 1 itself points at stderr from here on."""
    import anyio

    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", newline="\n")
    os.dup2(2, 1)
    settings = Settings.load()
    indexes = open_indexes(specs, settings)
    server = build_server(Door(indexes, settings))
    threading.Thread(target=_warm_up, args=(indexes,), name="rag-warm-up", daemon=True).start()
    print(f"rag mcp: serving {', '.join(indexes)} over stdio", file=sys.stderr)
    anyio.run(_stdio, server, protocol)


async def _stdio(server: MCPServer, protocol) -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    stdin = anyio.wrap_file(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"))
    async with stdio_server(stdin, anyio.wrap_file(protocol)) as (read, write):
        low = server._lowlevel_server  # the SDK's run_stdio_async, writing to the protocol's own fd
        await low.run(read, write, low.create_initialization_options())


def _warm_up(indexes: dict[str, RAG]) -> None:
    """Load the models before the first question (a failure is reported then, by the tool)."""
    try:
        for rag in indexes.values():
            rag.warm_up()
    except Exception as e:  # noqa: BLE001 - the first call reports it
        log.warning("warm-up failed: %s", e)


# --- /mcp on rag serve ----------------------------------------------------------------------

def presented_key(headers) -> str | None:
    header = headers.get("authorization") or ""
    return header[7:].strip() if header[:7].lower() == "bearer " else headers.get("x-api-key")


def mount_mcp(app, state, stateless: bool = False) -> None:
    """Serve the tools at `/mcp` on `app` (FastAPI) over `state`'s indexes, keys and limits, and
    run the Streamable HTTP session manager inside the app's lifespan. `stateless`: no session
    is kept between requests (the tools need none), so any of several replicas may answer."""
    from starlette.routing import Route

    def readable(ctx) -> list[str]:
        if state.keys is None:
            return list(state.indexes)
        key = state.keys.find(presented_key(ctx.headers or {}))
        return [n for n in state.indexes if key is not None and key.can_read(n)]

    door = Door(state.indexes, state.settings, readable=readable, line=lambda: _decoder_line(state),
                deadline=state.settings.serve_deadline)
    endpoint = Endpoint(build_server(door), state, stateless)
    app.router.routes.append(Route("/mcp", endpoint=endpoint, methods=["GET", "POST", "DELETE"],
                                   include_in_schema=False))
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        async with endpoint.running(), outer(a) as value:
            yield value

    app.router.lifespan_context = lifespan


class Endpoint:
    """/mcp: no session without a known key where the server has keys (401, as the rest of the
    API), then the SDK's Streamable HTTP session manager (a new one each time the app starts)."""

    def __init__(self, server: MCPServer, state, stateless: bool = False):
        self.server, self.state, self.manager, self.stateless = server, state, None, stateless

    @asynccontextmanager
    async def running(self):
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        from mcp.server.transport_security import TransportSecuritySettings

        local = None if self.state.keys is not None else TransportSecuritySettings(  # this machine only:
            enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])  # no DNS rebinding
        self.manager = StreamableHTTPSessionManager(self.server._lowlevel_server, security_settings=local,
                                                    stateless=self.stateless, max_request_body_size=self.state.settings.serve_max_body_bytes)
        async with self.manager.run():
            yield

    async def __call__(self, scope, receive, send):
        if self.state.keys is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            if self.state.keys.find(presented_key(headers)) is None:
                return await _refuse(send)
        await self.manager.handle_request(scope, receive, send)


@asynccontextmanager
async def _decoder_line(state):
    """A place in the decoder's line (`rag serve`'s gate): full or past the deadline, a tool error."""
    try:
        ticket = await state.gate.enter(time.monotonic() + state.settings.serve_deadline)
    except Exception as e:  # the gate's ApiError (429, 504): its message
        raise RagError(getattr(e, "message", str(e))) from None
    try:
        yield
    finally:
        ticket.release()


async def _refuse(send) -> None:
    body = json.dumps({"error": {"message": "missing or unknown API key: send `Authorization: Bearer KEY`",
                                 "type": "authentication_error", "param": None, "code": "invalid_api_key"}}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer")]})
    await send({"type": "http.response.body", "body": body})
