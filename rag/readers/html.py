"""HTML: the visible text only (scripts, styles and navigation boilerplate dropped), with the
heading path of h1-h6. E-books (`ebooks.py`) read their chapters with it."""

from __future__ import annotations

import re

from rag.readers.base import HeadingPath, Limits, Section, decode

_DROP_TAGS = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form",
              "iframe", "svg", "template", "button", "select", "head"]
_BLOCKS = {"p", "div", "li", "ul", "ol", "pre", "table", "tr", "td", "th", "blockquote",
           "section", "article", "main", "dd", "dt", "figcaption", "br", "hr", "h1", "h2",
           "h3", "h4", "h5", "h6"}


def read_html(data: bytes, limits: Limits) -> list[Section]:
    """Visible text only: scripts, styles and navigation boilerplate are dropped."""
    from bs4 import BeautifulSoup, NavigableString
    from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

    text = decode(data)
    soup = BeautifulSoup(text, "lxml")
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.select('[role="navigation"], [role="banner"], [role="contentinfo"], [aria-hidden="true"]'):
        tag.decompose()
    sections: list[Section] = []
    path = HeadingPath()
    parts: list[str] = []
    last_block = None

    def flush():
        _close(parts, path, sections)

    root = soup.body or soup
    for node in root.descendants:
        if not isinstance(node, NavigableString) or isinstance(
                node, (Comment, Declaration, Doctype, ProcessingInstruction)):
            continue
        heading = node.find_parent(re.compile(r"^h[1-6]$"))
        if heading is not None:
            if heading is not last_block:
                flush()
                path.enter(int(heading.name[1]), heading.get_text(" ", strip=True))
                last_block = heading
            continue
        block = node.find_parent(lambda t: t.name in _BLOCKS)
        if block is not last_block:
            parts.append("\n")
            last_block = block
        parts.append(str(node))
    flush()
    return sections


_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_HIDDEN_ROLES = {"navigation", "banner", "contentinfo"}


class _Frame:
    """An open element of a streamed page: what its text belongs to."""

    __slots__ = ("element", "dropped", "heading", "block", "in_body", "last")

    def __init__(self, element, dropped, heading, block, in_body):
        self.element, self.dropped, self.heading, self.block, self.in_body = element, dropped, heading, block, in_body
        self.last = None  # the child that ended last: its tail is the next text here


def stream_html(data: bytes, limits: Limits, tick=lambda: None, book: bool = False) -> list[Section]:
    """`read_html`'s sections in flat memory, for pages too big to hold as a tree (an e-book
    chapter of millions of tags): lxml's HTML parser streamed, each element forgotten once it
    ends, text given to its heading or block as `read_html` does. With `book`, as `ebooks`
    reads a chapter: <header> is kept and images read as their alt text."""
    import io

    from lxml import etree

    sections: list[Section] = []
    path, parts, size = HeadingPath(), [], 0
    state = {"last_block": None, "heading": None, "pieces": None}

    def flush():
        _close(parts, path, sections)

    def emit(text, frame):
        nonlocal size
        if not text or frame.dropped or not frame.in_body:
            return
        if frame.heading is not None:
            state["pieces"].append(text)
            return
        if frame.block is not state["last_block"]:
            parts.append("\n")
            state["last_block"] = frame.block
        parts.append(text)
        size += len(text)
        limits.check_text(size)

    stack: list[_Frame] = []
    for event, element in etree.iterparse(io.BytesIO(data), events=("start", "end"), html=True, no_network=True,
                                          remove_comments=True, remove_pis=True):
        tick()
        tag = element.tag if isinstance(element.tag, str) else ""
        if event == "start":
            parent = stack[-1] if stack else None
            if parent is not None:
                emit(parent.element.text if parent.last is None else parent.last.tail, parent)
            dropped = (parent is not None and parent.dropped) or (tag in _DROP_TAGS and not (book and tag == "header")) \
                or element.get("role") in _HIDDEN_ROLES or element.get("aria-hidden") == "true"
            heading = parent.heading if parent is not None else None
            if tag in _HEADINGS and heading is None and not dropped:
                heading, state["pieces"] = element, []
            block = element if tag in _BLOCKS else (parent.block if parent is not None else None)
            stack.append(_Frame(element, dropped, heading, block, tag == "body" or (parent is not None and parent.in_body)))
            if book and tag == "img" and parent is not None:  # the picture's alt text, where it stands
                alt = " ".join((element.get("alt") or "").split())
                emit(f" [Image: {alt}] " if alt else "", parent)
            continue
        frame = stack.pop()
        emit(element.text if frame.last is None else frame.last.tail, frame)
        if frame.heading is element:
            pieces = [p.strip() for p in state["pieces"] if p.strip()]
            if state["pieces"]:
                flush()
                path.enter(int(tag[1]), " ".join(pieces))
                state["last_block"] = element
        if stack:
            parent = stack[-1]
            parent.last = element
            del element[:]  # its children are read: only its tail is still to come
            while element.getprevious() is not None:
                del parent.element[0]
    flush()
    return sections


def _close(parts: list[str], path: HeadingPath, sections: list[Section]) -> None:
    """The text gathered since the last heading becomes a section under the heading path (runs of
    spaces and blank lines collapsed); `parts` starts again empty."""
    body = re.sub(r"[ \t]+", " ", "".join(parts))
    body = re.sub(r"\n\s*\n+", "\n\n", body).strip()
    if body:
        sections.append(Section(body, heading=str(path)))
    parts.clear()
