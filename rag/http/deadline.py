"""Waiting inside a request: never past its deadline (set by `body.BodyLimit`), and never for
a client that has left (its place in a pool or in the decoder's line is freed at once)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

from fastapi import Request

from rag.http.protocol import ApiError


async def in_thread(pool: Executor, request: Request, fn, *args):
    """Run fn in a pool within the request's deadline."""
    deadline = request.state.deadline
    future = asyncio.get_running_loop().run_in_executor(pool, fn, *args)
    try:
        return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise ApiError(504, "the request ran past its deadline", "deadline_exceeded") from None


async def or_gone(request: Request, awaitable):
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
