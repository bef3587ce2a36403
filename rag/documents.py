"""Read one file into a `Document`: its text split into sections, each with a page number
(PDF) and a heading path (Markdown, reStructuredText, HTML, docx). Nothing here chunks or
embeds. Every failure is an `UnreadableFile` with a short reason a person can act on."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UnreadableFile

CODE_SUFFIXES = {
    ".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".java", ".kt", ".scala", ".c", ".h", ".cc",
    ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".m", ".r", ".jl", ".lua",
    ".pl", ".sh", ".bash", ".zsh", ".ps1", ".sql", ".yaml", ".yml", ".toml", ".ini", ".cfg",
    ".css", ".scss", ".tex", ".xml", ".proto", ".graphql", ".dockerfile", ".mk",
}
TEXT_SUFFIXES = {".txt", ".text", ".log", ".rst"} | CODE_SUFFIXES
SUFFIXES = TEXT_SUFFIXES | {".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".csv",
                            ".tsv", ".json", ".jsonl", ".ndjson"}


@dataclass
class Section:
    """A run of text with one page and one heading path; `start` is its offset in the page text."""

    text: str
    page: int | None = None
    heading: str = ""
    start: int = 0


@dataclass
class Document:
    path: str
    sections: list[Section] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


def supported(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES or path.name in ("Makefile", "Dockerfile")


def read(path: str | Path, data: bytes | None = None) -> Document:
    """Parse a file (or its already-read bytes) into a Document."""
    path = Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UnreadableFile(f"cannot read: {e.strerror or e}") from e
    if not data.strip():
        raise UnreadableFile("empty file")
    suffix = path.suffix.lower()
    reader = {
        ".pdf": _read_pdf, ".docx": _read_docx, ".html": _read_html, ".htm": _read_html,
        ".md": _read_markdown, ".markdown": _read_markdown, ".rst": _read_rst,
        ".csv": _read_csv, ".tsv": _read_csv, ".json": _read_json, ".jsonl": _read_jsonl,
        ".ndjson": _read_jsonl,
    }.get(suffix, lambda d: [Section(decode(d))])
    sections = [s for s in reader(data) if s.text.strip()]
    if not sections:
        raise UnreadableFile("no text found")
    return Document(str(path), sections)


# --- text decoding -------------------------------------------------------------------

def decode(data: bytes) -> str:
    """Bytes to str: UTF-8 (with or without BOM), else the encoding charset-normalizer detects.
    Binary data is refused rather than turned into mojibake."""
    if b"\x00" in data[:8192] and not (data.startswith((b"\xff\xfe", b"\xfe\xff"))):
        raise UnreadableFile("binary content, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise UnreadableFile("binary content or unknown text encoding") from None
        text = str(best)
    controls = sum(1 for c in text[:8192] if ord(c) < 32 and c not in "\n\r\t\f")
    if controls > 0.05 * min(len(text), 8192):
        raise UnreadableFile("binary content, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- formats -------------------------------------------------------------------------

def _read_pdf(data: bytes) -> list[Section]:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        pdf = PdfReader(io.BytesIO(data))
        if pdf.is_encrypted:
            try:
                ok = pdf.decrypt("")
            except Exception:
                ok = 0
            if not ok:
                raise UnreadableFile("encrypted PDF (needs a password)")
        pages = [Section(_clean_pdf_text(page.extract_text() or ""), page=i + 1)
                 for i, page in enumerate(pdf.pages)]
    except UnreadableFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise UnreadableFile(f"corrupt PDF ({type(e).__name__}: {str(e)[:80]})") from e
    except Exception as e:  # pypdf raises many kinds on damaged files
        raise UnreadableFile(f"corrupt PDF ({type(e).__name__}: {str(e)[:80]})") from e
    if not any(p.text.strip() for p in pages):
        raise UnreadableFile("PDF has no extractable text (scanned images? OCR is not supported)")
    return pages


def _clean_pdf_text(text: str) -> str:
    text = re.sub(r"-\n(?=[a-z])", "", text)  # re-join hyphenated line breaks
    return text.strip()


def _read_docx(data: bytes) -> list[Section]:
    import zipfile

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise UnreadableFile(f"corrupt .docx ({type(e).__name__})") from e
    sections, path, lines = [], [], []

    def flush():
        if lines:
            sections.append(Section("\n".join(lines), heading=" > ".join(path)))
            lines.clear()

    for para in document.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        match = re.match(r"(?:Heading|Title)\s*(\d*)", style)
        if match and para.text.strip():
            flush()
            level = int(match.group(1) or 1) if style.startswith("Heading") else 1
            del path[level - 1:]
            path.append(para.text.strip())
        elif para.text.strip():
            lines.append(para.text)
    flush()
    for table in document.tables:
        rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
        sections.append(Section("\n".join(rows), heading=" > ".join(path)))
    return sections


def _read_markdown(data: bytes) -> list[Section]:
    """Split at ATX headings (outside code fences); each section keeps its heading path."""
    text = decode(data)
    sections, path, start, fence = [], [], 0, False
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        match = None if fence else re.match(r"(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if match:
            sections.append(Section(text[start:offset], heading=" > ".join(path), start=start))
            level = len(match.group(1))
            del path[level - 1:]
            path.append(match.group(2).strip())
            start = offset + len(line)  # the heading line itself lives on as the heading path
        offset += len(line)
    sections.append(Section(text[start:], heading=" > ".join(path), start=start))
    return sections


def _read_rst(data: bytes) -> list[Section]:
    """Headings are a line underlined by punctuation; levels follow first-seen order."""
    text = decode(data)
    lines = text.splitlines(keepends=True)
    marks: list[str] = []
    sections, path, start, offset = [], [], 0, 0
    for i, line in enumerate(lines):
        nxt = lines[i + 1].rstrip("\n") if i + 1 < len(lines) else ""
        title = line.strip()
        if (title and nxt and len(set(nxt)) == 1 and nxt[0] in "=-~^\"'`#*+:._"
                and len(nxt) >= len(title) and not re.fullmatch(r"[=\-~^\"'`#*+:._]+", title)):
            sections.append(Section(text[start:offset], heading=" > ".join(path), start=start))
            if nxt[0] not in marks:
                marks.append(nxt[0])
            level = marks.index(nxt[0]) + 1
            del path[level - 1:]
            path.append(title)
            start = offset + len(line) + len(lines[i + 1])  # after the title and its underline
        offset += len(line)
    sections.append(Section(text[start:], heading=" > ".join(path), start=start))
    return sections


_DROP_TAGS = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form",
              "iframe", "svg", "template", "button", "select", "head"]
_BLOCKS = {"p", "div", "li", "ul", "ol", "pre", "table", "tr", "td", "th", "blockquote",
           "section", "article", "main", "dd", "dt", "figcaption", "br", "hr", "h1", "h2",
           "h3", "h4", "h5", "h6"}


def _read_html(data: bytes) -> list[Section]:
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
    path: list[str] = []
    parts: list[str] = []
    last_block = None

    def flush():
        body = re.sub(r"[ \t]+", " ", "".join(parts))
        body = re.sub(r"\n\s*\n+", "\n\n", body).strip()
        if body:
            sections.append(Section(body, heading=" > ".join(path)))
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
                level = int(heading.name[1])
                del path[level - 1:]
                path.append(heading.get_text(" ", strip=True))
                last_block = heading
            continue
        block = node.find_parent(lambda t: t.name in _BLOCKS)
        if block is not last_block:
            parts.append("\n")
            last_block = block
        parts.append(str(node))
    flush()
    return sections


def _read_csv(data: bytes) -> list[Section]:
    """Each row becomes one line `column: value; ...` so a passage keeps its column names."""
    text = decode(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    if not body:
        return [Section(", ".join(header))]
    lines = ["; ".join(f"{h.strip()}: {v.strip()}" for h, v in zip(header, row) if v.strip())
             for row in body]
    return [Section("\n".join(line for line in lines if line))]


def _flatten(value, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list):
        return [line for i, v in enumerate(value) for line in _flatten(v, f"{prefix}[{i}]")]
    return [f"{prefix}: {value}" if prefix else str(value)]


def _read_json(data: bytes) -> list[Section]:
    try:
        value = json.loads(decode(data))
    except json.JSONDecodeError as e:
        raise UnreadableFile(f"invalid JSON (line {e.lineno}: {e.msg})") from e
    if isinstance(value, list):
        return [Section("\n".join(_flatten(item)), heading=f"[{i}]") for i, item in enumerate(value)]
    return [Section("\n".join(_flatten(value)))]


def _read_jsonl(data: bytes) -> list[Section]:
    records = []
    for n, line in enumerate(decode(data).splitlines(), 1):
        if line.strip():
            try:
                records.append("\n".join(_flatten(json.loads(line))))
            except json.JSONDecodeError as e:
                raise UnreadableFile(f"invalid JSON Lines (line {n}: {e.msg})") from e
    return [Section("\n\n".join(records))]
