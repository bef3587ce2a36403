"""What goes over the wire: the request bodies `rag serve` accepts, its one error shape (OpenAI's,
so OpenAI clients show rag's messages), and the shapes of its answers and SSE chunks. No
routing and no state here: the routes fill these in."""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rag.core.errors import BadIndex, DiskFull, IndexLocked, RagError
from rag.core.present import lone_surrogate


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
             422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 504: "timeout_error",
             507: "server_error"}

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# The index the request named (its folder, its name), set where the request's key is checked
# against it (access.Access.index): rag's messages name an index by its folder on this machine,
# a client knows it by its name.
named_index: ContextVar[tuple[Path, str] | None] = ContextVar("named_index", default=None)


def public(text: str, root: Path, name: str) -> str:
    """`text` with the index's folder on this machine said as the client knows it: a file in
    it by its path inside the folder (`uploads/x.txt`), the folder itself by the index's name."""
    forms = {str(root), os.path.abspath(root)}
    try:
        forms.add(str(Path(root).resolve()))
    except OSError:
        pass
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form + os.sep, "").replace(form, repr(name))
    return text


def rag_api_error(e: RagError) -> ApiError:
    """rag's own errors as the HTTP status a client can act on, naming the index as the client
    did (never this machine's paths)."""
    message, named = str(e), named_index.get()
    if named is not None:
        message = public(message, *named)
    if isinstance(e, IndexLocked):
        return ApiError(409, message, "index_locked", headers={"Retry-After": "5"})
    if isinstance(e, BadIndex):
        return ApiError(503, message, "index_unavailable")
    if isinstance(e, DiskFull):
        return ApiError(507, message, "disk_full")
    return ApiError(400, message, "invalid_request")


def internal_error(e: BaseException) -> dict:
    """An unexpected error's body: its type only, never its text (which may hold paths or data)."""
    return {"error": {"message": f"internal error ({type(e).__name__})", "type": "server_error",
                      "param": None, "code": "internal_error"}}


# --- request bodies ----------------------------------------------------------------------

Mode = Literal["dense", "keyword", "hybrid"]


def _surrogate_at(value, where: str = "") -> str | None:
    """Where in a parsed JSON body a string holds a lone surrogate ("messages.0.content"), or None."""
    if isinstance(value, str):
        return where or "body" if lone_surrogate(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and lone_surrogate(key):
            return where or "body"
        found = _surrogate_at(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


class Body(BaseModel):
    """A request body. Text with a lone surrogate (JSON's "\\ud800": half of a UTF-16 pair, no
    character) is refused here, before any encoder, database or JSON writer chokes on it."""

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data):
        where = _surrogate_at(data)
        if where:
            raise ValueError(f"{where} holds a lone UTF-16 surrogate (such as \\ud800), which is no "
                             "character: send the text as valid Unicode")
        return data


class Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[Part] | None = None


class ChatRequest(Body):
    """OpenAI's chat request; fields rag does not use (temperature, top_p, ...) are accepted and
    ignored (answers are greedy and copied from the passages). `k` and `mode` are rag's own."""
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    k: int | None = Field(None, ge=1)
    mode: Mode | None = None


class SearchRequest(Body):
    query: str
    index: str | None = None
    model: str | None = None  # OpenAI clients name the index `model`: either works
    k: int = Field(5, ge=1)
    mode: Mode | None = None


class EmbeddingsRequest(Body):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["passage", "query"] = "passage"  # rag's own: e5 encodes questions differently


def text(content: str | list[Part] | None) -> str:
    """A message's text: the string, or its text parts joined (images and the like are dropped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text or "" for p in content if p.type in ("text", "input_text"))


# --- response shapes -----------------------------------------------------------------------

HIT_KEYS = ("rank", "score", "source", "page", "heading", "text", "chunk_id")  # as `rag search --json`
OPENAI_KEYS = {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}


def hit(h) -> dict:
    return {k: getattr(h, k) for k in HIT_KEYS}


def model_card(name: str) -> dict:
    """An index, shown as an OpenAI model."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "rag"}


def extras(answer) -> dict:
    """The answer's own fields (sources, short_answer, found, timings, ...) passed through."""
    return {k: v for k, v in answer.to_dict().items() if k not in OPENAI_KEYS}


def usage(answer) -> dict:
    tokens = int(getattr(answer.timings, "tokens", 0) or 0)
    return {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}


def completion(answer, meta: dict) -> dict:
    """A whole answer as OpenAI's chat.completion, with rag's fields beside OpenAI's."""
    return {**extras(answer), **meta, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": usage(answer)}


def event(body: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def chunk(meta: dict, delta: dict, finish: str | None = None, **extra) -> str:
    """One chat.completion.chunk event."""
    return event({**extra, **meta, "object": "chat.completion.chunk",
                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})


DONE = "data: [DONE]\n\n"
