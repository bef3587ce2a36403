"""Who is asking and which index they may use, as FastAPI dependencies: `access` reads the key
(401 without a known one, when the server has keys) and gives the routes the served state;
`Access.index` (or `readable_index`, `writable_index` for a route with the index in its path) finds the index
the request names and checks the key's rights on it (404, 403)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request

from rag.http.keys import Key
from rag.http.protocol import ApiError, named_index
from rag.http.state import State
from rag.index.store import is_index_dir
from rag.qa import RAG


@dataclass
class Access:
    state: State
    key: Key | None  # None: the server has no keys (this machine only)

    def readable(self) -> list[str]:
        return [n for n in self.state.indexes if self.key is None or self.key.can_read(n)]

    def index(self, name: str | None, write: bool = False, param: str = "model") -> RAG:
        """The index `name`, if this key may read it (and change it, with `write`)."""
        if not name:
            raise ApiError(422, f"{param}: name the index to use (GET /v1/models lists them)", "missing_index", param)
        rag = self.state.indexes.get(name)
        if rag is None:
            raise ApiError(404, f"no index named {name!r} on this server (GET /v1/models lists them)",
                           "model_not_found", param)
        if self.key is not None and not self.key.can_read(name):
            raise ApiError(403, f"this key may not read the index {name!r}", "index_forbidden", param)
        if write and self.key is not None and not self.key.can_write(name):
            raise ApiError(403, f"this key may not change the index {name!r} (read-only key)", "write_forbidden")
        named_index.set((rag.root, name))  # its errors name it so, not by its folder here
        return rag


def served(request: Request) -> State:
    """What this server holds (create_app puts it on the app)."""
    return request.app.state.rag


async def access(request: Request) -> Access:
    """The served state and the request's key (`Authorization: Bearer KEY` or `X-API-Key`)."""
    state = served(request)
    if state.keys is None:
        return Access(state, None)
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("x-api-key")
    key = state.keys.find(token)
    if key is None:
        raise ApiError(401, "missing or unknown API key: send `Authorization: Bearer KEY`", "invalid_api_key")
    return Access(state, key)


async def readable_index(name: str, who: Access = Depends(access)) -> RAG:
    """The index named in the path, for a key that may read it."""
    return who.index(name, param="name")


async def writable_index(name: str, who: Access = Depends(access)) -> RAG:
    """The index named in the path, for a key that may change it."""
    return who.index(name, write=True, param="name")


def existing(rag: RAG) -> RAG:
    """`rag`, or a 404 while its index has no documents yet (the first upload makes it); called
    where the work runs, so it sees the uploads that finished before."""
    if not is_index_dir(rag.root):
        raise ApiError(404, f"the index {rag.root.name!r} has no documents yet: upload some", "index_empty")
    return rag
