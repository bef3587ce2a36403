"""OCR speed and character accuracy on clean scanned pages of known text, per language:
SQuAD paragraphs (English) and CMRC 2018 paragraphs (Chinese) typeset with Pillow on A4 at
150 dpi in 11 pt (DejaVu Sans; WenQuanYi Zen Hei), put into a PDF of page images only, and
read back through rag's PDF reader (render with pdfium -> OCR). Also the same pages through
Debian's tesseract (`apt-get install tesseract-ocr tesseract-ocr-chi-sim`), when installed.

    .venv/bin/python benchmarks/ocr.py [--pages 10] [--engines rapidocr,tesseract]

Character accuracy = 1 - edit distance / length of the known text, whitespace removed
(Chinese has none; for English the space count is reported apart as word accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets"
FONTS = {"en": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
         "zh": "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"}
DPI, POINTS = 150, 11


def paragraphs(language: str, n: int) -> list[str]:
    if language == "en":
        data = json.loads((DATA / "squad_dev" / "squad-dev-v1.1.json").read_text())["data"]
    else:
        data = json.loads((DATA / "cmrc2018" / "cmrc2018-dev.json").read_text())["data"]
    texts = [p["context"] for article in data for p in article["paragraphs"]]
    return [t for t in texts if 500 <= len(t) <= 1500][:n]


def page_image(text: str, language: str):
    """One A4 page at DPI with the text wrapped to the page's width."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = int(8.27 * DPI), int(11.69 * DPI)
    px = round(POINTS / 72 * DPI)
    font = ImageFont.truetype(FONTS[language], px)
    per_line = 80 if language == "en" else 42
    lines = textwrap.wrap(text, per_line) if language == "en" else [
        text[i:i + per_line] for i in range(0, len(text), per_line)]
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((int(0.8 * DPI), int(0.8 * DPI) + i * int(px * 1.5)), line, font=font, fill=0)
    return image, "\n".join(lines)


def scanned_pdf(images, path: Path) -> None:
    images[0].save(path, "PDF", resolution=DPI, save_all=True, append_images=images[1:])


def distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def accuracy(got: str, want: str) -> tuple[float, float]:
    """(character accuracy without whitespace, word accuracy: words of `want` found in order)."""
    import difflib

    got = got.replace(" [?]", "")
    g, w = "".join(got.split()), "".join(want.split())
    chars = max(0.0, 1 - distance(g, w) / max(1, len(w)))
    words = difflib.SequenceMatcher(None, got.split(), want.split(), autojunk=False)
    return chars, sum(b.size for b in words.get_matching_blocks()) / max(1, len(want.split()))


def run_rapidocr(pdf: Path) -> tuple[list[str], float]:
    from rag import ocr
    from rag.documents import read

    ocr._engine()  # the model load is not page time
    start = time.perf_counter()
    doc = read(pdf)
    seconds = time.perf_counter() - start
    assert not doc.skipped, doc.skipped
    return [s.text for s in doc.sections], seconds


def run_tesseract(images, language: str) -> tuple[list[str], float]:
    lang = "eng" if language == "en" else "chi_sim"
    out, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for i, image in enumerate(images):
            path = Path(d) / f"{i}.png"
            image.save(path)
            text = subprocess.run(["tesseract", str(path), "-", "-l", lang], capture_output=True,
                                  text=True, check=True).stdout
            out.append(text if language == "en" else text.replace(" ", ""))
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--engines", default="rapidocr,tesseract")
    args = parser.parse_args()
    engines = args.engines.split(",")
    if "tesseract" in engines and not shutil.which("tesseract"):
        print("tesseract is not installed: skipped")
        engines.remove("tesseract")
    print("| engine | language | pages | pages/s | char accuracy (mean, worst page) | word accuracy |")
    print("|---|---|---|---|---|---|")
    for language in ("en", "zh"):
        pages = [page_image(t, language) for t in paragraphs(language, args.pages)]
        images, truth = [p[0] for p in pages], [p[1] for p in pages]
        with tempfile.TemporaryDirectory() as d:
            pdf = Path(d) / "scan.pdf"
            scanned_pdf(images, pdf)
            for engine in engines:
                texts, seconds = run_rapidocr(pdf) if engine == "rapidocr" else run_tesseract(images, language)
                scores = [accuracy(g, w) for g, w in zip(texts, truth)]
                chars = [c for c, _ in scores]
                words = sum(w for _, w in scores) / len(scores)
                print(f"| {engine} | {language} | {len(images)} | {len(images) / seconds:.2f} | "
                      f"{sum(chars) / len(chars):.4f}, {min(chars):.4f} | "
                      f"{words:.3f} |" if language == "en" else
                      f"| {engine} | {language} | {len(images)} | {len(images) / seconds:.2f} | "
                      f"{sum(chars) / len(chars):.4f}, {min(chars):.4f} | — |", flush=True)


if __name__ == "__main__":
    main()
