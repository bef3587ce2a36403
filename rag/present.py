"""How rag names a passage and reports an answer's timings to a person: one wording for
the CLI and the web page."""

from __future__ import annotations

from pathlib import Path


def where(passage, full_path: bool = True, heading: bool = True) -> str:
    """"docs/guide.pdf, page 3 > Install > Linux": file, page and heading path of a Hit or Source."""
    text = passage.source if full_path else Path(passage.source).name
    if passage.page:
        text += f", page {passage.page}"
    if heading and passage.heading:
        text += f" > {passage.heading}"
    return text


def timings_line(t, sep: str = ", ") -> str:
    """"retrieval 12 ms, first token 150 ms, total 900 ms, 40 tokens/s" from an Answer's Timings."""
    parts = [f"retrieval {t.retrieve_ms or 0:.0f} ms"]
    if t.first_token_ms is not None:
        parts.append(f"first token {t.first_token_ms:.0f} ms")
    parts.append(f"total {t.total_ms:.0f} ms")
    if t.tokens_per_s:
        parts.append(f"{t.tokens_per_s:.0f} tokens/s")
    return sep.join(parts)
