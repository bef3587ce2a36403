"""rag's own routes: search (as `rag search --json`), what an index holds, and its documents
(list, upload, remove). Reads run in the search pool, beside generation; writes in the write
pool of one, waiting for another writer of the index (the web page, `rag ingest`)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict

from fastapi import APIRouter, Depends, Request

from rag.http.access import Access, access, existing, readable_index, served, writable_index
from rag.http.body import BodyTooLarge
from rag.http.deadline import in_thread
from rag.http.protocol import ApiError, SearchRequest, hit
from rag.qa import RAG

search_router = APIRouter(tags=["rag"])
indexes_router = APIRouter(tags=["rag"])


@search_router.post("/v1/search", summary="The k best passages (as `rag search --json`)")
async def search(body: SearchRequest, request: Request, who: Access = Depends(access)):
    name = body.index or body.model
    rag = who.index(name, param="index")
    s = who.state.settings
    if body.k > s.serve_max_k:
        raise ApiError(422, f"k: at most {s.serve_max_k}", "invalid_value", "k")
    if len(body.query) > s.serve_max_question_chars:
        raise ApiError(422, f"query: at most {s.serve_max_question_chars} characters", "query_too_long", "query")
    start = time.perf_counter()
    # a question in another language than the index's is searched in translation (RAG.find)
    found = await in_thread(who.state.search_pool, request, lambda: existing(rag).find(body.query, body.k, body.mode))
    return {"object": "search.result", "index": name, "query": body.query, "searched_as": found.searched,
            "hits": [hit(h) for h in found.hits], "took_ms": round((time.perf_counter() - start) * 1000, 1)}


@indexes_router.get("/v1/indexes/{name}", summary="What the index holds (as `rag info --json`)")
async def info(name: str, request: Request, rag: RAG = Depends(readable_index)):
    pool = served(request).search_pool
    return {"name": name, **asdict(await in_thread(pool, request, lambda: existing(rag).info()))}


@indexes_router.get("/v1/indexes/{name}/documents", summary="The documents of the index")
async def documents(name: str, request: Request, rag: RAG = Depends(readable_index)):
    docs = await in_thread(served(request).search_pool, request, lambda: existing(rag).documents())
    return {"object": "list", "index": name, "data": [asdict(d) for d in docs]}


@indexes_router.post("/v1/indexes/{name}/documents",
                     summary="Upload files (multipart, field `files`) and ingest them; returns the ingest report")
async def upload(name: str, request: Request, rag: RAG = Depends(writable_index)):
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
    report = await asyncio.get_running_loop().run_in_executor(served(request).write_pool, rag.upload, files)
    return report.to_dict()


@indexes_router.delete("/v1/indexes/{name}/documents",
                       summary="Remove a document (or all under a folder) by the path the list shows, "
                               "or an upload by the name it was uploaded as")
async def remove(name: str, path: str, who: Access = Depends(access)):
    # the index is looked up here, not in a dependency: a request without `path` is a 422 first
    rag = who.index(name, write=True, param="name")
    target = document_path(rag, path)
    removed = await asyncio.get_running_loop().run_in_executor(who.state.write_pool,
                                                               lambda: existing(rag).remove(target))
    if not removed:
        raise ApiError(404, f"no document at {path!r} in {name!r} (GET .../documents lists them)",
                       "document_not_found", "path")
    return {"removed": removed}


def document_path(rag: RAG, path: str) -> str:
    """What a DELETE's `path` names: a path the document list shows (absolute), or a relative
    one inside the index's uploads/ as the client uploaded it (`notes.txt`, `uploads/notes.txt`);
    never a path read against the server's working directory."""
    if not path.strip():
        raise ApiError(422, "path: empty; name the document to remove as GET .../documents lists it, "
                            "or an upload by its name", "empty_path", "path")
    if os.path.isabs(path):
        return path
    uploads = os.path.abspath(rag.root / "uploads")
    inside = path.replace("\\", "/").removeprefix("./")
    inside = inside.removeprefix("uploads/") if inside != "uploads" else ""
    target = os.path.normpath(os.path.join(uploads, inside))
    if not target.startswith(uploads + os.sep):
        raise ApiError(422, f"path: {path!r} is not inside the index's uploads; name the document as "
                            "GET .../documents lists it (an absolute path) or an upload by its name",
                       "path_outside", "path")
    return target
