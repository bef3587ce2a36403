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
# Readers in modules of their own (slides, sheets, e-books, OCR): suffix -> (module, function)
OTHER_READERS = {".pptx": ("slides", "read_pptx"), ".xlsx": ("sheets", "read_xlsx"),
                 ".xlsm": ("sheets", "read_xlsx"), ".ods": ("sheets", "read_ods"),
                 ".epub": ("ebooks", "read_epub")} | {
    suffix: ("ocr", "read_image") for suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")}
SUFFIXES = TEXT_SUFFIXES | {".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".csv",
                            ".tsv", ".json", ".jsonl", ".ndjson"} | set(OTHER_READERS)


@dataclass(frozen=True)
class Limits:
    """What one file may expand to; each breach fails that file alone with a reason.
    Defaults are far above real documents (the 5,000-page PDF held) and far below what
    exhausts a 2-core, 24 GB machine."""

    max_inflated_mb: float = 256.0  # any archive member (.docx parts) once decompressed
    max_text_mb: float = 64.0  # text extracted from one file
    max_json_depth: int = 64  # nesting of JSON values
    max_ocr_seconds: float = 300.0  # OCR of one file's pages; pages past it are reported skipped

    def check_text(self, n_chars: int) -> None:
        if n_chars > self.max_text_mb * 2**20:
            raise UnreadableFile(f"extracted text is over the {self.max_text_mb:g} MB limit (max_text_mb)")


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
    skipped: list[tuple[int | None, str]] = field(default_factory=list)  # (page, why) of pages not read

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


class HeadingPath:
    """The headings above the current line: entering a level-n heading drops the ones at n
    and below ("Install > Linux" then a level-2 "Windows" gives "Install > Windows")."""

    def __init__(self):
        self.titles: list[str] = []

    def enter(self, level: int, title: str) -> None:
        del self.titles[level - 1:]
        self.titles.append(title)

    def __str__(self) -> str:
        return " > ".join(self.titles)


def supported(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES or path.name in ("Makefile", "Dockerfile")


def read(path: str | Path, data: bytes | None = None, limits: Limits = Limits()) -> Document:
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
    }.get(suffix, lambda d, _: [Section(decode(d))])
    if suffix in OTHER_READERS:
        import importlib

        module, name = OTHER_READERS[suffix]
        reader = getattr(importlib.import_module(f"rag.{module}"), name)
    try:
        result = reader(data, limits)  # sections, or (sections, [(page, why) passed over])
    except RecursionError:
        raise UnreadableFile("nested too deeply to read") from None
    sections, skipped = result if isinstance(result, tuple) else (result, [])
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise UnreadableFile(f"page {skipped[0][0]}: {skipped[0][1]}" if skipped else "no text found")
    limits.check_text(sum(len(s.text) for s in sections))
    return Document(str(path), sections, skipped)


# --- text decoding -------------------------------------------------------------------

SNIFF_BYTES = 8192  # the head of a file that tells text from binary
MAX_CONTROL_SHARE = 0.05  # more control characters than this in the head: binary (text has ~0)

def decode(data: bytes) -> str:
    """Bytes to str: UTF-8 (with or without BOM), else the encoding charset-normalizer detects.
    Binary data is refused rather than turned into mojibake."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = data.decode("utf-16").encode()
    elif b"\x00" in data[:SNIFF_BYTES]:
        encoding = _utf16_without_bom(data[:SNIFF_BYTES])
        if encoding is None:
            raise UnreadableFile("binary content, not text")
        try:
            data = data.decode(encoding).encode()
        except UnicodeDecodeError:
            raise UnreadableFile("binary content, not text") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise UnreadableFile("binary content or unknown text encoding") from None
        text = str(best)
    controls = sum(1 for c in text[:SNIFF_BYTES] if ord(c) < 32 and c not in "\n\r\t\f")
    if controls > MAX_CONTROL_SHARE * min(len(text), SNIFF_BYTES):
        raise UnreadableFile("binary content, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _utf16_without_bom(head: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when every other byte is zero, as in UTF-16 text of Latin
    script (CJK UTF-16 without a BOM has no such tell and is left to the binary check)."""
    even, odd = head[0::2], head[1::2]
    if len(head) >= 4 and odd.count(0) >= 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if len(head) >= 4 and even.count(0) >= 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


# --- formats -------------------------------------------------------------------------

def _read_pdf(data: bytes, limits: Limits) -> list[Section]:
    import logging

    from pypdf import PdfReader

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
        scanned = [p.page for p, page in zip(pages, pdf.pages) if not _usable(p.text) and _has_images(page)]
    except UnreadableFile:
        raise
    except Exception as e:  # pypdf raises many kinds on damaged files (PdfReadError, ValueError, ...)
        raise UnreadableFile(f"corrupt PDF ({type(e).__name__}: {str(e)[:80]})") from e
    skipped = _ocr_pages(data, pages, scanned, limits) if scanned else []
    if not any(p.text.strip() for p in pages):
        if skipped:
            raise UnreadableFile(f"PDF has no text layer, and its {len(skipped)} scanned page(s) were not read: "
                                 f"{skipped[0][1].removeprefix(SCAN_SKIPPED)}")
        raise UnreadableFile("PDF has no extractable text")
    return pages, skipped


SCAN_SKIPPED = "scanned page not read: "
MIN_PAGE_LETTERS = 16  # a page with fewer letters and digits in its text layer, and an image, is OCR'd


def _usable(text: str) -> bool:
    """A text layer worth keeping: some letters, and not the private-use and replacement
    characters a PDF without a character map (common in Chinese PDFs) extracts to."""
    letters = sum(1 for c in text if c.isalnum())
    odd = sum(1 for c in text if c == "\ufffd" or "\ue000" <= c <= "\uf8ff")
    return letters >= MIN_PAGE_LETTERS and odd <= 0.1 * len(text)


def _has_images(page) -> bool:
    try:
        return len(page.images) > 0
    except Exception:  # noqa: BLE001 - an image pypdf cannot list is still worth a look
        return True


def _ocr_pages(data: bytes, pages: list[Section], numbers: list[int], limits: Limits) -> list[tuple[int, str]]:
    """OCR the pages (1-based `numbers`) that have images and no usable text layer, in place;
    returns the (page, why) of each one that could not be read."""
    from . import ocr

    why = ocr.unavailable()
    if why is None:
        try:
            import pypdfium2 as pdfium
        except ImportError:
            why = f"the PDF renderer is not installed (pypdfium2): {ocr.HOW_TO_ENABLE}"
    if why:
        return [(n, SCAN_SKIPPED + why) for n in numbers]
    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as e:  # noqa: BLE001 - pdfium refuses some files pypdf reads
        return [(n, f"{SCAN_SKIPPED}pdfium could not render it ({type(e).__name__})") for n in numbers]
    clock, skipped = ocr.Clock(limits), []
    try:
        for n in numbers:
            if not clock.left():
                skipped.append((n, SCAN_SKIPPED + clock.reason()))
                continue
            page = pdf[n - 1]
            width, height = page.get_size()
            scale = min(4.0, ocr.RENDER_SIDE / max(width, height, 1))
            text = ocr.recognize(page.render(scale=scale).to_pil())
            if len(text.strip()) > len(pages[n - 1].text.strip()):
                pages[n - 1].text = text
            limits.check_text(sum(len(p.text) for p in pages))
    finally:
        pdf.close()
    return skipped


def _clean_pdf_text(text: str) -> str:
    text = re.sub(r"-\n(?=[a-z])", "", text)  # re-join hyphenated line breaks
    return text.strip()


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def open_archive(data: bytes, limits: Limits, kind: str):
    """The zip inside a .docx, .pptx, .xlsx or .epub, refused when a member would inflate past
    `max_inflated_mb` (a zip bomb is refused before it inflates: zipfile never reads past a
    member's declared size)."""
    import zipfile

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise UnreadableFile(f"corrupt {kind} (not a zip archive)") from e
    for member in archive.infolist():
        if member.file_size > limits.max_inflated_mb * 2**20:
            archive.close()
            raise UnreadableFile(f"archive member {member.filename} inflates to "
                                 f"{member.file_size / 2**20:.0f} MB, over the "
                                 f"{limits.max_inflated_mb:g} MB limit (max_inflated_mb)")
    return archive


def xml_events(stream, tags):
    """Elements of `tags` as each ends, from an archive member, with entities and network
    access off (no billion laughs, no fetching)."""
    from lxml import etree

    for _, element in etree.iterparse(stream, events=("end",), tag=tags, resolve_entities=False,
                                      no_network=True, remove_comments=True):
        yield element


def drop(element) -> None:
    """Forget an element that was read, and the siblings before it: lxml's iterparse keeps
    every element it passes, so without this a part of any size is held whole in memory."""
    element.clear()
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def xml_root(archive, name: str):
    """A small archive member (manifest, relationships) parsed whole, entities and network off."""
    from lxml import etree

    return etree.fromstring(archive.read(name), etree.XMLParser(resolve_entities=False, no_network=True))


def _read_docx(data: bytes, limits: Limits) -> list[Section]:
    """Body paragraphs (with Heading/Title styles as the heading path), then tables, streamed
    from word/document.xml with lxml: python-docx needed minutes and gigabytes for a part of
    a million paragraphs, and a zip bomb is made of exactly that."""
    import zipfile

    from lxml import etree

    try:
        with open_archive(data, limits, ".docx") as archive:
            styles = _docx_styles(archive)
            with archive.open("word/document.xml") as xml:
                return _docx_sections(etree.iterparse(
                    xml, events=("end",), tag=(_W + "p", _W + "tbl"), resolve_entities=False,
                    no_network=True, remove_comments=True), styles, limits)
    except (zipfile.BadZipFile, KeyError, ValueError, etree.XMLSyntaxError, EOFError) as e:
        raise UnreadableFile(f"corrupt .docx ({type(e).__name__})") from e


def _docx_styles(archive) -> dict[str, str]:
    """Style id -> style name ('Heading1' -> 'heading 1')."""
    from lxml import etree

    try:
        root = etree.fromstring(archive.read("word/styles.xml"), etree.XMLParser(resolve_entities=False,
                                                                                no_network=True))
    except (KeyError, etree.XMLSyntaxError):
        return {}
    names = {}
    for style in root.iter(_W + "style"):
        name = style.find(_W + "name")
        if name is not None:
            names[style.get(_W + "styleId")] = name.get(_W + "val") or ""
    return names


def _docx_text(paragraph) -> str:
    parts = []
    for node in paragraph.iter(_W + "t", _W + "tab", _W + "br", _W + "cr"):
        parts.append(node.text or "" if node.tag == _W + "t" else "\t" if node.tag == _W + "tab" else "\n")
    return "".join(parts)


def _docx_sections(events, styles: dict[str, str], limits: Limits) -> list[Section]:
    sections, path, lines, tables, size = [], HeadingPath(), [], [], 0

    def flush():
        if lines:
            sections.append(Section("\n".join(lines), heading=str(path)))
            lines.clear()

    for _, element in events:
        parent = element.getparent()
        if parent is None or parent.tag != _W + "body":
            continue  # a paragraph inside a table: read with its table
        if element.tag == _W + "tbl":
            rows = [" | ".join("\n".join(_docx_text(p) for p in cell.iter(_W + "p")).strip()
                               for cell in row.iter(_W + "tc")) for row in element.iter(_W + "tr")]
            tables.append(("\n".join(rows), str(path)))
        else:
            text = _docx_text(element)
            size += len(text)
            style_id = element.find(f"{_W}pPr/{_W}pStyle")
            style = styles.get(style_id.get(_W + "val"), "") if style_id is not None else ""
            match = re.match(r"(?:heading|title)\s*(\d*)", style, re.I)
            if match and text.strip():
                flush()
                path.enter(int(match.group(1) or 1) if style.lower().startswith("heading") else 1, text.strip())
            elif text.strip():
                lines.append(text)
        drop(element)  # memory stays flat whatever the part's size
        limits.check_text(size)
    flush()
    return sections + [Section(text, heading=heading) for text, heading in tables]


def _read_markdown(data: bytes, limits: Limits) -> list[Section]:
    """Split at ATX headings (outside code fences); each section keeps its heading path."""
    text = decode(data)
    sections, path, start, fence = [], HeadingPath(), 0, False
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        match = None if fence else re.match(r"(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if match:
            sections.append(Section(text[start:offset], heading=str(path), start=start))
            path.enter(len(match.group(1)), match.group(2).strip())
            start = offset + len(line)  # the heading line itself lives on as the heading path
        offset += len(line)
    sections.append(Section(text[start:], heading=str(path), start=start))
    return sections


def _read_rst(data: bytes, limits: Limits) -> list[Section]:
    """Headings are a line underlined by punctuation; levels follow first-seen order."""
    text = decode(data)
    lines = text.splitlines(keepends=True)
    marks: list[str] = []
    sections, path, start, offset = [], HeadingPath(), 0, 0
    for i, line in enumerate(lines):
        nxt = lines[i + 1].rstrip("\n") if i + 1 < len(lines) else ""
        title = line.strip()
        if (title and nxt and len(set(nxt)) == 1 and nxt[0] in "=-~^\"'`#*+:._"
                and len(nxt) >= len(title) and not re.fullmatch(r"[=\-~^\"'`#*+:._]+", title)):
            sections.append(Section(text[start:offset], heading=str(path), start=start))
            if nxt[0] not in marks:
                marks.append(nxt[0])
            path.enter(marks.index(nxt[0]) + 1, title)
            start = offset + len(line) + len(lines[i + 1])  # after the title and its underline
        offset += len(line)
    sections.append(Section(text[start:], heading=str(path), start=start))
    return sections


_DROP_TAGS = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form",
              "iframe", "svg", "template", "button", "select", "head"]
_BLOCKS = {"p", "div", "li", "ul", "ol", "pre", "table", "tr", "td", "th", "blockquote",
           "section", "article", "main", "dd", "dt", "figcaption", "br", "hr", "h1", "h2",
           "h3", "h4", "h5", "h6"}


def _read_html(data: bytes, limits: Limits) -> list[Section]:
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


# Records (CSV rows, JSON elements, JSON Lines) are grouped into sections of about this many
# characters, at record boundaries: the splitter packs each group's records into passages
# (a passage never crosses a section), works on small strings, and can stop a file at
# max_chunks_per_file without splitting it all. A section per record made a passage per
# record (500,000 for a 5 MB JSON array); one section per file made the splitter take
# minutes over a 10 MB string before anything could be stored.
RECORD_GROUP_CHARS = 8192


def grouped(records, limits: Limits, separator: str = "\n", heading: str = "") -> list[Section]:
    """Records (each a self-contained string: keys or column names kept) as sections of about
    RECORD_GROUP_CHARS under `heading`, with offsets into the document's text. Used for CSV,
    JSON and spreadsheet rows alike."""
    sections, group, size, start, total = [], [], 0, 0, 0

    def close():
        nonlocal start, group, size
        if group:
            text = separator.join(group)
            sections.append(Section(text, heading=heading, start=start))
            start += len(text) + 2  # Document.text joins sections with a blank line
            group, size = [], 0

    for record in records:
        if not record.strip():
            continue
        if group and size + len(separator) + len(record) > RECORD_GROUP_CHARS:
            close()
        group.append(record)
        size += len(record) + len(separator)
        total += len(record) + len(separator)
        limits.check_text(total)  # a huge file fails here, before the rest is read
    close()
    return sections


def _read_csv(data: bytes, limits: Limits) -> list[Section]:
    """Each row becomes one line `column: value; ...` so a passage keeps its column names;
    rows are read one at a time and grouped (see RECORD_GROUP_CHARS)."""
    text = decode(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    csv.field_size_limit(int(limits.max_text_mb * 2**20))  # the default 128 KB refused real cells
    rows = csv.reader(io.StringIO(text), dialect)
    header = next(rows, None)
    if header is None:
        return []
    header = [h.strip() for h in header]
    lines = ("; ".join(f"{h}: {v.strip()}" for h, v in zip(header, row) if v.strip()) for row in rows)
    sections = grouped(lines, limits)
    return sections or [Section(", ".join(header))]


def _flatten(value, prefix: str = "", limit: int = 64, depth: int = 0) -> list[str]:
    if depth > limit:
        raise UnreadableFile(f"JSON nested more than {limit} levels deep (max_json_depth)")
    if isinstance(value, dict):
        return [line for k, v in value.items()
                for line in _flatten(v, f"{prefix}.{k}" if prefix else str(k), limit, depth + 1)]
    if isinstance(value, list):
        return [line for i, v in enumerate(value) for line in _flatten(v, f"{prefix}[{i}]", limit, depth + 1)]
    return [f"{prefix}: {value}" if prefix else str(value)]


def _load_json(text: str, limits: Limits, where: str = ""):
    """Parse; nesting is bounded twice: by the parser here (RecursionError past about a
    thousand levels) and by `max_json_depth` in `_flatten`."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise UnreadableFile(f"JSON nested too deeply{where} (max_json_depth is {limits.max_json_depth})") from None
    return value


def _json_records(value, limit: int):
    """The records of a JSON value: each element of a top-level array (its lines prefixed
    with its index, `[12].name: ...`, so it reads on its own), each element of an array
    under a top-level key (`items[12].name: ...`) and each other top-level value."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield "\n".join(_flatten(item, f"[{i}]", limit, 1))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list):
                for i, element in enumerate(item):
                    yield "\n".join(_flatten(element, f"{key}[{i}]", limit, 2))
            else:
                yield "\n".join(_flatten(item, str(key), limit, 1))
    else:
        yield "\n".join(_flatten(value, limit=limit))


def _read_json(data: bytes, limits: Limits) -> list[Section]:
    try:
        value = _load_json(decode(data), limits)
    except json.JSONDecodeError as e:
        raise UnreadableFile(f"invalid JSON (line {e.lineno}: {e.msg})") from e
    return grouped(_json_records(value, limits.max_json_depth), limits, "\n\n")


def _read_jsonl(data: bytes, limits: Limits) -> list[Section]:
    def records():
        for n, line in enumerate(decode(data).splitlines(), 1):
            if line.strip():
                try:
                    value = _load_json(line, limits, f" on line {n}")
                except json.JSONDecodeError as e:
                    raise UnreadableFile(f"invalid JSON Lines (line {n}: {e.msg})") from e
                yield "\n".join(_flatten(value, limit=limits.max_json_depth))

    return grouped(records(), limits, "\n\n")
