"""OCR speed and character accuracy on clean scanned pages of known text, per language:
SQuAD paragraphs (English) and CMRC 2018 paragraphs (Chinese) typeset with Pillow on A4 at
150 dpi, each page in another font and size (English: DejaVu Sans and Serif, Liberation Sans,
Serif and Mono; Chinese: WenQuanYi Zen Hei and Micro Hei, AR PL UMing; 9, 11 and 14 pt; the
fonts installed are used), put into a PDF of page images only, and read back through rag's
PDF reader (render with pdfium -> OCR). Also the English pages upside down (the page is
turned when it reads badly), and the same pages through Debian's tesseract
(`apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim`), when installed.

    .venv/bin/python benchmarks/ocr.py [--pages 12] [--engines rapidocr,tesseract]

Character accuracy = 1 - edit distance / length of the known text, whitespace removed
(Chinese has none; for English the spaces are scored apart as word accuracy).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets"
FONT_DIR = Path("/usr/share/fonts/truetype")
FONTS = {"en": ["dejavu/DejaVuSans.ttf", "liberation/LiberationSerif-Regular.ttf", "dejavu/DejaVuSerif.ttf",
                "liberation/LiberationSans-Regular.ttf", "liberation/LiberationMono-Regular.ttf"],
         "zh": ["wqy/wqy-zenhei.ttc", "arphic/uming.ttc", "wqy/wqy-microhei.ttc"]}
POINTS = (9, 11, 14)
DPI = 150


def paragraphs(language: str, n: int) -> list[str]:
    if language == "en":
        data = json.loads((DATA / "squad_dev" / "squad-dev-v1.1.json").read_text())["data"]
    else:
        data = json.loads((DATA / "cmrc2018" / "cmrc2018-dev.json").read_text())["data"]
    texts = [p["context"] for article in data for p in article["paragraphs"]]
    return [t for t in texts if 500 <= len(t) <= 1500][:n]


def fonts(language: str) -> list[Path]:
    return [FONT_DIR / f for f in FONTS[language] if (FONT_DIR / f).exists()]


def page_image(text: str, language: str, font_path: Path, points: int):
    """One A4 page at DPI, the text wrapped to the page's width between 0.8 inch margins
    (at words in English, at any character in Chinese)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = int(8.27 * DPI), int(11.69 * DPI)
    px = round(points / 72 * DPI)
    font = ImageFont.truetype(str(font_path), px)
    units, glue = (text.split(), " ") if language == "en" else (list(text), "")
    lines, line = [], ""
    for unit in units:
        candidate = f"{line}{glue}{unit}" if line else unit
        if line and font.getlength(candidate) > width - int(1.6 * DPI):
            lines.append(line)
            line = unit
        else:
            line = candidate
    lines.append(line)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((int(0.8 * DPI), int(0.8 * DPI) + i * int(px * 1.5)), line, font=font, fill=0)
    return image, "\n".join(lines)


def pages(language: str, n: int):
    """n pages (image, text, 'font size'), cycling through the fonts and sizes."""
    styles = itertools.cycle(itertools.product(fonts(language), POINTS))
    out = []
    for text, (font, points) in zip(paragraphs(language, n), styles):
        image, truth = page_image(text, language, font, points)
        out.append((image, truth, f"{font.stem} {points}pt"))
    return out


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
    from rag.readers import ocr
    from rag.readers.documents import read

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
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--engines", default="rapidocr,tesseract")
    args = parser.parse_args()
    engines = args.engines.split(",")
    if "tesseract" in engines and not shutil.which("tesseract"):
        print("tesseract is not installed: skipped")
        engines.remove("tesseract")
    print("| engine | pages | pages/s | char accuracy (mean) | worst page | word accuracy |")
    print("|---|---|---|---|---|---|")
    runs = [("en", False), ("zh", False), ("en", True)]
    for language, upside_down in runs:
        sample = pages(language, args.pages)
        images = [p[0].rotate(180) if upside_down else p[0] for p in sample]
        truth, styles = [p[1] for p in sample], [p[2] for p in sample]
        label = language + (", upside down" if upside_down else "")
        with tempfile.TemporaryDirectory() as d:
            pdf = Path(d) / "scan.pdf"
            scanned_pdf(images, pdf)
            for engine in engines:
                if engine == "tesseract" and upside_down:
                    continue
                texts, seconds = run_rapidocr(pdf) if engine == "rapidocr" else run_tesseract(images, language)
                scores = [accuracy(g, w) for g, w in zip(texts, truth)]
                chars = [c for c, _ in scores]
                worst = min(range(len(chars)), key=chars.__getitem__)
                words = f"{sum(w for _, w in scores) / len(scores):.3f}" if language == "en" else "—"
                print(f"| {engine} ({label}) | {len(images)} | {len(images) / seconds:.2f} | "
                      f"{sum(chars) / len(chars):.4f} | {chars[worst]:.4f} ({styles[worst]}) | {words} |", flush=True)
    print(f"fonts: en {[f.stem for f in fonts('en')]}, zh {[f.stem for f in fonts('zh')]}; sizes {POINTS} pt")


if __name__ == "__main__":
    main()
