"""Asking a running `rag serve` (`rag ask --server URL`): one HTTP request instead of loading
two models in a new process. The key, if the server wants one, is the api_key setting
(RAG_API_KEY or rag.toml; never a command-line argument, which other users can see in `ps`)."""

from __future__ import annotations

from rag.core.errors import RagError
from rag.core.settings import configured


class ServerError(RagError):
    """The server answered with an error (its message says what to change)."""


def ask(server: str, index: str, question: str, k: int | None = None, mode: str | None = None,
        max_tokens: int | None = None, history: list | None = None, key: str | None = None,
        timeout: float = 180.0) -> dict:
    """The answer as `rag ask --json` prints it (plus the OpenAI envelope)."""
    import httpx

    body = {"model": index, "messages": [*(history or []), {"role": "user", "content": question}]}
    body.update({name: v for name, v in (("k", k), ("mode", mode), ("max_tokens", max_tokens)) if v is not None})
    key = key or configured().api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = server.rstrip("/")
    url = url if url.endswith("/v1") else url + "/v1"
    try:
        r = httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise RagError(f"no rag server answering at {server} ({type(e).__name__}); start one with `rag serve`") from None
    try:
        data = r.json()
    except ValueError:
        raise ServerError(f"{server} answered {r.status_code} without JSON: is it a rag server?") from None
    if r.status_code != 200:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise ServerError(f"the server refused ({r.status_code}): {error.get('message', r.text[:200])}")
    return data
