"""Every way rag shows an answer or a passage: Markdown (the HTTP API), HTML (the web page), the
terminal, plain text (scoring), JSON. One wording for every door, rendered from the
`Answer` record, never parsed back out of text."""

from __future__ import annotations

import html as _html
import re
from dataclasses import asdict
from pathlib import Path

NOT_FOUND = "Not found in the indexed documents."
# An answer whose confidence is under `min_confidence`: the Markdown names the closest passages.
MAY_NOT_SAY = "The documents may not say this."
EMPTY_INDEX = "The index is empty: add documents with `rag ingest PATH` (or the Add documents panel)."
UNSUPPORTED = "(not supported by the sources)"

# A citation marker: a bounded digit run, so "[999...9]" (5,000 digits) from a server is text,
# not an int() of unbounded length.
MARKER = re.compile(r"\[(\d{1,4})\]")


def strip_markers(text: str) -> str:
    """Text without its [n] citation markers."""
    return re.sub(r"\s*" + MARKER.pattern, "", text).strip()


def statement(sentences, text=str, mark=lambda n: f"[{n}]") -> str:
    """Sentences with their citation markers: "It was lit in 1897. [1]"; a sentence no source
    supports is followed by UNSUPPORTED. `text` renders words and `mark` a citation number (the
    web page: escaped HTML and a link to the source card)."""
    parts = []
    for s in sentences:
        if s.cites:
            parts.append(f"{text(s.text)} " + "".join(mark(n) for n in s.cites))
        elif not s.supported:
            parts.append(f"{text(s.text)} {text(UNSUPPORTED)}")
        else:
            parts.append(text(s.text))
    return " ".join(parts)


def closest(answer, n: int = 3, text=str) -> str:
    """"[1] guide.pdf, page 3; [2] notes.txt": where a person can look when rag doubts its answer
    (`text` renders the file names: `markdown_text` in Markdown)."""
    return "; ".join(f"[{s.n}] {text(where(s, full_path=False, heading=False))}" for s in answer.sources[:n])


def not_found(answer, text=str) -> str:
    """The note of an answer that was not found; one refused for its low confidence names the
    closest passages ("The documents may not say this; the closest passages are [1] a.txt")."""
    if answer.note == MAY_NOT_SAY and answer.sources:
        return f"{MAY_NOT_SAY[:-1]}; the closest passages are {closest(answer, text=text)}."
    return answer.note


# What Markdown acts on in a document's words, escaped with a backslash so they show as the
# characters they are: `[` and `]` (links, and `![...](...)` images: a tracking pixel or a
# `javascript:` link), `<` (HTML and <autolinks>), `*`, `_` and `~` (emphasis, strikethrough),
# backticks (code) and the backslash itself (else a document's own `\[` would undo ours). Other
# punctuation (`!`, `(`, `#`, `&`...) makes nothing without these, so plain prose stays as it is.
_MD_ACTIVE = re.compile(r"([\\`*_~\[\]<])")


def markdown_text(text: str) -> str:
    """Document (or model) text as Markdown that shows it as written, never as markup."""
    return _MD_ACTIVE.sub(r"\\\1", text)


def markdown(answer, text=markdown_text) -> str:
    """What a person reads: the short answer in bold before its cited sentence(s), or the note
    of an answer that was not found. The documents' words are escaped (`markdown_text`), as the
    web page escapes its HTML: an image or link in a passage shows as text in a client that
    renders Markdown (the HTTP API's `content`)."""
    if not answer.found:
        return not_found(answer, text)
    body = statement(answer.sentences, text)
    return f"**{text(answer.short)}**: {body}" if answer.short_first else body


def plain(answer) -> str:
    """The answer's words without markup or markers (what the scorers compare with gold)."""
    return strip_markers(markdown(answer, text=str)).replace("**", "") if answer.found else ""


def source_dict(s) -> dict:
    span = s.evidence_span
    return {"n": s.n, "source": s.source, "page": s.page, "heading": s.heading, "score": s.score,
            "text": s.text, "cited": s.cited, "evidence": s.evidence,
            "evidence_span": list(span) if span else None, "chunk_id": s.chunk_id}


def as_dict(answer) -> dict:
    """`rag ask --json`, and the extra fields of the HTTP API's answers. `answer` is what a person
    reads; `short_first`, `sentences` and `note` are its parts, from which `Answer.from_dict`
    rebuilds the answer (`rag ask --server`) without reading the text."""
    return {"question": answer.question, "answer": markdown(answer), "short_answer": answer.short,
            "supporting": answer.supporting, "found": answer.found, "confidence": answer.confidence,
            "sources": [source_dict(s) for s in answer.sources], "timings": asdict(answer.timings),
            "searched_as": answer.searched or None, "short_first": answer.short_first,
            "sentences": [{"text": s.text, "cites": list(s.cites), "supported": s.supported}
                          for s in answer.sentences],
            "note": answer.note}


# --- the web page ---------------------------------------------------------------------------

def html_text(text: str) -> str:
    """HTML for text inside one of the page's HTML blocks: entities for markup, and no line
    breaks, because a blank line would end the HTML block and what follows would be read as
    Markdown."""
    return _html.escape(text).replace("\n", "<br>")


def html(answer, anchors: str = "src") -> str:
    """The answer as one HTML block, every word escaped: the short answer in bold, then each
    sentence with its [n] linking to the source card `#{anchors}-{n}` (the web page)."""
    if not answer.found:
        return f"<div>{html_text(not_found(answer))}</div>"
    prefix = _html.escape(anchors, quote=True)
    body = statement(answer.sentences, html_text, lambda n: f'<a href="#{prefix}-{n}">[{n}]</a>')
    if answer.short_first:
        body = f"<strong>{html_text(answer.short)}</strong>: {body}"
    if answer.note:  # a found answer's note: the language it is in, asked in another
        body += f"<br><em>{html_text(answer.note)}</em>"
    return f"<div>{body}</div>"


# --- the terminal ---------------------------------------------------------------------------

# C0 and C1 control characters but newline and tab: an escape sequence from a document or a
# model server (set the title, clear the screen) must print as text, not act.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_AND_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_blank(text: str) -> bool:
    """Nothing a person could have meant: only spaces, control characters and invisible ones
    (zero-width spaces and joiners, byte-order marks, soft hyphens: Unicode's format class)."""
    return not any(c.isprintable() and not c.isspace() for c in text)


def lone_surrogate(text: str) -> bool:
    """`text` holds half of a UTF-16 pair (JSON's "\\ud800", or bytes that are not UTF-8 in
    a command's arguments): no character, and no encoder, database or JSON writer takes it."""
    return any("\ud800" <= c <= "\udfff" for c in text)


def safe(text: str, keep_newlines: bool = True) -> str:
    """Text as it may be printed to a terminal: control characters shown as \\xNN (newlines
    kept where `keep_newlines`, e.g. in an answer; escaped in a file name)."""
    pattern = _CONTROL if keep_newlines else _CONTROL_AND_BREAKS
    return pattern.sub(lambda m: f"\\x{ord(m.group(0)):02x}", str(text))


def terminal(answer, bold: bool) -> str:
    """The answer for a terminal: the short answer in bold where `bold`, control characters
    of documents and servers escaped."""
    if not answer.found:
        return safe(not_found(answer))
    body = safe(statement(answer.sentences))
    if answer.note:  # a found answer's note: the language it is in, asked in another
        body += "\n(" + safe(answer.note) + ")"
    if not answer.short_first:
        return body
    short = safe(answer.short)
    return f"\033[1m{short}\033[0m: {body}" if bold else f"{short}: {body}"


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
    if getattr(t, "translate_ms", None) is not None:  # (a server of an earlier version sends none)
        parts.insert(0, f"translation {t.translate_ms:.0f} ms")
    if t.first_token_ms is not None:
        parts.append(f"first token {t.first_token_ms:.0f} ms")
    parts.append(f"total {t.total_ms:.0f} ms")
    if t.tokens_per_s:
        parts.append(f"{t.tokens_per_s:.0f} tokens/s")
    return sep.join(parts)
