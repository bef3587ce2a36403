"""Spreadsheets (.xlsx and .xlsm; OpenDocument .ods) to sections: a heading per sheet, and one
line per row that names every value by its column header ("Row 7: Region: North; Q3 sales:
1,204"), so a passage cut from the middle of a sheet still says what its numbers are.

Sheets are streamed (openpyxl's read-only mode; content.xml of an .ods with lxml's iterparse):
memory stays flat for 100,000 rows, and the text is bounded by `max_text_mb` as it grows.
Formulas are read as the values the spreadsheet program last computed and saved; merged cells
give their value to every cell they cover. Both formats share `_table`: rows -> sections."""

from __future__ import annotations

import datetime as dt

from rag.core.errors import UnreadableFile
from rag.readers.base import Budget, Limits, Section, check_whole, drop, grouped, open_archive, xml_events

MAX_MERGED_CELLS = 1_000_000  # merged cells filled per sheet (a hostile A1:XFD1048576 fills none past it)
MAX_COLUMNS = 16_384  # columns read per row (Excel's and LibreOffice's own limit): a repeat count past it is a lie
MAX_ROWS = 1_048_576  # rows read per sheet (the same)
_S = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_XLSX_WHOLE = {"[Content_Types].xml", "xl/workbook.xml", "xl/_rels/workbook.xml.rels", "xl/styles.xml",
               "docProps/core.xml", "docProps/custom.xml"}


class _TextSize:
    """The text a file has yielded so far, across its sheets, checked against `max_text_mb`."""

    def __init__(self, limits: Limits):
        self.limits, self.size = limits, 0

    def add(self, line: str) -> str:
        self.size += len(line) + 1
        self.limits.check_text(self.size)
        return line


def _table(title: str, rows, size: _TextSize) -> list[Section]:
    """One sheet's rows, (row number, {column number: text}) with empty cells left out, as
    sections. The first row with values is the header, unless it holds one value over a wider
    row (a title: it joins the heading)."""
    heading, header, pending = title, None, None

    def lines():
        nonlocal heading, header, pending
        for r, values in rows:
            if not values:
                continue
            if header is None:
                if pending is None:
                    pending = values
                    continue
                if len(set(pending.values())) == 1 and len(set(values.values())) > 1:
                    heading, header, pending = f"{heading} > {next(iter(pending.values()))}", values, None
                    continue
                header, pending = pending, None
            yield size.add(f"Row {r}: " + "; ".join(f"{header.get(c) or 'column ' + _letter(c)}: {v}"
                                                    for c, v in sorted(values.items())))

    sections = grouped(lines(), size.limits)  # packed like CSV rows; a passage never crosses a section
    if not sections:
        only = pending if header is None else header  # a sheet of one row, or headers and no rows
        if only:
            sections = [Section(size.add("; ".join(v for _, v in sorted(only.items()))))]
    for section in sections:
        section.heading = heading  # known once the first rows are read, before any line is made
    return sections


# --- .xlsx ------------------------------------------------------------------------------------

def read_xlsx(data: bytes, limits: Limits) -> list[Section]:
    import io
    import warnings

    budget = Budget(limits)  # the file's, across its sheets
    with open_archive(data, limits, ".xlsx", budget) as archive:  # the zip-bomb guard, before openpyxl
        names = archive.names
        for name in names:  # the parts openpyxl parses whole (it streams the sheets and shared strings)
            if name in _XLSX_WHOLE or name.startswith(("xl/worksheets/_rels/", "xl/chartsheets/")):
                check_whole(archive, name)
    if "xl/workbook.xml" not in names:
        raise UnreadableFile("corrupt .xlsx (no workbook part)")
    from openpyxl import load_workbook

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions it skips
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            sections, size = [], _TextSize(limits)
            for sheet in book.worksheets:
                if hasattr(sheet, "iter_rows"):  # not a chart sheet
                    sections += _table(sheet.title, _xlsx_rows(sheet, data, limits, budget), size)
            return sections
        finally:
            book.close()
    except UnreadableFile:
        raise
    except Exception as e:  # openpyxl raises many kinds on damaged files (KeyError, ValueError, ...)
        raise UnreadableFile(f"corrupt .xlsx ({type(e).__name__}: {str(e)[:80]})") from e


def _xlsx_rows(sheet, data: bytes, limits: Limits, budget: Budget):
    """(row number, {column: text}) of each row, merged cells filled."""
    sheet.reset_dimensions()  # the declared size may be a lie (A1:XFD1048576): read what is there
    merged = _merged(data, getattr(sheet, "_worksheet_path", None), limits, budget)
    tops = {}
    for cells in _cells(sheet):
        budget.tick()
        if not cells:
            continue
        r = cells[0].row
        values = {cell.column: _text(cell.value, getattr(cell, "number_format", "General")) for cell in cells}
        covered = merged.get(r, ())
        for c, top in covered:  # a merged range's value is in its top-left cell ...
            if (r, c) == top:
                tops[top] = values.get(c, "")
        for c, top in covered:  # ... and belongs to every cell it covers
            if not values.get(c):
                values[c] = tops.get(top, "")
        yield r, {c: v for c, v in values.items() if v}


def _cells(sheet):
    """The cells a sheet's part holds, row by row. openpyxl's iter_rows pads each row with
    empty cells up to its last column: one cell in column XFD made 16,384 per row."""
    from openpyxl.cell.read_only import ReadOnlyCell
    from openpyxl.worksheet._reader import WorkSheetParser

    book = sheet.parent
    with sheet._get_source() as src:
        parser = WorkSheetParser(src, sheet._shared_strings, data_only=book.data_only, epoch=book.epoch,
                                 date_formats=book._date_formats, timedelta_formats=book._timedelta_formats)
        for _, row in parser.parse():
            yield [ReadOnlyCell(sheet, **cell) for cell in row]


def _merged(data: bytes, part: str | None, limits: Limits, budget: Budget) -> dict[int, list]:
    """Row -> [(column, top-left (row, column) of its merged range)] for every cell a merged
    range covers. openpyxl's read-only mode skips merged ranges, so they are streamed from the
    sheet's part; its rows are dropped as they stream by (iterparse keeps every element it
    passes: a 100,000-row sheet grew the process by 650 MB before they were)."""
    if not part:
        return {}
    from openpyxl.utils.cell import range_boundaries

    out: dict[int, list] = {}
    filled = 0
    with open_archive(data, limits, ".xlsx", budget) as archive:
        name = part.lstrip("/")
        if name not in archive.names:
            return {}
        with archive.open(name) as xml:
            # openpyxl streams the same part the same way (rows cleared, the rest kept)
            for element in xml_events(xml, (_S + "row", _S + "mergeCell"), budget, flat=False):
                ref = element.get("ref") or ""
                drop(element)
                if element.tag == _S + "row":
                    continue
                try:
                    c1, r1, c2, r2 = range_boundaries(ref)
                except (ValueError, TypeError):
                    continue
                if None in (c1, r1, c2, r2) or (c2 - c1 + 1) * (r2 - r1 + 1) + filled > MAX_MERGED_CELLS:
                    continue
                for r in range(r1, r2 + 1):
                    out.setdefault(r, []).extend((c, (r1, c1)) for c in range(c1, c2 + 1))
                filled += (c2 - c1 + 1) * (r2 - r1 + 1)
    return out


def _letter(c: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(c)


def _text(value, number_format: str = "General") -> str:
    """A cell as a person reads it: 1204 with a thousands format is "1,204", 0.25 as a
    percentage "25%", a date without a time "2024-03-01"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        fmt = number_format or "General"
        decimals = _decimals(fmt)
        if "%" in fmt:
            return f"{value * 100:.{decimals}f}%"
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            value = int(value)
        if "#,##0" in fmt or "#,#" in fmt:
            return f"{value:,.{decimals}f}" if decimals or isinstance(value, float) else f"{value:,}"
        if decimals and isinstance(value, (int, float)) and fmt != "General":
            return f"{value:.{decimals}f}"
        return f"{value:.12g}" if isinstance(value, float) else str(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ", "minutes")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    return " ".join(str(value).split())


def _decimals(fmt: str) -> int:
    """Digits after the point in a number format such as '#,##0.00' or '0.0%'."""
    fmt = fmt.split(";")[0]
    if "." not in fmt:
        return 0
    return len(fmt.split(".", 1)[1]) - len(fmt.split(".", 1)[1].lstrip("0#"))


# --- .ods -------------------------------------------------------------------------------------

_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"


def read_ods(data: bytes, limits: Limits) -> list[Section]:
    """An OpenDocument spreadsheet, streamed from content.xml. A cell's text is what the
    spreadsheet program displayed when it saved ("1,204", "25%", a formula's result), so
    number formats need no reading; a cell with no text gives its stored value."""
    from lxml import etree

    with open_archive(data, limits, ".ods") as archive:
        names = archive.names
        if "content.xml" not in names:
            raise UnreadableFile("corrupt .ods (no content part)")
        if "META-INF/manifest.xml" in names and b"encryption-data" in archive.read("META-INF/manifest.xml"):
            raise UnreadableFile("encrypted .ods (needs a password)")
        sections, size = [], _TextSize(limits)
        try:
            with archive.open("content.xml") as xml:
                for name, rows in _ods_tables(xml, archive.budget):
                    sections += _table(name, rows, size)
        except (etree.XMLSyntaxError, ValueError, EOFError, OSError) as e:
            raise UnreadableFile(f"corrupt .ods ({type(e).__name__}: {str(e)[:80]})") from e
    return sections


def _ods_tables(xml, budget: Budget):
    """(sheet name, rows) for each table:table, its rows read as they stream by; what ends
    outside a table (styles, settings) is forgotten as it ends."""
    from lxml import etree

    events = etree.iterparse(xml, events=("start", "end"), resolve_entities=False, no_network=True,
                             remove_comments=True, remove_pis=True)
    for event, element in events:
        parent = element.getparent()
        if event == "start" and element.tag == _TABLE + "table" and parent is not None and parent.tag == _OFFICE + "spreadsheet":
            yield element.get(_TABLE + "name") or "Sheet", _ods_rows(events, element, budget)
        elif event == "end":
            drop(element)


def _ods_rows(events, table, budget: Budget):
    """(row number, {column: text}) until `table` ends; repeated rows and cells expanded
    (within MAX_ROWS and MAX_COLUMNS), cells spanning several give their text to each."""
    r, spans, filled = 0, {}, 0  # spans: row -> {column: text} of merged ranges reaching it
    for event, element in events:
        if event == "end" and element is table:
            table.clear()
            return
        if event != "end" or element.tag != _TABLE + "table-row" or _in_inner_table(element, table):
            continue
        budget.tick()
        repeat = min(_count(element.get(_TABLE + "number-rows-repeated")), MAX_ROWS - r)
        values, c = {}, 0
        for cell in element:
            if cell.tag not in (_TABLE + "table-cell", _TABLE + "covered-table-cell"):
                continue
            times = min(_count(cell.get(_TABLE + "number-columns-repeated")), MAX_COLUMNS - c)
            text = _ods_cell(cell) if cell.tag == _TABLE + "table-cell" else ""
            if text:
                for k in range(times):
                    values[c + k + 1] = text
                width = _count(cell.get(_TABLE + "number-columns-spanned"))
                height = _count(cell.get(_TABLE + "number-rows-spanned"))
                if (width > 1 or height > 1) and filled + width * height <= MAX_MERGED_CELLS:
                    filled += width * height
                    for dr in range(height):
                        row = spans.setdefault(r + 1 + dr, {})
                        for dc in range(width):
                            row.setdefault(c + 1 + dc, text)
            c += times
            if c >= MAX_COLUMNS:
                break
        drop(element)  # memory stays flat whatever the sheet's size
        for done in range(1, repeat + 1):
            r += 1
            row = {**spans.pop(r, {}), **values}
            if row:
                yield r, row
            elif not spans:  # a run of empty rows (LibreOffice writes a million at the end): skipped whole
                r += repeat - done
                break
        if r >= MAX_ROWS:
            return


def _in_inner_table(row, table) -> bool:
    """A row of a table inside a cell (allowed by ODF), read as that cell's text instead."""
    parent = row.getparent()
    while parent is not None and parent is not table:
        if parent.tag == _TABLE + "table":
            return True
        parent = parent.getparent()
    return False


def _count(value) -> int:
    """A repeat or span count: a positive whole number, or 1 when missing or damaged."""
    try:
        return max(1, int(value)) if value is not None else 1
    except ValueError:
        return 1


def _ods_cell(cell) -> str:
    """A cell's displayed text (paragraphs joined by line breaks, text:s as its spaces,
    comments left out), or its stored value when it has none."""
    paragraphs = ["".join(_ods_text(p)) for p in cell if p.tag in (_TEXT + "p", _TEXT + "h")]
    text = " ".join(" ".join(paragraphs).split())
    if text:
        return text
    for attribute in ("value", "date-value", "time-value", "boolean-value", "string-value"):
        value = cell.get(_OFFICE + attribute)
        if value:
            return value
    return ""


def _ods_text(element):
    yield element.text or ""
    for child in element:
        if child.tag == _TEXT + "s":
            yield " " * min(_count(child.get(_TEXT + "c")), 100)
        elif child.tag in (_TEXT + "tab", _TEXT + "line-break"):
            yield " "
        elif child.tag != _OFFICE + "annotation":
            yield from _ods_text(child)
        yield child.tail or ""
