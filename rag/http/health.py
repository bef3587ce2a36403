"""/healthz (the process is up) and /readyz (the models are loaded, so questions are answered
at full speed): what a load balancer or `docker` polls. No key needed, no index named."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rag.http.access import served

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="Models are loaded: questions are answered at full speed")
async def readyz(request: Request):
    state = served(request)
    if state.ready.is_set():
        return {"status": "ready", "indexes": list(state.indexes), "warm_up": state.warm,
                "answering": state.gate.inside}
    if state.warm_error:
        return JSONResponse({"status": "failed", "error": state.warm_error}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503)
