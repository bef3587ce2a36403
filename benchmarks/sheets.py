"""A 100,000-row workbook through `rag ingest`: wall time, peak memory, passages, and whether
every passage names the columns of each row it holds (issue 23: "an .xlsx of 100,000 rows
ingested within the memory bound with every passage holding its headers").

The workbook (xlsxwriter, constant-memory mode) has one sheet of seven columns: text,
numbers with a thousands format, a percentage and a date, and a title row over the header.
`rag ingest` runs in a child process under /usr/bin/time -v (peak RSS of that process).

    .venv/bin/python benchmarks/sheets.py [--rows 100000] [--format xlsx|ods] [--keep DIR]
                                          [--max-chunks N]

A row of seven named values is about 50 word pieces, so 128-piece passages hold two or three
rows: 100,000 rows make about 45,000 passages, over the default max_chunks_per_file (20,000),
and the file fails with that reason; --max-chunks sets RAG_MAX_CHUNKS_PER_FILE for the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
HEADERS = ["Region", "Quarter", "Product", "Units", "Revenue", "Margin", "Shipped"]
REGIONS = ["North", "South", "East", "West", "Central"]
PRODUCTS = ["lamp oil", "wicks", "lens polish", "mantles", "foghorn reeds", "chimney glass"]


def row(i: int) -> list:
    return [REGIONS[i % 5], f"Q{i % 4 + 1}", PRODUCTS[i % 6], 100 + i * 7 % 9000,
            1000 + i * 37 % 100000, (i % 50) / 100, dt.date(2020, 1, 1) + dt.timedelta(days=i % 1500)]


def make_xlsx(path: Path, rows: int) -> None:
    import xlsxwriter

    book = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    sheet = book.add_worksheet("Sales")
    thousands, percent, date = (book.add_format({"num_format": f}) for f in ("#,##0", "0%", "yyyy-mm-dd"))
    sheet.write(0, 0, "Supplies sold per region")
    sheet.write_row(1, 0, HEADERS)
    for i in range(rows):
        values = row(i)
        sheet.write_row(i + 2, 0, values[:3])
        sheet.write_number(i + 2, 3, values[3], thousands)
        sheet.write_number(i + 2, 4, values[4], thousands)
        sheet.write_number(i + 2, 5, values[5], percent)
        sheet.write_datetime(i + 2, 6, dt.datetime.combine(values[6], dt.time()), date)
    book.close()


def make_ods(path: Path, rows: int) -> None:
    """The same sheet as OpenDocument, written as LibreOffice lays it out (displayed text in
    each cell, stored values beside it)."""
    import zipfile
    from xml.sax.saxutils import escape

    def cell(text: str, value=None, kind="string") -> str:
        stored = f' office:value-type="{kind}"' + (f' office:value="{value}"' if value is not None else "")
        return f"<table:table-cell{stored}><text:p>{escape(text)}</text:p></table:table-cell>"

    lines = ['<?xml version="1.0" encoding="UTF-8"?><office:document-content '
             'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
             'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
             'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:spreadsheet>'
             '<table:table table:name="Sales">',
             f"<table:table-row>{cell('Supplies sold per region')}</table:table-row>",
             "<table:table-row>" + "".join(cell(h) for h in HEADERS) + "</table:table-row>"]
    for i in range(rows):
        region, quarter, product, units, revenue, margin, shipped = row(i)
        lines.append("<table:table-row>" + cell(region) + cell(quarter) + cell(product)
                     + cell(f"{units:,}", units, "float") + cell(f"{revenue:,}", revenue, "float")
                     + cell(f"{margin:.0%}", margin, "percentage") + cell(shipped.isoformat()) + "</table:table-row>")
    lines.append("</table:table></office:spreadsheet></office:body></office:document-content>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet", compress_type=zipfile.ZIP_STORED)
        z.writestr("content.xml", "\n".join(lines))


def ingest(folder: Path, index: Path, max_chunks: int | None) -> tuple[dict, float, int, str]:
    """`rag ingest --json` in a child: (report, wall s, peak RSS MB, stderr tail)."""
    command = ["/usr/bin/time", "-v", str(ROOT / ".venv" / "bin" / "rag"), "ingest", str(folder),
               "--index", str(index), "--json"]
    start = time.perf_counter()
    env = dict(os.environ, **({"RAG_MAX_CHUNKS_PER_FILE": str(max_chunks)} if max_chunks else {}))
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    report = json.loads(done.stdout) if done.stdout.strip() else {}
    return report, seconds, int(peak.group(1)) // 1024 if peak else -1, done.stderr[-2000:]


def check_passages(index: Path, rows: int) -> dict:
    """Every line of every passage is one row naming all seven columns; every row is somewhere."""
    conn = sqlite3.connect(index / "chunks.sqlite")
    seen, bad, passages, headings = set(), 0, 0, set()
    for text, heading in conn.execute("SELECT text, heading FROM chunks"):
        passages += 1
        headings.add(heading)
        lines = text.splitlines()
        ok = all(line.startswith("Row ") and all(f"{h}: " in line for h in HEADERS) for line in lines)
        bad += not ok
        seen.update(int(m) for m in re.findall(r"^Row (\d+):", text, re.M))
    return {"passages": passages, "passages without their headers": bad,
            "rows found": len(seen), "rows missing": rows - len(seen), "headings": sorted(headings)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--format", choices=("xlsx", "ods"), default="xlsx")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    parser.add_argument("--max-chunks", type=int, help="max_chunks_per_file for the run (default: rag's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        folder = work / "docs"
        folder.mkdir(parents=True, exist_ok=True)
        book = folder / f"sales.{args.format}"
        start = time.perf_counter()
        (make_xlsx if args.format == "xlsx" else make_ods)(book, args.rows)
        print(f"built {book.name}: {args.rows:,} rows, {book.stat().st_size / 2**20:.1f} MB "
              f"in {time.perf_counter() - start:.1f} s", flush=True)
        report, seconds, peak, stderr = ingest(folder, work / "index", args.max_chunks)
        if report.get("failed") or not report.get("chunks"):
            print(f"ingest failed after {seconds:.1f} s (peak RSS {peak:,} MB):",
                  json.dumps(report.get("failed"), ensure_ascii=False) or stderr)
            return
        check = check_passages(work / "index", args.rows)
        print("| rows | format | wall s | peak RSS MB | passages | rows/s | passages without headers | rows missing |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {args.rows:,} | .{args.format} | {seconds:.1f} | {peak:,} | {report['chunks']:,} | "
              f"{args.rows / seconds:,.0f} | {check['passages without their headers']} | {check['rows missing']} |")
        print("headings:", check["headings"])


if __name__ == "__main__":
    sys.exit(main())
