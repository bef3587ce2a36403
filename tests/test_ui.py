"""The web page: Streamlit's AppTest for the page logic, and a real headless Chromium
(Playwright driving Debian's /usr/bin/chromium) for what a person does."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from rag import RAG

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    docs = root / "docs"
    docs.mkdir()
    (docs / "lighthouse.md").write_text("# Lighthouses\n\nThe Fresnel lens was invented by Augustin-Jean Fresnel "
                                        "in 1822 to make lighthouse beams visible far out at sea.\n")
    (docs / "markup.md").write_text("# Markup\n\nThe <b>treaty</b> of **Kiel** was signed in 1814 "
                                    "<script>alert(1)</script> by Denmark and Sweden.\n")
    RAG(root / "index").ingest([docs])
    return root / "index"


def app_test(index):
    from streamlit.testing.v1 import AppTest

    os.environ["RAG_INDEX"] = str(index)
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def page_text(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption]
                     + [w.value for w in at.warning] + [i.value for i in at.info])


@pytest.mark.slow
def test_ask_shows_answer_sources_and_timings(index):
    at = app_test(index)
    assert "2 documents" in page_text(at)
    at.chat_input[0].set_value("Who invented the Fresnel lens?").run()
    assert not at.exception, at.exception
    text = page_text(at)
    assert "Fresnel" in text
    assert 'id="src-1-1"' in text and 'href="#src-1-1"' in text and "lighthouse.md" in text  # source card the [1] link points to
    assert "<mark>" in text  # the supporting sentence is highlighted
    assert "first token" in text and "retrieval" in text


@pytest.mark.slow
def test_remove_button_takes_a_document_out(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "alpaca.txt").write_text("Alpacas hum when they are curious or worried.")
    (docs / "bison.txt").write_text("Bison can run at fifty kilometres an hour.")
    RAG(tmp_path / "ix").ingest([docs])
    paths = {Path(d.path).name: d.path for d in RAG(tmp_path / "ix").documents()}
    at = app_test(tmp_path / "ix")
    assert "2 documents" in page_text(at)
    next(s for s in at.selectbox if s.label == "Remove a document").select(paths["alpaca.txt"]).run()
    next(b for b in at.button if b.label == "Remove").click().run()
    assert not at.exception, at.exception
    assert [d.path for d in RAG(tmp_path / "ix").documents()] == [paths["bison.txt"]]
    assert "1 documents" in page_text(at)


@pytest.mark.slow
def test_follow_up_and_new_conversation(index):
    at = app_test(index)
    at.chat_input[0].set_value("Who invented the Fresnel lens?").run()
    at.chat_input[0].set_value("in which year?").run()
    assert not at.exception, at.exception
    assert len(at.session_state["messages"]) == 4
    assert "1822" in at.session_state["messages"][3]["content"]
    at.sidebar.button[0].click().run()  # New conversation
    assert at.session_state["messages"] == []


@pytest.mark.slow
def test_document_markup_is_shown_as_text(index):
    at = app_test(index)
    at.chat_input[0].set_value("When was the treaty of Kiel signed?").run()
    text = page_text(at)
    assert "<script>" not in text and "<b>treaty</b>" not in text
    assert "&lt;script&gt;" in text or "&lt;b&gt;" in text


@pytest.mark.slow
def test_not_found_and_empty_index(index, tmp_path):
    at = app_test(index)
    at.chat_input[0].set_value("What is the airspeed velocity of an unladen swallow?").run()
    assert any("Not found" in w.value for w in at.warning)
    empty = app_test(tmp_path / "empty")
    assert any("index is empty" in i.value for i in empty.info)


def test_upload_names_are_sanitised(tmp_path):
    from importlib import util

    from rag.index import uploads

    spec = util.spec_from_file_location("ui_app", APP)
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the helpers; the page runs only as __main__
    assert uploads.safe_name("../../etc/passwd") == "passwd"
    assert uploads.safe_name("..\\..\\evil.txt") == "evil.txt"
    assert uploads.safe_name("a<b>:c?.md") == "a_b__c_.md"
    assert uploads.safe_name("大语言模型简介.md") == "大语言模型简介.md"  # Chinese names stay readable
    long = uploads.safe_name("模型" * 200 + ".pdf")  # 1,200 bytes in UTF-8: cut to fit, type kept
    assert long.endswith(".pdf") and len(long.encode()) <= 200
    first = uploads.save(tmp_path, "notes.txt", b"one")
    same = uploads.save(tmp_path, "notes.txt", b"one")
    other = uploads.save(tmp_path, "notes.txt", b"two")
    assert first == same and other.name == "notes-1.txt" and first.read_bytes() == b"one"
    assert "unsupported" in uploads.refusal("x.exe", 3, 1.0) and "limit" in uploads.refusal("x.txt", 2**21, 1.0)
    assert uploads.refusal("x.txt", 3, 1.0) is None
    assert module.plain("<b>x</b> **y**") == "\\<b\\>x\\<\\/b\\> \\*\\*y\\*\\*"
    assert module.plain("pelican's http://x.io") == "pelican\\'s http\\:\\/\\/x\\.io"
    assert "\n\n" not in module.highlight("one\n\n![x](http://h/t.png)", "") and "<br>" in module.highlight("a\nb", "")


HOSTILE = ("# Pelicans\n\nThe pelican's pouch holds three gallons of water.\n\n"
           "![x](http://127.0.0.1:{port}/track.png)\n\n"
           "Visit http://127.0.0.1:{port}/bare and [click me](javascript:alert(1)) or "
           "<img src=\"http://127.0.0.1:{port}/img.png\" onerror=\"alert(2)\"> and **bold** and "
           "<a href=\"http://127.0.0.1:{port}/a\">anchor</a>\n\n"
           "<script>fetch('http://127.0.0.1:{port}/script')</script> The pouch is pink.\n")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_browser_upload_ask_and_see_source(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    server, url = _start_ui(tmp_path / "idx", tmp_path)
    try:
        doc = tmp_path / "orchids.txt"
        doc.write_text("The vanilla orchid is pollinated by hand in Madagascar, which grows most of the "
                       "world's vanilla.\n")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            _upload_and_ask(page, url, doc, "Where is the vanilla orchid pollinated by hand?")
            expect(page.get_by_text("Madagascar").first).to_be_visible()
            expect(page.get_by_text("first token").first).to_be_visible()
            shot = Path(os.environ.get("RAG_SCREENSHOT", tmp_path / "answer.png"))
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            browser.close()
        assert (tmp_path / "idx" / "uploads" / "orchids.txt").is_file()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _upload_and_ask(page, url, doc: Path, question: str):
    """Open the page of an empty index, upload `doc` and add it, ask; the first source card."""
    from playwright.sync_api import expect

    page.goto(url, timeout=60_000)
    expect(page.get_by_text("This index is empty")).to_be_visible(timeout=120_000)
    page.locator("input[type=file]").set_input_files(str(doc))
    expect(page.get_by_text(doc.name).first).to_be_visible(timeout=60_000)  # upload finished
    page.get_by_role("button", name="Add to index").click()
    expect(page.get_by_text("Added 1")).to_be_visible(timeout=180_000)
    box = page.get_by_placeholder("Ask a question about your documents")
    box.fill(question)
    box.press("Enter")
    card = page.locator(".src-card").first
    expect(card).to_contain_text(doc.name, timeout=180_000)
    return card


class _Tracker:
    """A real HTTP server on 127.0.0.1 that records every request it gets."""

    def __init__(self):
        import http.server
        import threading

        self.requests = []
        tracker = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                tracker.requests.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _start_ui(index, cwd):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rag.cli", "ui", "--index", str(index), "--port", str(port)],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    return server, url


def _browser(p):
    return p.chromium.launch(executable_path="/usr/bin/chromium", args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")
def test_browser_never_interprets_document_text(tmp_path):
    """A document that tries an image, a bare URL, a javascript: link, raw HTML and a script:
    the page shows them as text, and no request goes to a URL taken from the document."""
    from playwright.sync_api import expect, sync_playwright

    tracker = _Tracker()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pelican.md").write_text(HOSTILE.format(port=tracker.port))
    RAG(tmp_path / "idx").ingest([docs])
    server, url = _start_ui(tmp_path / "idx", tmp_path)
    seen = []
    try:
        with sync_playwright() as p:
            browser = _browser(p)
            page = browser.new_page()
            page.on("request", lambda r: seen.append(r.url))
            page.goto(url, timeout=60_000)
            box = page.get_by_placeholder("Ask a question about your documents")
            expect(box).to_be_visible(timeout=180_000)
            box.fill("How much water does the pelican's pouch hold?")
            box.press("Enter")
            card = page.locator(".src-card").first
            expect(card).to_contain_text("pelican.md", timeout=180_000)
            page.wait_for_timeout(2000)
            cards = " ".join(page.locator(".src-card").all_inner_texts())
            for shown_as_text in ("![x](http://127.0.0.1", "[click me](javascript:alert(1))", "<script>",
                                  "<img src=", "**bold**", "Visit http://127.0.0.1"):
                assert shown_as_text in cards, (shown_as_text, cards)
            assert page.locator(".src-card img").count() == 0
            assert page.locator(".src-card a").count() == 0
            assert page.locator("a[href^='javascript']").count() == 0
            assert "pelican's" in page.locator("[data-testid='stChatMessage']").first.inner_text()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        tracker.server.shutdown()
    assert tracker.requests == []
    assert not [u for u in seen if f":{tracker.port}" in u]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")
def test_two_browser_sessions_on_two_indexes_ask_at_once(tmp_path):
    """Two people, two indexes, one server, questions at the same moment: both get their
    answers and the server keeps serving. Also measures the first question against later ones."""
    from playwright.sync_api import expect, sync_playwright

    for name, text in (("a", "The Quillfeather Lighthouse was first lit in 1897 by keeper Tobias Renwick.\n"),
                       ("b", "The vanilla orchid is pollinated by hand in Madagascar.\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.txt").write_text(text)
        RAG(tmp_path / f"idx-{name}").ingest([tmp_path / name])
    server, url = _start_ui(tmp_path / "idx-a", tmp_path)
    questions = {"a": ("Who first lit the Quillfeather Lighthouse?", "Renwick"),
                 "b": ("Where is the vanilla orchid pollinated by hand?", "Madagascar")}
    try:
        with sync_playwright() as p:
            browser = _browser(p)
            pages = {}
            for name in "ab":
                page = browser.new_context().new_page()
                page.goto(url, timeout=60_000)
                expect(page.get_by_text("models ready")).to_be_visible(timeout=240_000)
                page.get_by_label("or an index path").fill(str(tmp_path / f"idx-{name}"))
                page.get_by_label("or an index path").press("Enter")
                expect(page.get_by_text("1 documents")).to_be_visible(timeout=240_000)
                pages[name] = page
            for round_ in range(2):
                for name, page in pages.items():  # both asked before either answer arrives
                    box = page.get_by_placeholder("Ask a question about your documents")
                    box.fill(questions[name][0])
                    box.press("Enter")
                for name, page in pages.items():
                    expect(page.locator(".src-card").nth(round_ * 1)).to_be_visible(timeout=240_000)
                    expect(page.get_by_text(questions[name][1]).first).to_be_visible(timeout=240_000)
            assert server.poll() is None  # still serving
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")
def test_browser_chinese_upload_answer_and_highlight(tmp_path):
    """A Chinese document with a Chinese name, uploaded and asked about in Chinese: the short
    answer in bold, the source card named by its Chinese file name and heading, the supporting
    sentence marked inside the passage, every character as written (no escapes, no mojibake)."""
    from playwright.sync_api import expect, sync_playwright

    server, url = _start_ui(tmp_path / "idx", tmp_path)
    try:
        doc = tmp_path / "大语言模型简介.md"
        doc.write_text((Path(__file__).parent / "data" / "llm_zh.md").read_text())
        with sync_playwright() as p:
            browser = _browser(p)
            page = browser.new_page(viewport={"width": 1300, "height": 1100})
            card = _upload_and_ask(page, url, doc, "GPT是由哪家公司开发的？")
            expect(card).to_contain_text("GPT")
            answer = page.locator("[data-testid='stChatMessage']").last
            expect(answer.locator("strong").first).to_contain_text("OpenAI")
            assert "GPT是由OpenAI开发的生成式预训练模型" in answer.inner_text()
            marked = card.locator("mark").first.inner_text()
            assert marked.startswith("GPT是由OpenAI开发的") and marked.endswith("。"), marked
            assert "&#" not in card.inner_text() and "\\u" not in card.inner_text()
            shot = Path(os.environ.get("RAG_SCREENSHOT_ZH", tmp_path / "answer-zh.png"))
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert (tmp_path / "idx" / "uploads" / "大语言模型简介.md").is_file()
    finally:
        server.terminate()
        server.wait(timeout=30)
