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
        body = re.sub(r"[ \t]+", " ", "".join(parts))
        body = re.sub(r"\n\s*\n+", "\n\n", body).strip()
        if body:
            sections.append(Section(body, heading=str(path)))
        parts.clear()

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
