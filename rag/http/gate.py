"""The line in front of the one decoder. One question is answered at a time and a few wait in
order; anyone past that is told when to come back (429 with Retry-After) instead of waiting in
a queue that only grows. The answer is produced in a worker thread and handed to the event
loop piece by piece, so a client that leaves (or a deadline that passes) stops the decoder at
its next token and frees its place at once."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from rag.core.errors import RagError
from rag.core.records import Answer
from rag.http.protocol import ApiError, rag_api_error


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


def answer(ticket: Ticket, pool: Executor, rag, kwargs: dict, deadline: float
           ) -> tuple[AsyncIterator, threading.Event]:
    """Start `rag.stream(**kwargs)` in `pool` for the holder of `ticket`, which is given back when
    the stream ends. Returns the drafts-then-Answer as they come, and the event that stops it."""
    gate = ticket.gate
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()
    started = time.monotonic()
    try:
        future = pool.submit(_produce, rag, kwargs, cancel, deadline, loop, queue)
    except BaseException:
        ticket.release()
        raise

    def finished(_):
        gate.seconds.append(time.monotonic() - started)
        try:
            loop.call_soon_threadsafe(ticket.release)
        except RuntimeError:
            pass

    future.add_done_callback(finished)
    return _items(queue, cancel, deadline), cancel


def _produce(rag, kwargs: dict, cancel: threading.Event, deadline: float, loop, queue: asyncio.Queue) -> None:
    """Run `rag.stream` in a worker thread, handing each item to the event loop; stops as soon
    as the client is gone or the deadline passes (closing the stream stops the decoder)."""
    def put(item):
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening
            cancel.set()

    stream = rag.stream(**kwargs, cancel=cancel)  # the translation stops with the client, too
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


async def _items(queue: asyncio.Queue, cancel: threading.Event, deadline: float):
    """The answer's drafts, then the Answer, as the worker thread produces them."""
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ApiError(504, "the answer ran past the request's deadline", "deadline_exceeded") from None
            if item is _END:
                raise ApiError(504, "the answer was stopped before it finished", "deadline_exceeded")
            if isinstance(item, RagError):
                raise rag_api_error(item)
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Answer):
                return
    finally:
        cancel.set()
