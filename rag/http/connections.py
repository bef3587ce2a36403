"""Connections, before any request exists: uvicorn has no header timeout and counts idle
connections against `limit_concurrency` (so half-sent requests would turn everyone away), so
`rag serve` runs its own h11 protocol:

- a connection that has not sent a complete request's headers within `header_timeout`
  seconds of opening (or of its last response) is closed;
- at most `max_connections` are open at once (never more than the process's open-file limit
  leaves room for): past that, the oldest connection that has sent no complete request is
  closed to let the new one in, so idle sockets cannot keep /healthz or a question out;
- what is dropped is counted, not logged line by line: `QuietLog` lets a few lines of a kind
  through per minute and then one line saying how many were left out.

The settings are serve_max_connections, serve_header_timeout, serve_keep_alive and
serve_backlog (rag/core/settings.py)."""

from __future__ import annotations

import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

RESERVED_FILES = 128  # open files kept free for the index, the models and logging


def open_file_limit(wanted: int, backlog: int) -> int:
    """Raise this process's soft open-file limit towards `wanted` plus what it needs besides
    (up to the hard limit); returns how many connections the limit leaves room for. asyncio
    accepts up to `backlog` connections in a row before any of them is looked at, so that
    many more files must stay free."""
    try:
        import resource
    except ImportError:  # not on this platform: trust the setting
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + backlog + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - RESERVED_FILES - backlog))


class Guard:
    """The limits and the counts of one server, shared by its connections."""

    def __init__(self, max_connections: int, header_timeout: float):
        self.max_connections, self.header_timeout = max_connections, header_timeout
        self.dropped = 0  # connections closed by either rule (tests and /readyz may read it)

    def protocol(self):
        """The protocol class uvicorn makes one of per connection (its `http` argument)."""
        guard = self

        class Guarded(H11Protocol):
            def connection_made(self, transport) -> None:
                super().connection_made(transport)
                self._opened = time.monotonic()
                self._header_timer = None
                self._arm()
                guard.admit(self)

            def connection_lost(self, exc) -> None:
                if self._header_timer is not None:
                    self._header_timer.cancel()
                    self._header_timer = None
                super().connection_lost(exc)

            def on_response_complete(self) -> None:
                super().on_response_complete()
                self._opened = time.monotonic()
                self._arm()

            def _arm(self) -> None:
                if self._header_timer is not None:
                    self._header_timer.cancel()
                self._header_timer = self.loop.call_later(guard.header_timeout, self._headers_due)

            def _headers_due(self) -> None:
                self._header_timer = None
                if waiting_for_headers(self):
                    guard.drop(self)

        return Guarded

    def admit(self, new) -> None:
        """Past the limit, close the oldest connection still waiting for its headers (the new
        one itself when every other is busy with a request)."""
        connections = new.connections
        if len(connections) <= self.max_connections:
            return
        idle = [c for c in connections if c is not new and waiting_for_headers(c)]
        self.drop(min(idle, key=lambda c: c._opened) if idle else new)

    def drop(self, connection) -> None:
        if not connection.transport.is_closing():
            self.dropped += 1
            connection.transport.abort()  # no goodbye: nothing is written to a socket that sent nothing


def waiting_for_headers(connection) -> bool:
    """The client has not sent a complete request's headers (nothing is being answered)."""
    transport = getattr(connection, "transport", None)
    return transport is not None and not transport.is_closing() and connection.conn.their_state is h11.IDLE \
        and (connection.cycle is None or connection.cycle.response_complete)


class QuietLog(logging.Filter):
    """At most `lines` records per logger and minute; then one line of how many were left out
    (a flood of bad requests or dropped connections must not fill the disk)."""

    def __init__(self, lines: int = 20, period: float = 60.0):
        super().__init__()
        self.lines, self.period = lines, period
        self.start, self.seen, self.left_out = time.monotonic(), 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.start >= self.period:
            left_out, self.start, self.seen, self.left_out = self.left_out, now, 0, 0
            if left_out:
                record.msg = f"({left_out} log lines like the next were left out in {self.period:g} s) {record.msg}"
        self.seen += 1
        if self.seen > self.lines:
            self.left_out += 1
            return False
        return True


def quiet_logs(names=("uvicorn.error", "asyncio", "uvicorn.access")) -> None:
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietLog) for f in logger.filters):
            logger.addFilter(QuietLog())
