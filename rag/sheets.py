"""Excel workbooks (.xlsx, .xlsm) to sections: a heading per sheet, and one line per row
that names every value by its column header ("Row 7: Region: North; Q3 sales: 1,204"), so a
passage cut from the middle of a sheet still says what its numbers are.

Sheets are streamed (openpyxl's read-only mode): memory stays flat for 100,000 rows, and the
text is bounded by `max_text_mb` as it grows. Formulas are read as the values the spreadsheet
program last computed and saved; merged cells give their value to every cell they cover."""

from __future__ import annotations

import datetime as dt

from .documents import Limits, Section, open_archive, xml_events
from .errors import UnreadableFile

ROWS_PER_SECTION = 500  # rows are handed on in blocks; a chunk never crosses a block
MAX_MERGED_CELLS = 1_000_000  # merged cells filled per sheet (a hostile A1:XFD1048576 fills none past it)
_S = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def read_xlsx(data: bytes, limits: Limits) -> list[Section]:
    import io
    import warnings

    with open_archive(data, limits, ".xlsx") as archive:  # the zip-bomb guard, before openpyxl
        names = set(archive.namelist())
    if "xl/workbook.xml" not in names:
        raise UnreadableFile("corrupt .xlsx (no workbook part)")
    from openpyxl import load_workbook

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions it skips
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            sections, size = [], 0
            for sheet in book.worksheets:
                size = _sheet(sheet, data, limits, sections, size)
            return sections
        finally:
            book.close()
    except UnreadableFile:
        raise
    except Exception as e:  # openpyxl raises many kinds on damaged files (KeyError, ValueError, ...)
        raise UnreadableFile(f"corrupt .xlsx ({type(e).__name__}: {str(e)[:80]})") from e


def _sheet(sheet, data: bytes, limits: Limits, sections: list[Section], size: int) -> int:
    """Append one sheet's sections; returns the text size so far (for `max_text_mb`). The
    first row with values is the header, unless it holds one value over a wider row (a title:
    it joins the heading)."""
    if not hasattr(sheet, "iter_rows"):  # a chart sheet
        return size
    sheet.reset_dimensions()  # the declared size may be a lie (A1:XFD1048576): read what is there
    merged = _merged(data, getattr(sheet, "_worksheet_path", None), limits)
    heading, header, pending, lines, tops = sheet.title, None, None, [], {}
    for row in sheet.iter_rows():
        cells = [cell for cell in row if getattr(cell, "column", None) is not None]
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
        values = {c: v for c, v in values.items() if v}
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
        line = f"Row {r}: " + "; ".join(f"{header.get(c) or 'column ' + _letter(c)}: {v}"
                                        for c, v in sorted(values.items()))
        size += len(line) + 1
        limits.check_text(size)
        lines.append(line)
        if len(lines) >= ROWS_PER_SECTION:
            sections.append(Section("\n".join(lines), heading=heading))
            lines = []
    if header is None and pending is not None:  # a sheet of one row
        lines.append("; ".join(v for _, v in sorted(pending.items())))
    elif header is not None and not lines and not any(s.heading == heading for s in sections):
        lines.append("; ".join(v for _, v in sorted(header.items())))  # headers and no rows
    if lines:
        sections.append(Section("\n".join(lines), heading=heading))
    return size


def _merged(data: bytes, part: str | None, limits: Limits) -> dict[int, list]:
    """Row -> [(column, top-left (row, column) of its merged range)] for every cell a merged
    range covers. openpyxl's read-only mode skips merged ranges, so they are streamed from the
    sheet's part."""
    if not part:
        return {}
    from openpyxl.utils.cell import range_boundaries

    out: dict[int, list] = {}
    filled = 0
    with open_archive(data, limits, ".xlsx") as archive:
        name = part.lstrip("/")
        if name not in archive.namelist():
            return {}
        with archive.open(name) as xml:
            for element in xml_events(xml, (_S + "mergeCell",)):
                ref = element.get("ref") or ""
                element.clear()
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
