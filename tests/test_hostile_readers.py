"""Hostile input, round 4 (issue 32), the readers' part: small files that cost memory and time
(cases 6-10) and Word content controls (case 18). Each hostile file is built here, small on
disk; reads that could take the machine run in a child process under a memory limit
(RLIMIT_AS) and a timeout, so a regression fails the test instead of exhausting the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile

import pytest

from rag.core.errors import UnreadableFile
from rag.readers.base import Limits
from rag.readers.documents import read

# The child reads one file under an address-space limit (its size at start plus LIMIT_MB) and
# reports what it read, or why not, its seconds and its peak memory growth (ru_maxrss).
CHILD = r"""
import json, resource, sys, time
from rag.readers.base import Limits
from rag.readers.documents import read
from rag.core.errors import UnreadableFile
path, limit_mb, limits = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + limit_mb * 2**20, resource.RLIM_INFINITY))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
try:
    doc = read(path, limits=Limits(**limits))
    out = {"sections": [[s.text, s.page, s.heading] for s in doc.sections]}
except UnreadableFile as e:
    out = {"refused": str(e)}
except MemoryError:
    out = {"memory": True}
out["seconds"] = time.monotonic() - start
out["grew_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps(out))
"""


def read_bounded(path, seconds: float = 10, memory_mb: int = 1024, **limits) -> dict:
    """Read `path` in a child process bounded in time and memory; fail the test past either."""
    try:
        run = subprocess.run([sys.executable, "-c", CHILD, str(path), str(memory_mb), json.dumps(limits)],
                             capture_output=True, text=True, timeout=seconds, env=os.environ)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {path.name} took over {seconds} s")
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert not out.get("memory"), f"reading {path.name} needed over {memory_mb} MB"
    return out


def zipped(path, members: dict[str, bytes | str]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


# --- builders ----------------------------------------------------------------------------------

P = "http://schemas.openxmlformats.org/presentationml/2006/main"
A = "http://schemas.openxmlformats.org/drawingml/2006/main"
R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
REL = "http://schemas.openxmlformats.org/package/2006/relationships"
SLIDE_TYPE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/slide"


def slide_xml(text: str, padding: bytes = b"") -> bytes:
    """A slide with one text box; `padding` goes before it in the shape tree (elements the
    reader does not keep)."""
    return (f'<p:sld xmlns:p="{P}" xmlns:a="{A}"><p:cSld><p:spTree>'.encode() + padding +
            f'<p:sp><p:txBody><a:p><a:r><a:t>{text}</a:t></a:r></a:p></p:txBody></p:sp>'
            '</p:spTree></p:cSld></p:sld>'.encode())


def pptx(path, slides: dict[str, bytes], listing: list[str], extra: dict | None = None,
         presentation_padding: bytes = b""):
    """A deck of `slides` (part name -> xml) whose presentation lists `listing` (part names,
    repeats allowed, missing ones too)."""
    targets = sorted(set(listing))
    rels = "".join(f'<Relationship Id="rId{i}" Type="{SLIDE_TYPE}" Target="slides/{t}"/>'
                   for i, t in enumerate(targets, 1))
    ids = "".join(f'<p:sldId id="{256 + n}" r:id="rId{targets.index(t) + 1}"/>' for n, t in enumerate(listing))
    presentation = (f'<p:presentation xmlns:p="{P}" xmlns:r="{R}"><p:sldIdLst>{ids}</p:sldIdLst>'.encode()
                    + presentation_padding + b"</p:presentation>")
    members = {"ppt/presentation.xml": presentation,
               "ppt/_rels/presentation.xml.rels": f'<Relationships xmlns="{REL}">{rels}</Relationships>'}
    members |= {f"ppt/slides/{name}": xml for name, xml in slides.items()}
    return zipped(path, members | (extra or {}))


W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx(path, body: str | bytes, styles: bytes | None = None):
    body = body.encode() if isinstance(body, str) else body
    members = {"word/document.xml": f'<w:document xmlns:w="{W}"><w:body>'.encode() + body + b"</w:body></w:document>"}
    if styles is not None:
        members["word/styles.xml"] = styles
    return zipped(path, members)


def para(text: str, style: str = "") -> str:
    ppr = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f"<w:p>{ppr}<w:r><w:t>{text}</w:t></w:r></w:p>"


OPF = "http://www.idpf.org/2007/opf"


def epub(path, chapters: dict[str, bytes], spine: list[str]):
    manifest = "".join(f'<item id="{n}" href="{n}" media-type="application/xhtml+xml"/>' for n in chapters)
    refs = "".join(f'<itemref idref="{n}"/>' for n in spine)
    members = {
        "mimetype": "application/epub+zip",
        "META-INF/container.xml": ('<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container" version="1.0">'
                                   '<rootfiles><rootfile full-path="OEBPS/book.opf"/></rootfiles></container>'),
        "OEBPS/book.opf": (f'<package xmlns="{OPF}" version="3.0"><manifest>{manifest}</manifest>'
                           f"<spine>{refs}</spine></package>"),
    }
    members |= {f"OEBPS/{n}": data for n, data in chapters.items()}
    return zipped(path, members)


def chapter(body: bytes) -> bytes:
    return b'<html xmlns="http://www.w3.org/1999/xhtml"><body>' + body + b"</body></html>"


# --- case 6: a small .epub with one huge chapter -----------------------------------------------

def test_epub_chapter_of_millions_of_tags_streams_in_bounded_time_and_memory(tmp_path):
    """A 31 KB .epub holding one 20 MB chapter of <p>a</p> took 214 s and 5.1 GB: such a
    chapter is streamed, in flat memory, and the file's parse time bounds it."""
    huge = epub(tmp_path / "huge.epub", {"c1.xhtml": chapter(b"<p>a</p>" * 2_500_000)}, ["c1.xhtml"])
    assert huge.stat().st_size < 100_000
    out = read_bounded(huge, seconds=10, memory_mb=1024, max_parse_seconds=2)
    assert "max_parse_seconds" in out.get("refused", "") and "\n" not in out["refused"], out
    assert out["grew_mb"] < 100, out
    big = epub(tmp_path / "big.epub", {"c1.xhtml": chapter(b"<h1>Log</h1>" + b"<p>a</p>" * 150_000)}, ["c1.xhtml"])
    out = read_bounded(big, seconds=10, memory_mb=1024)  # 300,000 tags: parsed whole, ~6 s and ~600 MB
    assert [s[2] for s in out["sections"]] == ["Log"] and out["sections"][0][0].split() == ["a"] * 150_000, out
    assert out["grew_mb"] < 100, out["grew_mb"]
    good = epub(tmp_path / "good.epub", {"c1.xhtml": chapter(b"<h1>Storms</h1>" + b"<p>The gale rose.</p>" * 2000)},
                ["c1.xhtml"])
    doc = read(good)
    assert doc.sections[0].heading == "Storms" and doc.text.count("The gale rose.") == 2000


# --- case 7: parts listed many times -----------------------------------------------------------

def test_parts_listed_many_times_are_read_once_and_inflation_is_bounded_per_file(tmp_path):
    """The member limit held per read: one big slide listed 20 times was inflated 20 times
    (16 s, 2.25 GB at 200 MB). Here at 1/40 scale, with max_inflated_mb=10."""
    padding = b"<p:extLst/>" * 500_000  # 5.5 MB of slide, inflated once is within the limit
    big = slide_xml("Keeper's log", padding)
    deck = pptx(tmp_path / "repeat.pptx", {"s1.xml": big}, ["s1.xml"] * 20)
    start = time.monotonic()
    doc = read(deck, limits=Limits(max_inflated_mb=10))
    assert [s.text for s in doc.sections] == ["Keeper's log"]  # listed 20 times, read once
    assert time.monotonic() - start < 5
    three = pptx(tmp_path / "three.pptx", {f"s{i}.xml": big for i in range(3)}, [f"s{i}.xml" for i in range(3)])
    with pytest.raises(UnreadableFile, match=r"max_inflated_mb") as refused:
        read(three, limits=Limits(max_inflated_mb=10))  # 16.5 MB inflated in all: over the file's 10
    assert "in all" in str(refused.value) and "\n" not in str(refused.value)
    text = chapter(b"<p>" + b"word " * 1_000_000 + b"</p>")  # a 5 MB chapter
    book = epub(tmp_path / "repeat.epub", {"c1.xhtml": text}, ["c1.xhtml"] * 20)
    start = time.monotonic()
    doc = read(book, limits=Limits(max_inflated_mb=10))
    assert len(doc.sections) == 1 and time.monotonic() - start < 5


# --- case 8: parts parsed whole ----------------------------------------------------------------

PADDING_MB = 10  # a fifth of the probe: parsed whole, 10 MB took 175 MB; streamed, nothing


@pytest.mark.parametrize("kind", ["presentation.xml", "styles.xml", "unkept elements", "inside a paragraph",
                                  "inside a shape"])
def test_huge_parts_stream_in_flat_memory(tmp_path, kind):
    """50 MB presentation.xml or styles.xml, or 50 MB of elements the reader does not keep,
    peaked at 1.1-1.7 GB from 50-80 KB files."""
    n = PADDING_MB * 2**20 // 10
    if kind == "presentation.xml":
        path = pptx(tmp_path / "p.pptx", {"s1.xml": slide_xml("Lens")}, ["s1.xml"],
                    presentation_padding=b"<p:ext/>  " * n)
        expected = "Lens"
    elif kind == "styles.xml":
        styles = f'<w:styles xmlns:w="{W}">'.encode() + b"<w:x/>    " * n + (
            '<w:style w:styleId="H1"><w:name w:val="heading 1"/></w:style></w:styles>'.encode())
        path = docx(tmp_path / "s.docx", para("Lens", "H1") + para("Fresnel"), styles)
        expected = "Fresnel"
    elif kind == "unkept elements":
        path = docx(tmp_path / "u.docx", para("Lens").encode() + b"<w:x/>    " * n + para("Fresnel").encode())
        expected = "Lens\nFresnel"
    elif kind == "inside a paragraph":
        path = docx(tmp_path / "i.docx", b"<w:p><w:r><w:t>Lens</w:t></w:r>" + b"<w:x/>    " * n + b"</w:p>")
        expected = "Lens"
    else:
        shape = f'<p:sp xmlns:p="{P}" xmlns:a="{A}"><p:txBody>'.encode() + b"<a:x/>    " * n
        path = pptx(tmp_path / "i.pptx", {"s1.xml": slide_xml("Lens", shape + b"</p:txBody></p:sp>")}, ["s1.xml"])
        expected = "Lens"
    assert path.stat().st_size < 200_000
    out = read_bounded(path, seconds=10, memory_mb=600)
    assert "sections" in out, out
    assert out["sections"][0][0] == expected
    assert out["grew_mb"] < 100, out


def test_xlsx_parts_read_whole_are_bounded(tmp_path):
    """openpyxl parses an .xlsx's styles.xml whole: 50 MB of it took over a GB. Here 20 MB."""
    path = _sheet(tmp_path / "styles.xlsx", "B", rows=10)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
        z.writestr("xl/styles.xml", f'<styleSheet xmlns="{main}"><extLst>'.encode() + b"<ext/>    " * 2_000_000
                   + b"</extLst></styleSheet>")
    assert path.stat().st_size < 100_000
    out = read_bounded(path, seconds=10, memory_mb=1024)
    assert "xl/styles.xml" in out.get("refused", "") and "16 MB" in out["refused"], out
    assert out["grew_mb"] < 100, out


# --- case 9: many members, many listings -------------------------------------------------------

def test_member_list_is_made_once(tmp_path):
    """200,000 empty members and 20,000 slide listings: the member list was rebuilt per slide
    (killed at 120 s). Here 50,000 and 20,000."""
    extra = {f"ppt/media/e{i}": b"" for i in range(50_000)}
    listing = ["s1.xml"] + [f"missing{i}.xml" for i in range(20_000)]
    path = pptx(tmp_path / "many.pptx", {"s1.xml": slide_xml("Lens")}, listing, extra=extra)
    out = read_bounded(path, seconds=8, memory_mb=1024)
    assert out.get("sections") == [["Lens", 1, ""]], out


# --- case 10: a sheet's cells far to the right --------------------------------------------------

def _sheet(path, column: str, rows: int = 10_000):
    sheet = "".join(f'<row r="{r}"><c r="{column}{r}" t="inlineStr"><is><t>v{r}</t></is></c></row>'
                    for r in range(1, rows + 1))
    ct = "http://schemas.openxmlformats.org/package/2006/content-types"
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    return zipped(path, {
        "[Content_Types].xml": (
            f'<Types xmlns="{ct}"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName='
            '"/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.'
            'main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.'
            'openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'),
        "_rels/.rels": (f'<Relationships xmlns="{REL}"><Relationship Id="rId1" Type="http://schemas.openxmlformats'
                        '.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
                        "</Relationships>"),
        "xl/workbook.xml": (f'<workbook xmlns="{main}" xmlns:r="{R}"><sheets><sheet name="S" sheetId="1" '
                            'r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{REL}"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'),
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{main}"><sheetData>{sheet}</sheetData></worksheet>',
    })


def _timed_read(path, **limits):
    start = time.monotonic()
    doc = read(path, limits=Limits(**limits))
    return doc, time.monotonic() - start


def test_xlsx_cells_in_the_last_column_cost_what_cells_in_the_second_do(tmp_path):
    """10,000 rows of one cell in column XFD read 16x slower than in column B."""
    near, far = _sheet(tmp_path / "b.xlsx", "B"), _sheet(tmp_path / "xfd.xlsx", "XFD")
    near_doc, near_s = _timed_read(near)
    far_doc, far_s = _timed_read(far)
    assert far_doc.text == near_doc.text  # a lone column's values, under their header, wherever it is
    assert far_s < 3 * near_s + 0.5, (near_s, far_s)


def test_parse_time_is_bounded_per_file(tmp_path):
    """No time bound held for a sheet (a full one of cells far right took ~20 min): the new
    max_parse_seconds setting bounds each file's parse, with a one-line reason."""
    from rag.core.settings import Settings

    assert Limits.of(Settings(max_parse_seconds=7)).max_parse_seconds == 7
    assert Limits().max_parse_seconds == Settings().max_parse_seconds > 0
    with pytest.raises(Exception, match="max_parse_seconds"):
        Settings(max_parse_seconds=-1)
    path = _sheet(tmp_path / "s.xlsx", "XFD", rows=20_000)
    with pytest.raises(UnreadableFile, match=r"over 0\.05 s.*max_parse_seconds"):
        read(path, limits=Limits(max_parse_seconds=0.05))
    deck = pptx(tmp_path / "d.pptx", {"s1.xml": slide_xml("Lens", b"<p:extLst/>" * 1_000_000)}, ["s1.xml"])
    with pytest.raises(UnreadableFile, match="max_parse_seconds"):
        read(deck, limits=Limits(max_parse_seconds=0.05))


# --- case 18: Word content controls -----------------------------------------------------------

def test_word_content_controls_are_read(tmp_path):
    """A content control (w:sdt) holding body paragraphs (cover pages, forms, templates) was
    dropped silently."""
    styles = (f'<w:styles xmlns:w="{W}"><w:style w:styleId="Heading1"><w:name w:val="heading 1"/></w:style>'
              "</w:styles>").encode()
    control = ('<w:sdt><w:sdtPr><w:alias w:val="Cover"/></w:sdtPr><w:sdtContent>'
               + para("Annual report", "Heading1") + para("Prepared by the harbor office")
               + '<w:sdt><w:sdtContent>' + para("Nested control text") + "</w:sdtContent></w:sdt>"
               + "<w:tbl><w:tr><w:tc>" + para("cell one") + "</w:tc><w:tc>" + para("cell two")
               + "</w:tc></w:tr></w:tbl></w:sdtContent></w:sdt>")
    path = docx(tmp_path / "cover.docx", control + para("Body after the cover"), styles)
    doc = read(path)
    assert "Prepared by the harbor office" in doc.text and "Nested control text" in doc.text
    assert "cell one | cell two" in doc.text and "Body after the cover" in doc.text
    assert doc.sections[0].heading == "Annual report"
