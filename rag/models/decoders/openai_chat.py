"""A chat model behind an OpenAI-compatible HTTP server the user runs (Ollama, vLLM, LM Studio,
llama.cpp's server): `openai:MODEL`. It writes freely; rag still checks its citations.

The server is untrusted input, read with httpx directly so every limit is ours: a total
deadline per answer (a watchdog closes the connection, so keep-alives or a trickle cannot hold
it open), `max_tokens` enforced on what arrives, a byte cap on everything read, and every
fault (refused, malformed JSON, an error event, an empty body, a stream cut before `[DONE]`)
one `ServerFault` line, never an empty answer that would read as "not found". The key comes
from OPENAI_API_KEY and is never printed or logged."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator

from rag.core.errors import ModelNotFound, RagError
from rag.core.settings import configured
from rag.models.decoders.base import Decoder

# Content beyond this many characters per allowed token is cut (a token is rarely longer).
CHARS_PER_TOKEN = 8
# Everything read (events, keep-alives, JSON around the text) is capped at this plus the above.
BYTES_OVERHEAD = 256 * 1024
# A server's own message is shown bounded and reduced to printable characters.
MESSAGE_CHARS = 200


class ServerFault(RagError):
    """The model server answered something rag cannot use (exit status 2)."""


def printable(text: str, limit: int = MESSAGE_CHARS) -> str:
    """A server's message as one bounded line of printable characters."""
    flat = "".join(c if c.isprintable() else " " for c in str(text))
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[:limit] + " ..."


class ChatServer(Decoder):
    backend = "openai"
    copies = False

    def __init__(self, model: str, base_url: str, context_window: int, timeout: float, deadline: float = 120.0):
        self.name = model
        self.base_url = (base_url or configured().openai_base_url).rstrip("/")  # (RAG_OPENAI_BASE_URL)
        self.context_window = context_window
        self.timeout = timeout  # per read: a server that sends nothing for this long has failed
        self.deadline = deadline  # the whole answer

    @property
    def n_ctx(self) -> int:
        return self.context_window

    def count(self, text: str) -> int:
        """No tokenizer here: about one token per 3 bytes (an over-estimate for English, about
        right for Chinese), so the prompt budget errs on the short side."""
        return len(text.encode()) // 3 + 1

    def stream(self, messages, prefix="", max_tokens=64, stop=None, temperature=0.0, **_copy) -> Iterator[str]:
        import httpx

        body = {"model": self.name, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "stream": True}
        if stop:
            body["stop"] = stop[:4]  # OpenAI's limit
        headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY') or 'none'}"}
        where = self.base_url
        expired = threading.Event()
        timeout = httpx.Timeout(self.timeout, connect=min(10.0, self.timeout))
        try:
            with httpx.Client(timeout=timeout) as client, \
                    client.stream("POST", f"{self.base_url}/chat/completions", json=body, headers=headers) as reply:
                def expire():
                    expired.set()
                    reply.close()

                watchdog = threading.Timer(self.deadline, expire)
                watchdog.daemon = True
                watchdog.start()
                try:
                    _check_status(reply, where, self.name)
                    yield from _pieces(reply, prefix, max_tokens, where, self.deadline)
                finally:
                    watchdog.cancel()
        except RagError:
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise RagError(f"cannot reach the OpenAI-compatible server at {where} ({type(e).__name__}); "
                           "start it, or set RAG_OPENAI_BASE_URL") from None
        except (httpx.HTTPError, OSError, RuntimeError) as e:
            if expired.is_set():
                raise ServerFault(f"the server at {where} gave no complete answer within {self.deadline:g} s "
                                  "(answer_timeout)") from None
            if isinstance(e, httpx.TimeoutException):
                raise ServerFault(f"the server at {where} sent nothing for {self.timeout:g} s "
                                  "(request_timeout)") from None
            raise ServerFault(f"the connection to {where} broke ({type(e).__name__})") from None


def _check_status(reply, where: str, model: str) -> None:
    if reply.status_code < 400:
        return
    detail = ""
    try:
        reply.read()  # bounded: error bodies are small, and the watchdog still runs
        detail = printable(reply.json().get("error", {}).get("message", ""))
    except Exception:  # a body that is no JSON error: the status says enough
        pass
    if reply.status_code == 404:
        raise ModelNotFound(f"the server at {where} does not serve a model {printable(model)!r}")
    if reply.status_code in (401, 403):
        raise RagError(f"the server at {where} refused the API key (set OPENAI_API_KEY)")
    raise ServerFault(f"the server at {where} answered HTTP {reply.status_code}" + (f": {detail}" if detail else ""))


def _pieces(reply, prefix: str, max_tokens: int, where: str, deadline: float) -> Iterator[str]:
    """The answer's text pieces from a server-sent event stream (or a plain JSON reply from a
    server that ignored `stream`), within the caps."""
    max_chars = CHARS_PER_TOKEN * max_tokens
    cap = BYTES_OVERHEAD + 4 * max_chars
    read, chars, events, buffer, started, done = 0, 0, 0, b"", False, False
    ends = time.monotonic() + deadline
    plain_json = "application/json" in reply.headers.get("content-type", "")
    for chunk in reply.iter_bytes():
        read += len(chunk)
        if time.monotonic() > ends:
            raise ServerFault(f"the server at {where} gave no complete answer within {deadline:g} s (answer_timeout)")
        if read > cap:
            raise ServerFault(f"the server at {where} sent more than {cap // 1024} KB for one answer")
        buffer += chunk
        if plain_json:
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # keep-alive comments, event names, ids
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            text = _delta(_json(data, where), where)
            events += 1
            if not started:  # a chat model may repeat the "Answer:" the prompt ended with
                text = text.lstrip()
                if prefix and text.startswith(prefix.strip()):
                    text = text[len(prefix.strip()):].lstrip()
                started = bool(text)
            if text:
                text = text[:max_chars - chars]
                chars += len(text)
                yield text
            if chars >= max_chars or events > max_tokens + 8:
                return  # max_tokens, enforced on what arrives: the rest is not read
        if done:
            return
    if plain_json:
        reply_json = _json(buffer, where)
        try:
            text = reply_json["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            if isinstance(reply_json, dict) and "error" in reply_json:
                _delta(reply_json, where)
            raise ServerFault(f"the server at {where} sent a reply without an answer") from None
        if not isinstance(text, str) or not text.strip():
            raise ServerFault(f"the server at {where} sent an empty answer")
        yield text.strip()[:max_chars]
        return
    if not events:
        raise ServerFault(f"the server at {where} sent an empty reply (no answer events)")
    raise ServerFault(f"the server at {where} ended its stream without [DONE] (the answer may be cut)")


def _json(data: bytes, where: str):
    try:
        return json.loads(data)
    except ValueError:
        raise ServerFault(f"the server at {where} sent malformed JSON") from None


def _delta(event, where: str) -> str:
    """The text of one stream event; an error event is a fault with the server's message."""
    if not isinstance(event, dict):
        raise ServerFault(f"the server at {where} sent an event that is not a JSON object")
    if "error" in event:
        error = event["error"]
        message = error.get("message", "") if isinstance(error, dict) else error
        raise ServerFault(f"the server at {where} reported an error: {printable(message) or 'no message'}")
    choices = event.get("choices")
    if not choices:
        return ""  # usage-only events
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise ServerFault(f"the server at {where} sent an event without choices")
    delta = choices[0].get("delta") or {}
    text = delta.get("content") if isinstance(delta, dict) else None
    if text is not None and not isinstance(text, str):
        raise ServerFault(f"the server at {where} sent content that is not text")
    return text or ""
