"""Shared fixtures: real files made on the spot, real models from the bundled packages."""

import os
import socket
import subprocess
import time
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@contextmanager
def tmpfs(path: Path, size: str):
    """A real small disk at `path` (a tmpfs mount, root only), for full-disk and read-only faults."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def wait_ready(proc: subprocess.Popen, url: str, log: Path, seconds: float, pause: float = 0.2) -> None:
    """Wait for a `rag serve` child to answer /readyz 200; its log is the failure message."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"server not ready in {seconds:g} s"
        time.sleep(pause)


def free_port() -> int:
    """A port nothing on 127.0.0.1 listens on now (for the servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF with one text block per page (reportlab)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    for text in pages:
        y = 800
        for line in text.split("\n"):
            c.drawString(50, y, line)
            y -= 14
        c.showPage()
    c.save()
    return path


def make_scanned_pdf(path: Path, text_page: str, scans: list) -> Path:
    """A PDF whose first page has a text layer and whose next pages are only images."""
    import io

    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    c.drawString(50, 800, text_page)
    c.showPage()
    for image in scans:
        buf = io.BytesIO()
        image.save(buf, "PNG")
        w, h = A4
        height = w * image.height / image.width  # the page's width, from its top
        c.drawImage(ImageReader(io.BytesIO(buf.getvalue())), 0, h - height, width=w, height=height)
        c.showPage()
    c.save()
    return path


def make_docx(path: Path, blocks: list[tuple[str, str]]) -> Path:
    """blocks: ("h1"|"h2"|"p", text)."""
    import docx

    d = docx.Document()
    for kind, text in blocks:
        if kind.startswith("h"):
            d.add_heading(text, level=int(kind[1]))
        else:
            d.add_paragraph(text)
    d.save(str(path))
    return path


CORPUS = {
    "lighthouse.md": "# Lighthouses\n\n## Fresnel lens\n\nThe Fresnel lens was invented by Augustin-Jean "
                     "Fresnel in 1822 to make lighthouse beams visible for over twenty miles.\n\n"
                     "## Keepers\n\nLighthouse keepers trimmed the wicks every four hours during the night.\n",
    "bees.txt": "Honey bees communicate the direction of flowers with a waggle dance. The angle of the "
                "dance relative to vertical encodes the direction relative to the sun.\n",
    "notes/volcano.html": "<html><head><title>t</title><script>var secret='SCRIPTTEXT';</script>"
                          "<style>.x{color:red}</style></head><body><nav>Home | About | NAVTEXT</nav>"
                          "<h1>Volcanoes</h1><p>Mount Etna on Sicily is the most active volcano in Europe.</p>"
                          "<footer>FOOTERTEXT copyright</footer></body></html>",
}


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "docs")


def write_corpus(root: Path) -> Path:
    """CORPUS's files and a two-page PDF under `root`."""
    for name, text in CORPUS.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    make_pdf(root / "report.pdf", ["Page one is about the harbour master of Valletta.",
                                   "Page two says the annual rainfall in Valletta is 550 millimetres."])
    return root


@pytest.fixture
def index_dir(tmp_path) -> Path:
    return tmp_path / "index"
