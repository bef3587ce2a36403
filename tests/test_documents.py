import pytest

from rag.core.errors import UnreadableFile
from rag.readers.documents import read
from tests.conftest import make_docx, make_pdf


def test_markdown_heading_paths(tmp_path):
    p = tmp_path / "a.md"
    p.write_text("# Top\n\nintro\n\n## Sub\n\nbody text\n\n```\n# not a heading\n```\n\n# Other\n\nend\n")
    doc = read(p)
    headings = [s.heading for s in doc.sections]
    assert headings == ["Top", "Top > Sub", "Other"]
    sub = doc.sections[1]
    assert "# not a heading" in sub.text
    assert doc.text.count("body text") == 1
    full = p.read_text()
    assert full[sub.start:sub.start + len(sub.text)] == sub.text


def test_html_drops_scripts_styles_navigation(tmp_path):
    p = tmp_path / "a.html"
    p.write_text("<html><head><style>p{}</style><script>alert('x')</script></head><body>"
                 "<nav><a>Home</a> MENU</nav><header>BANNER</header><h1>Title</h1><p>First para.</p>"
                 "<h2>Part</h2><p>Second <b>bold</b> para.</p><footer>FOOT</footer></body></html>")
    doc = read(p)
    text = doc.text
    for junk in ("alert", "MENU", "BANNER", "FOOT", "p{}"):
        assert junk not in text
    assert [s.heading for s in doc.sections] == ["Title", "Title > Part"]
    assert "Second bold para." in doc.sections[1].text


def test_pdf_pages(tmp_path):
    p = make_pdf(tmp_path / "a.pdf", ["alpha page text", "beta page text"])
    doc = read(p)
    assert [(s.page, s.text) for s in doc.sections] == [(1, "alpha page text"), (2, "beta page text")]


def test_encrypted_pdf_is_refused(tmp_path):
    from pypdf import PdfReader, PdfWriter

    src = make_pdf(tmp_path / "plain.pdf", ["secret text"])
    writer = PdfWriter()
    for page in PdfReader(src).pages:
        writer.add_page(page)
    writer.encrypt(user_password="pw", owner_password="owner")
    out = tmp_path / "enc.pdf"
    with out.open("wb") as f:
        writer.write(f)
    with pytest.raises(UnreadableFile, match="encrypted"):
        read(out)


@pytest.mark.parametrize("data, reason", [
    (b"%PDF-1.4\n garbage that is not a pdf \x00\x01", "corrupt PDF"),
    (b"", "empty"),
])
def test_bad_pdf(tmp_path, data, reason):
    p = tmp_path / "bad.pdf"
    p.write_bytes(data)
    with pytest.raises(UnreadableFile, match=reason):
        read(p)


def test_pdf_without_text(tmp_path):
    p = make_pdf(tmp_path / "blank.pdf", [""])
    with pytest.raises(UnreadableFile, match="no extractable text"):
        read(p)


def test_docx_headings(tmp_path):
    p = make_docx(tmp_path / "a.docx", [("h1", "Guide"), ("p", "Intro words."), ("h2", "Install"),
                                        ("p", "Run make setup.")])
    doc = read(p)
    assert [(s.heading, s.text) for s in doc.sections] == [("Guide", "Intro words."),
                                                           ("Guide > Install", "Run make setup.")]


def test_non_utf8_text_is_detected(tmp_path):
    p = tmp_path / "latin.txt"
    text = "Le café était très animé. Les élèves étudiaient à la bibliothèque près de la forêt.\n" * 3
    p.write_bytes(text.encode("cp1252"))
    assert read(p).text.strip() == text.strip()


def test_binary_with_text_extension(tmp_path):
    p = tmp_path / "image.txt"
    p.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(UnreadableFile, match="binary"):
        read(p)


def test_csv_json_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text("city,country\nParis,France\nRome,Italy\n")
    assert "city: Rome; country: Italy" in read(tmp_path / "a.csv").text
    (tmp_path / "a.json").write_text('{"name": "rag", "tags": ["local", "fast"]}')
    assert "tags[1]: fast" in read(tmp_path / "a.json").text
    (tmp_path / "a.jsonl").write_text('{"q": "one"}\n{"q": "two"}\n')
    assert "q: two" in read(tmp_path / "a.jsonl").text
    (tmp_path / "b.json").write_text('{"broken": ')
    with pytest.raises(UnreadableFile, match="invalid JSON"):
        read(tmp_path / "b.json")


def test_rst_headings(tmp_path):
    p = tmp_path / "a.rst"
    p.write_text("Title\n=====\n\nIntro.\n\nSection\n-------\n\nBody.\n")
    assert [s.heading for s in read(p).sections] == ["Title", "Title > Section"]
