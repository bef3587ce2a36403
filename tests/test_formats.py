"""Slides, spreadsheets, e-books and scanned pages: real files made by the libraries that
write them (python-pptx, openpyxl, XlsxWriter, a zip laid out as an EPUB, pages rendered
with Pillow in Latin and CJK fonts), read back, asked through the API, fuzzed and bombed."""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import make_scanned_pdf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.core.errors import UnreadableFile
from rag.readers.base import Limits
from rag.readers.documents import read

EXAMPLES = int(os.environ.get("RAG_FUZZ_EXAMPLES", "60"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def cjk_font() -> str | None:
    """A font with Chinese glyphs (fonts-wqy-zenhei or fonts-noto-cjk, see .ci/run)."""
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    files = sorted(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
    return next((f for f in files if "zenhei" in f.lower()), files[0] if files else None)


# --- files made by their writers ---------------------------------------------------------

def make_pptx(path: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    title = deck.slides.add_slide(deck.slide_layouts[0])
    title.shapes.title.text = "Lighthouse Survey 2024"
    title.placeholders[1].text = "Annual report of the coastal authority"

    bullets = deck.slides.add_slide(deck.slide_layouts[1])
    bullets.shapes.title.text = "Fresnel lenses"
    body = bullets.placeholders[1].text_frame
    body.text = "The Fresnel lens was invented in 1822."
    body.add_paragraph().text = "Its beam is visible for twenty miles."
    box = bullets.shapes.add_textbox(Inches(1), Inches(6), Inches(4), Inches(1))
    box.text_frame.text = "A text box beside the bullets"
    bullets.notes_slide.notes_text_frame.text = "Mention the keeper at Cape Wrath retired in 1998."

    table_slide = deck.slides.add_slide(deck.slide_layouts[5])
    table_slide.shapes.title.text = "Keepers per station"
    rows = [("Station", "Keepers"), ("Cape Wrath", "3"), ("Bell Rock", "4")]
    table = table_slide.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    group = table_slide.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(1), Inches(5), Inches(3), Inches(1)).text_frame.text = "Grouped caption"
    picture = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), "white").save(picture, "PNG")
    pic = table_slide.shapes.add_picture(io.BytesIO(picture.getvalue()), Inches(7), Inches(5))
    pic._element.nvPicPr.cNvPr.set("descr", "Map of the northern stations")
    deck.save(str(path))
    return path


def make_xlsx(path: Path, rows: int = 3) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sales = book.active
    sales.title = "Sales"
    sales.append(["Quarterly sales by region"])
    sales.merge_cells("A1:D1")  # a title over the table
    sales.append(["Region", "Quarter", "Q3 sales", "Manager"])
    data = [("North", "Q3", 1204, "Ada"), (None, "Q4", 1310, None), ("South", "Q3", 987, "Grace")]
    for i in range(rows):
        sales.append(list(data[i % len(data)]) if i < len(data) else [f"Region {i}", "Q1", i, f"M{i}"])
    sales.merge_cells("A3:A4")  # North covers two rows
    sales.merge_cells("D3:D4")
    for row in sales.iter_rows(min_row=3, min_col=3, max_col=3):
        row[0].number_format = "#,##0"
    staff = book.create_sheet("Staff")
    staff.append(["Name", "Started", "Share"])
    import datetime

    staff.append(["Ada", datetime.date(2021, 3, 1), 0.25])
    staff["C2"].number_format = "0%"
    staff.append([None, None, None])  # an empty row
    staff.append(["Grace", datetime.date(2019, 7, 15), 0.5])
    staff["C4"].number_format = "0%"
    book.save(str(path))
    return path


ODS_CONTENT = """<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:dc="http://purl.org/dc/elements/1.1/" office:version="1.3"><office:body><office:spreadsheet>
<table:table table:name="Deliveries"><table:table-column table:number-columns-repeated="1024"/>
<table:table-row><table:table-cell table:number-columns-spanned="4" office:value-type="string"><text:p>Fuel deliveries 1898</text:p></table:table-cell><table:covered-table-cell table:number-columns-repeated="3"/><table:table-cell table:number-columns-repeated="1020"/></table:table-row>
<table:table-row><table:table-cell office:value-type="string"><text:p>Harbour</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>Month</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>Lamp oil (litres)</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>Skipper</text:p></table:table-cell><table:table-cell table:number-columns-repeated="1020"/></table:table-row>
<table:table-row><table:table-cell table:number-rows-spanned="2" office:value-type="string"><text:p>Stromness</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>March</text:p></table:table-cell><table:table-cell office:value-type="float" office:value="1250"><text:p>1,250</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>Magnus<text:s text:c="2"/>Berg<office:annotation><dc:creator>x</dc:creator><text:p>a comment</text:p></office:annotation></text:p></table:table-cell><table:table-cell table:number-columns-repeated="1020"/></table:table-row>
<table:table-row><table:covered-table-cell/><table:table-cell office:value-type="string"><text:p>April</text:p></table:table-cell><table:table-cell table:formula="of:=[.C3]-270" office:value-type="float" office:value="980"><text:p>980</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>Ingrid</text:p></table:table-cell><table:table-cell table:number-columns-repeated="1020"/></table:table-row>
<table:table-row table:number-rows-repeated="2"><table:table-cell table:number-columns-repeated="1024"/></table:table-row>
<table:table-row><table:table-cell office:value-type="string"><text:p>Lerwick</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>May</text:p></table:table-cell><table:table-cell office:value-type="float" office:value="2310"><text:p>2,310</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>Ingrid</text:p></table:table-cell><table:table-cell table:number-columns-repeated="1020"/></table:table-row>
<table:table-row table:number-rows-repeated="1048569"><table:table-cell table:number-columns-repeated="1024"/></table:table-row>
</table:table>
<table:table table:name="Keepers"><table:table-row><table:table-cell office:value-type="string"><text:p>Name</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>Started</text:p></table:table-cell><table:table-cell office:value-type="string"><text:p>Share</text:p></table:table-cell></table:table-row>
<table:table-row><table:table-cell office:value-type="string"><text:p>Ada</text:p></table:table-cell><table:table-cell office:value-type="date" office:date-value="2021-03-01"/><table:table-cell office:value-type="percentage" office:value="0.25"><text:p>25%</text:p></table:table-cell></table:table-row>
</table:table></office:spreadsheet></office:body></office:document-content>"""
ODS_MANIFEST = b"""<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3">
 <manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"""


def make_ods(path: Path, content: str = ODS_CONTENT, manifest: bytes = ODS_MANIFEST) -> Path:
    """An OpenDocument spreadsheet laid out as LibreOffice Calc saves one: a title spanning
    four columns, a cell spanning two rows, displayed numbers beside stored values, a formula,
    trailing empty columns and a million empty rows written as repeat counts."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
    return path


CHAPTER = """<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{title}</title></head><body>{body}</body></html>"""


def make_epub(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """An EPUB 3 whose spine order differs from its manifest order, with a nav document."""
    files = {
        "META-INF/container.xml": b"""<?xml version="1.0"?><container version="1.0"
 xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>
 <rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>""",
        "OEBPS/content.opf": b"""<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">
 <metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Keepers</dc:title></metadata>
 <manifest><item id="c2" href="text/two.xhtml" media-type="application/xhtml+xml"/>
 <item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>
 <item id="c3" href="text/three%20notes.xhtml" media-type="application/xhtml+xml"/>
 <item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
 <item id="css" href="style.css" media-type="text/css"/></manifest>
 <spine><itemref idref="c1"/><itemref idref="c2"/><itemref idref="c3"/></spine></package>""",
        "OEBPS/nav.xhtml": CHAPTER.format(title="Contents", body="""<nav xmlns:epub="http://www.idpf.org/2007/ops"
 epub:type="toc"><ol><li><a href="text/one.xhtml">One</a></li><li><a href="text/two.xhtml">Two</a></li>
 <li><a href="text/three%20notes.xhtml">Afterword</a></li></ol></nav>""").encode(),
        "OEBPS/text/one.xhtml": CHAPTER.format(title="1", body="""<section><header><h1>The First Light</h1>
 </header><p>The lamp at Bell Rock was first lit in 1811.</p><img src="a.png" alt="Engraving of the Bell Rock tower"/>
 <h2>Building</h2><p>Robert Stevenson built it on a reef.</p></section>""").encode(),
        "OEBPS/text/two.xhtml": CHAPTER.format(title="2", body="<h1>The Keepers</h1><p>Three keepers "
                                               "lived in the tower at a time.</p>").encode(),
        "OEBPS/text/three notes.xhtml": CHAPTER.format(title="3", body="<p>Thanks to the archivists of "
                                                       "Arbroath.</p>").encode(),
        "OEBPS/style.css": b"p { margin: 0 }",
    }
    files.update(extra or {})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, data in files.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def render_page(lines: list[str], font_path: str, size: int = 36, width: int = 1400):
    """A clean 'scan': black text on white, as a scanner at about 150 dpi gives it."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, size)
    image = Image.new("L", (width, 120 + len(lines) * int(size * 1.8)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((80, 60 + i * int(size * 1.8)), line, font=font, fill=0)
    return image


# --- readers -----------------------------------------------------------------------------

def test_pptx_one_section_per_slide(tmp_path):
    doc = read(make_pptx(tmp_path / "deck.pptx"))
    assert [(s.page, s.heading) for s in doc.sections] == [
        (1, "Lighthouse Survey 2024"), (2, "Fresnel lenses"), (3, "Keepers per station")]
    one, two, three = (s.text for s in doc.sections)
    assert "Annual report of the coastal authority" in one
    assert "invented in 1822" in two and "twenty miles" in two and "A text box beside the bullets" in two
    assert "Speaker notes:\nMention the keeper at Cape Wrath retired in 1998." in two
    assert two.index("Speaker notes:") > two.index("A text box")  # the notes come last, marked
    assert "Station | Keepers\nCape Wrath | 3\nBell Rock | 4" in three
    assert "Grouped caption" in three and "[Image: Map of the northern stations]" in three


def test_xlsx_rows_carry_their_headers(tmp_path):
    doc = read(make_xlsx(tmp_path / "book.xlsx"))
    assert [s.heading for s in doc.sections] == ["Sales > Quarterly sales by region", "Staff"]
    sales, staff = (s.text.splitlines() for s in doc.sections)
    assert sales == ["Row 3: Region: North; Quarter: Q3; Q3 sales: 1,204; Manager: Ada",
                     "Row 4: Region: North; Quarter: Q4; Q3 sales: 1,310; Manager: Ada",  # merged cells
                     "Row 5: Region: South; Quarter: Q3; Q3 sales: 987; Manager: Grace"]
    assert staff == ["Row 2: Name: Ada; Started: 2021-03-01; Share: 25%",
                     "Row 4: Name: Grace; Started: 2019-07-15; Share: 50%"]  # the empty row is passed over


def test_xlsx_formulas_are_their_cached_values(tmp_path):
    import xlsxwriter

    path = tmp_path / "f.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("Totals")
    sheet.write_row(0, 0, ["Item", "Cost"])
    sheet.write_row(1, 0, ["Lamp oil", 40])
    sheet.write_row(2, 0, ["Wicks", 2])
    sheet.write(3, 0, "Total")
    sheet.write_formula(3, 1, "=SUM(B2:B3)", None, 42)  # what Excel would have saved
    book.close()
    assert read(path).sections[0].text.splitlines()[-1] == "Row 4: Item: Total; Cost: 42"


def test_xlsx_text_limit_has_a_reason(tmp_path):
    path = make_xlsx(tmp_path / "big.xlsx", rows=3000)
    with pytest.raises(UnreadableFile, match=r"over the 0.01 MB limit \(max_text_mb\)"):
        read(path, limits=Limits(max_text_mb=0.01))


def test_ods_rows_carry_their_headers(tmp_path):
    doc = read(make_ods(tmp_path / "book.ods"))
    assert [s.heading for s in doc.sections] == ["Deliveries > Fuel deliveries 1898", "Keepers"]
    deliveries, keepers = (s.text.splitlines() for s in doc.sections)
    assert deliveries == [
        "Row 3: Harbour: Stromness; Month: March; Lamp oil (litres): 1,250; Skipper: Magnus Berg",  # no comment
        "Row 4: Harbour: Stromness; Month: April; Lamp oil (litres): 980; Skipper: Ingrid",  # merged; formula
        "Row 7: Harbour: Lerwick; Month: May; Lamp oil (litres): 2,310; Skipper: Ingrid"]  # repeated empty rows
    assert keepers == ["Row 2: Name: Ada; Started: 2021-03-01; Share: 25%"]


def test_ods_limits(tmp_path):
    rows = "".join(f"<table:table-row><table:table-cell><text:p>r{i}</text:p></table:table-cell>"
                   f"<table:table-cell><text:p>{'x' * 50}</text:p></table:table-cell></table:table-row>" for i in range(400))
    big = make_ods(tmp_path / "big.ods", ODS_CONTENT.replace('<table:table table:name="Keepers">',
                                                             '<table:table table:name="Keepers">' + rows))
    with pytest.raises(UnreadableFile, match=r"over the 0.01 MB limit \(max_text_mb\)"):
        read(big, limits=Limits(max_text_mb=0.01))
    repeated = make_ods(tmp_path / "repeated.ods", ODS_CONTENT.replace(  # one cell repeated a billion times
        '<table:table-cell office:value-type="string"><text:p>Ada</text:p></table:table-cell>',
        '<table:table-cell table:number-columns-repeated="1000000000"><text:p>Ada</text:p></table:table-cell>'))
    with pytest.raises(UnreadableFile, match=r"over the 0.01 MB limit"):
        read(repeated, limits=Limits(max_text_mb=0.01))
    encrypted = make_ods(tmp_path / "locked.ods", manifest=ODS_MANIFEST.replace(
        b'media-type="text/xml"/>', b'media-type="text/xml"><manifest:encryption-data/></manifest:file-entry>'))
    with pytest.raises(UnreadableFile, match=r"encrypted .ods"):
        read(encrypted)


def test_epub_chapters_in_reading_order(tmp_path):
    doc = read(make_epub(tmp_path / "book.epub"))
    assert [s.heading for s in doc.sections] == ["The First Light", "The First Light > Building",
                                                 "The Keepers", "Afterword"]
    assert "first lit in 1811" in doc.sections[0].text
    assert "[Image: Engraving of the Bell Rock tower]" in doc.sections[0].text
    assert "Contents" not in doc.text and "margin" not in doc.text  # the nav and the style sheet aren't chapters


OBFUSCATED_FONT = b"""<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
 xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:EncryptionMethod
 Algorithm="http://www.idpf.org/2008/embedding"/><enc:CipherData><enc:CipherReference
 URI="OEBPS/font.otf"/></enc:CipherData></enc:EncryptedData></encryption>"""


@pytest.mark.parametrize("extra, refused", [
    ({"META-INF/rights.xml": b"<rights/>"}, "rights.xml"),
    ({"META-INF/encryption.xml": OBFUSCATED_FONT.replace(b"http://www.idpf.org/2008/embedding",
                                                         b"http://www.w3.org/2001/04/xmlenc#aes128-cbc")},
     "encryption.xml"),
    ({"META-INF/encryption.xml": OBFUSCATED_FONT}, None),  # font obfuscation is not DRM
])
def test_epub_drm_is_refused(tmp_path, extra, refused):
    path = make_epub(tmp_path / "drm.epub", extra)
    if refused is None:
        assert "Bell Rock" in read(path).text
    else:
        with pytest.raises(UnreadableFile, match=f"DRM-protected e-book .META-INF/{refused}"):
            read(path)


@pytest.mark.parametrize("suffix, member", [(".pptx", "ppt/slides/slide1.xml"),
                                            (".xlsx", "xl/worksheets/sheet1.xml"),
                                            (".epub", "OEBPS/text/one.xhtml"), (".ods", "content.xml")])
def test_zip_bombs_are_refused_before_they_inflate(tmp_path, suffix, member):
    path = tmp_path / f"bomb{suffix}"
    make = {".pptx": make_pptx, ".xlsx": make_xlsx, ".epub": make_epub, ".ods": make_ods}[suffix]
    good = zipfile.ZipFile(make(tmp_path / f"good{suffix}"))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for item in good.infolist():
            z.writestr(item.filename, good.read(item.filename) if item.filename != member else
                       b"<a>" + b" " * (3 * 2**20) + b"</a>")
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(UnreadableFile, match=f"{member} inflates to 3 MB, over the 2 MB limit"):
        read(path, limits=Limits(max_inflated_mb=2))


@pytest.mark.parametrize("suffix, reason", [(".pptx", "corrupt .pptx"), (".xlsx", "corrupt .xlsx"),
                                            (".epub", "corrupt .epub"), (".ods", "corrupt .ods"),
                                            (".png", "corrupt image|OCR")])
def test_one_line_failures(tmp_path, suffix, reason):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(b"PK\x03\x04 this is no archive and no picture")
    with pytest.raises(UnreadableFile, match=reason) as e:
        read(path)
    assert "\n" not in str(e.value)


# --- fuzzing: a Document or an UnreadableFile with a reason, never another exception -------

def check(suffix: str, data: bytes) -> None:
    try:
        doc = read(f"fuzz{suffix}", data)
    except UnreadableFile as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert doc.sections


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("seeds")
    return {".pptx": make_pptx(root / "s.pptx").read_bytes(), ".xlsx": make_xlsx(root / "s.xlsx").read_bytes(),
            ".epub": make_epub(root / "s.epub").read_bytes(), ".ods": make_ods(root / "s.ods").read_bytes()}


@fuzz
@given(suffix=st.sampled_from([".pptx", ".xlsx", ".xlsm", ".ods", ".epub", ".png", ".jpg", ".tiff"]),
       data=st.binary(max_size=2048))
def test_random_bytes(suffix, data):
    check(suffix, data)


@fuzz
@given(suffix=st.sampled_from([".pptx", ".xlsx", ".ods", ".epub"]), which=st.integers(0, 40),
       cut=st.integers(0, 400), at=st.integers(0, 4000), noise=st.binary(max_size=64))
def test_damaged_archive_members(seeds, suffix, which, cut, at, noise):
    """One member of a real file damaged (cut, overwritten with noise), the zip itself intact:
    what reaches the XML parsers."""
    good = zipfile.ZipFile(io.BytesIO(seeds[suffix]))
    names = [n for n in good.namelist() if n.endswith((".xml", ".rels", ".xhtml", ".opf"))]
    target = names[which % len(names)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in good.namelist():
            data = good.read(name)
            z.writestr(name, data[:at] + noise + data[at + cut:] if name == target else data)
    check(suffix, buf.getvalue())


# --- OCR -----------------------------------------------------------------------------------

ENGLISH = ["The harbour master of Valletta", "keeps the tide tables for 2024.", "Rainfall was 550 millimetres."]
CHINESE = ["灯塔的光束可以照亮二十海里。", "守塔人每四个小时修剪一次灯芯。"]


def similarity(got: str, want: str) -> float:
    import difflib

    strip = lambda t: "".join(t.replace(" [?]", "").split())  # noqa: E731
    return difflib.SequenceMatcher(None, strip(got), strip(want)).ratio()


needs_cjk_font = pytest.mark.skipif(cjk_font() is None, reason="no CJK font: apt-get install fonts-wqy-zenhei")


@needs_cjk_font
def test_ocr_of_images_in_english_and_chinese(tmp_path):
    english = tmp_path / "en.png"
    render_page(ENGLISH, LATIN_FONT).save(english)
    chinese = tmp_path / "zh.jpg"
    render_page(CHINESE, cjk_font()).convert("RGB").save(chinese, quality=90)
    en, zh = read(english), read(chinese)
    assert en.sections[0].page is None  # one picture: no page numbers
    assert similarity(en.text, "\n".join(ENGLISH)) >= 0.95, en.text
    assert similarity(zh.text, "\n".join(CHINESE)) >= 0.95, zh.text
    assert en.text.splitlines()[0].startswith("The harbour master")  # reading order kept


SMALL_TYPE = ["the dollar price of oil had risen by less than two percent per year until the oil shock, and",
              "with changing market conditions, so their real incomes lagged behind the price increases of",
              "the others faced partial cutbacks, while the harbour master kept the tide tables for the port"]


def word_match(got: str, want: str) -> float:
    import difflib

    got, want = got.replace(" [?]", "").split(), want.split()
    return sum(b.size for b in difflib.SequenceMatcher(None, got, want).get_matching_blocks()) / len(want)


SERIF_FONT = "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf"


@pytest.mark.skipif(not Path(SERIF_FONT).exists(), reason="no Liberation Serif: apt-get install fonts-liberation")
def test_ocr_keeps_the_spaces_of_small_tight_type(tmp_path):
    """Times at 9 pt, 150 dpi, JPEG: the recognizer alone ran words together ("theirrealincomeslagged",
    0.45 of the words); the spaces put back from the blank columns between words give them back."""
    path = tmp_path / "small.jpg"
    render_page(SMALL_TYPE, SERIF_FONT, size=19, width=1240).save(path, quality=75)
    assert word_match(read(path).text, " ".join(SMALL_TYPE)) >= 0.95, read(path).text


def test_ocr_of_an_upside_down_page(tmp_path):
    """A page scanned upside down reads badly, is turned, and is read right."""
    path = tmp_path / "turned.png"
    render_page(ENGLISH, LATIN_FONT).rotate(180).save(path)
    text = read(path).text
    assert similarity(text, "\n".join(ENGLISH)) >= 0.95, text
    assert text.startswith("The harbour master")


def test_scanned_pdf_page_is_ocr_d_with_its_page_number(tmp_path):
    path = make_scanned_pdf(tmp_path / "mixed.pdf", "Page one has a text layer about lamp oil.",
                            [render_page(ENGLISH, LATIN_FONT)])
    doc = read(path)
    assert [s.page for s in doc.sections] == [1, 2] and not doc.skipped
    assert "lamp oil" in doc.sections[0].text
    assert similarity(doc.sections[1].text, "\n".join(ENGLISH)) >= 0.95


def test_scanned_pages_past_the_time_limit_are_reported(tmp_path):
    path = make_scanned_pdf(tmp_path / "mixed.pdf", "Page one has a text layer about lamp oil.",
                            [render_page(ENGLISH, LATIN_FONT)] * 2)
    doc = read(path, limits=Limits(max_ocr_seconds=0))
    assert [s.page for s in doc.sections] == [1]
    assert [p for p, _ in doc.skipped] == [2, 3]
    assert "scanned page not read: the file's 0 s of OCR were spent (max_ocr_seconds)" == doc.skipped[0][1]
    only_scans = make_scanned_pdf(tmp_path / "scans.pdf", "", [render_page(ENGLISH, LATIN_FONT)])  # page 1 blank
    with pytest.raises(UnreadableFile, match=r"no text layer, and its 1 scanned page\(s\) were not read"):
        read(only_scans, limits=Limits(max_ocr_seconds=0))


def test_without_ocr_a_scan_says_how_to_enable_it(tmp_path):
    """OCR's package missing (a plain `pip install` without `make setup`): checked in a fresh
    interpreter that cannot import it."""
    path = make_scanned_pdf(tmp_path / "mixed.pdf", "Page one has a text layer about lamp oil.",
                            [render_page(ENGLISH, LATIN_FONT)])
    image = tmp_path / "scan.png"
    render_page(ENGLISH, LATIN_FONT).save(image)
    code = f"""
import sys; sys.modules["rapidocr_onnxruntime"] = None
from rag.readers.documents import read
from rag.core.errors import UnreadableFile
doc = read({str(path)!r})
print([s.page for s in doc.sections], doc.skipped)
try:
    read({str(image)!r})
except UnreadableFile as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    pages, image_reason = out.stdout.splitlines()
    assert pages.startswith("[1] [(2, 'scanned page not read: OCR is not installed")
    assert "make setup" in pages
    assert image_reason.startswith("image needs OCR, and OCR is not installed") and "make setup" in image_reason


# --- through the API: the hit cites the right slide, sheet row and page ----------------------

@pytest.fixture(scope="module")
def formats_index(tmp_path_factory):
    from rag import RAG

    root = tmp_path_factory.mktemp("formats") / "docs"
    root.mkdir()
    make_pptx(root / "deck.pptx")
    make_xlsx(root / "book.xlsx")
    make_epub(root / "book.epub")
    make_ods(root / "fuel.ods")
    make_scanned_pdf(root / "tides.pdf", "Page one has a text layer about lamp oil.",
                     [render_page(ENGLISH, LATIN_FONT)])
    # the fake encoder (rag/models/fakes.py): what is checked is where a passage says it is from;
    # the real models answer from these files in test_ask_cites_the_sheet_row
    rag = RAG(root.parent / "index", encoder="fake", generator="fake", translator="off")
    report = rag.ingest([root])
    assert report.added == 5 and not report.failed, report.failed
    return rag


@pytest.mark.parametrize("query, file, page, heading, text", [
    ("When did the keeper at Cape Wrath retire?", "deck.pptx", 2, "Fresnel lenses", "Speaker notes"),
    ("How many keepers are at Bell Rock station?", "deck.pptx", 3, "Keepers per station", "Bell Rock | 4"),
    ("What were the Q3 sales in the South region?", "book.xlsx", None, "Sales > Quarterly sales by region",
     "Row 5: Region: South"),
    ("When did Grace start?", "book.xlsx", None, "Staff", "Row 4: Name: Grace"),
    ("How many litres of lamp oil were delivered to Lerwick?", "fuel.ods", None,
     "Deliveries > Fuel deliveries 1898", "Row 7: Harbour: Lerwick; Month: May; Lamp oil (litres): 2,310"),
    ("When was the Bell Rock lamp first lit?", "book.epub", None, "The First Light", "1811"),
    ("Who keeps the tide tables of Valletta?", "tides.pdf", 2, "", "harbour master"),
])
def test_search_cites_slide_row_and_page(formats_index, query, file, page, heading, text):
    hit = formats_index.search(query, k=1)[0]
    assert (Path(hit.source).name, hit.page, hit.heading) == (file, page, heading), hit
    assert text in hit.text


@pytest.mark.slow  # the real encoder and decoder
def test_ask_cites_the_sheet_row(formats_index):
    from rag import RAG

    real = RAG(formats_index.root.parent / "real-index", encoder="all-MiniLM-L6-v2")
    report = real.ingest([formats_index.root.parent / "docs"])
    assert report.added == 5 and not report.failed, report.failed
    answer = real.ask("What were the Q3 sales in the South region?")
    cited = [s for s in answer.sources if s.cited]
    assert answer.found and "987" in answer.text
    assert Path(cited[0].source).name == "book.xlsx" and "Row 5: Region: South" in cited[0].text
