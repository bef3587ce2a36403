"""Read one file into a `Document`: its text split into sections, each with a page number
(PDF) and a heading path (Markdown, reStructuredText, HTML, docx). Nothing here chunks or
embeds. Every failure is an `UnreadableFile` with a short reason a person can act on."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from rag.core.errors import UnreadableFile
from rag.readers import ebooks, ocr, sheets, slides
from rag.readers.base import Document, HeadingPath, Limits, Section, decode, drop, grouped, open_archive, xml_events
from rag.readers.html import read_html

CODE_SUFFIXES = {
    ".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".java", ".kt", ".scala", ".c", ".h", ".cc",
    ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".m", ".r", ".jl", ".lua",
    ".pl", ".sh", ".bash", ".zsh", ".ps1", ".sql", ".yaml", ".yml", ".toml", ".ini", ".cfg",
    ".css", ".scss", ".tex", ".xml", ".proto", ".graphql", ".dockerfile", ".mk",
}
TEXT_SUFFIXES = {".txt", ".text", ".log", ".rst"} | CODE_SUFFIXES
# Readers in modules of their own (slides, sheets, e-books, OCR)
OTHER_READERS = {".pptx": slides.read_pptx, ".xlsx": sheets.read_xlsx, ".xlsm": sheets.read_xlsx,
                 ".ods": sheets.read_ods, ".epub": ebooks.read_epub} | {
    suffix: ocr.read_image for suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")}
SUFFIXES = TEXT_SUFFIXES | {".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".csv",
                            ".tsv", ".json", ".jsonl", ".ndjson"} | set(OTHER_READERS)


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
        ".pdf": _read_pdf, ".docx": _read_docx, ".html": read_html, ".htm": read_html,
        ".md": _read_markdown, ".markdown": _read_markdown, ".rst": _read_rst,
        ".csv": _read_csv, ".tsv": _read_csv, ".json": _read_json, ".jsonl": _read_jsonl,
        ".ndjson": _read_jsonl,
    }.get(suffix, lambda d, _: [Section(decode(d))])
    reader = OTHER_READERS.get(suffix, reader)
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
# What the reader reads inside a paragraph or table (the rest is forgotten as it streams by)
_DOCX_READ = tuple(_W + t for t in ("t", "tab", "br", "cr", "pPr", "pStyle", "tr", "tc"))


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
                return _docx_sections(xml_events(xml, (_W + "p", _W + "tbl"), archive.budget, _DOCX_READ),
                                      styles, limits)
    except (zipfile.BadZipFile, KeyError, ValueError, etree.XMLSyntaxError, EOFError) as e:
        raise UnreadableFile(f"corrupt .docx ({type(e).__name__})") from e


def _docx_styles(archive) -> dict[str, str]:
    """Style id -> style name ('Heading1' -> 'heading 1'), streamed (the part may be of any size)."""
    from lxml import etree

    names = {}
    if "word/styles.xml" not in archive.names:
        return names
    try:
        with archive.open("word/styles.xml") as xml:
            for style in xml_events(xml, (_W + "style",), archive.budget, (_W + "name",)):
                name = style.find(_W + "name")
                if name is not None:
                    names[style.get(_W + "styleId")] = name.get(_W + "val") or ""
                drop(style)
    except etree.XMLSyntaxError:
        return {}
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

    for element in events:
        if not _in_body(element):
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


def _in_body(element) -> bool:
    """A block of the body: its parent is the body, or a content control's content there
    (w:sdt/w:sdtContent: cover pages, forms and templates wrap body paragraphs in them)."""
    parent = element.getparent()
    while parent is not None and parent.tag == _W + "sdtContent":
        sdt = parent.getparent()
        parent = sdt.getparent() if sdt is not None and sdt.tag == _W + "sdt" else None
    return parent is not None and parent.tag == _W + "body"


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
