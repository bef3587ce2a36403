"""Body size and deadline, before anything parses a request: a body over its limit (uploads
have their own) is a 413 whether or not Content-Length says so, so a large or endless body
costs neither memory nor time; every request gets its total deadline here."""

from __future__ import annotations

import re
import time

from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.http.protocol import ApiError


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body arrives (no Content-Length); an HTTPException so FastAPI's body
    parsing passes it on instead of calling it a parse error."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the {size(limit)} limit")


UPLOAD_PATH = re.compile(r"^/v1/indexes/[^/]+/documents/?$")
DRAIN_BYTES = 256 * 2**20  # an oversized body is read (and dropped) up to this, so the client sees the 413


class BodyLimit:
    """Refuse bodies over the limit (uploads have their own) with 413, before anything parses
    them; set `request.state.deadline`, `deadline_s` from now."""

    def __init__(self, app, max_body_bytes: int, max_upload_bytes: int, deadline_s: float):
        self.app = app
        self.max_body_bytes, self.max_upload_bytes, self.deadline_s = max_body_bytes, max_upload_bytes, deadline_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["method"] == "POST" and UPLOAD_PATH.match(scope["path"])
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        scope.setdefault("state", {})["deadline"] = time.monotonic() + self.deadline_s
        too_large = ApiError(413, f"the request body is over the {size(limit)} limit", "body_too_large")
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


def size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n // 1024} KB"
