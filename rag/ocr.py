"""Text from pictures of pages (scans, photos, screenshots, PDF pages without a text layer),
in Chinese and English, offline: RapidOCR's PP-OCRv4 models ship inside the
rapidocr-onnxruntime wheel and run on ONNX Runtime, which rag already uses for its encoder.

Lines are put back in reading order (top to bottom, then left to right); a line the
recognizer is unsure of ends with LOW_MARK, so a reader of the passage knows to check it.
Each file gets `max_ocr_seconds`; pages past it are reported as skipped, never dropped."""

from __future__ import annotations

import functools
import io
import time

from .documents import Limits, Section
from .errors import UnreadableFile

LOW_CONFIDENCE = 0.6  # a line the recognizer scores under this is marked (clean pages score > 0.9)
MIN_CONFIDENCE = 0.3  # under this a "line" is noise (RapidOCR's own default drops under 0.5)
# Text boxes grown this much around the detected text: RapidOCR's 1.6 crops English lines so
# tightly that its recognizer drops the spaces between words; 2.4 kept them (benchmarks/ocr.py)
UNCLIP_RATIO = 2.4
LOW_MARK = " [?]"
MAX_SIDE = 3000  # pixels; larger images are scaled down (OCR time grows with the area)
RENDER_SIDE = 2000  # pixels: a PDF page's longer side when rendered for OCR (A4 at 170 dpi)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
HOW_TO_ENABLE = "run `make setup`, or `pip install --no-deps rapidocr-onnxruntime==1.4.4`"


def unavailable() -> str | None:
    """Why OCR cannot run here, with how to enable it; None when it can."""
    try:
        _engine()
    except ImportError as e:
        return f"OCR is not installed ({e.name or e}): {HOW_TO_ENABLE}"
    return None


@functools.lru_cache(maxsize=1)
def _engine():
    """Loaded once per process (about a second: three small ONNX models)."""
    import logging

    from rapidocr_onnxruntime import RapidOCR

    from .models import cpu_count

    engine = RapidOCR(intra_op_num_threads=cpu_count(), inter_op_num_threads=1)
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return engine


def recognize(image) -> str:
    """One page image (PIL) -> its text, lines in reading order, unsure lines marked."""
    import numpy as np

    image = _fit(image.convert("RGB"))
    result, _ = _engine()(np.asarray(image)[:, :, ::-1],  # RapidOCR takes OpenCV's BGR order
                          unclip_ratio=UNCLIP_RATIO, text_score=MIN_CONFIDENCE, box_thresh=0.5)
    boxes = []
    for box, text, score in result or ():
        ys, xs = [p[1] for p in box], [p[0] for p in box]
        text = text.strip()
        if text:
            boxes.append((min(ys), max(ys), min(xs), text + (LOW_MARK if float(score) < LOW_CONFIDENCE else "")))
    return "\n".join(" ".join(t for *_, t in line) for line in _lines(boxes))


def _lines(boxes):
    """Boxes grouped into lines: a box whose vertical middle is within a third of the line's
    height of the line's middle joins it; each line is read left to right."""
    lines = []
    for top, bottom, left, text in sorted(boxes, key=lambda b: (b[0] + b[1]) / 2):
        middle = (top + bottom) / 2
        if lines and abs(middle - lines[-1][0]) <= (lines[-1][1]) / 3:
            lines[-1][2].append((left, text))
        else:
            lines.append([middle, bottom - top, [(left, text)]])
    return [[(left, text) for left, text in sorted(words)] for _, _, words in lines]


def _fit(image):
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    return image


class Clock:
    """The per-file OCR time bound: `left()` is False once `max_ocr_seconds` are spent."""

    def __init__(self, limits: Limits):
        self.limit = limits.max_ocr_seconds
        self.start = time.monotonic()

    def left(self) -> bool:
        return time.monotonic() - self.start < self.limit

    def reason(self) -> str:
        return f"the file's {self.limit:g} s of OCR were spent (max_ocr_seconds)"


def read_image(data: bytes, limits: Limits):
    """An image file; each frame of a multi-page TIFF (or GIF) is a page. Returns the
    sections and the (page, reason) of each frame passed over."""
    import warnings

    from PIL import Image, ImageSequence, UnidentifiedImageError

    why = unavailable()
    if why:
        raise UnreadableFile(f"image needs OCR, and {why}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(data))
            clock, sections, skipped = Clock(limits), [], []
            for page, frame in enumerate(ImageSequence.Iterator(picture), 1):
                if not clock.left():
                    skipped.append((page, "not read: " + clock.reason()))
                    continue
                frame.load()
                sections.append(Section(recognize(frame), page=page))
            if len(sections) == 1 and not skipped:
                sections[0].page = None  # one picture: no page to cite
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableFile(f"image is over Pillow's {Image.MAX_IMAGE_PIXELS // 1_000_000} million pixel limit (a decompression bomb?)") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise UnreadableFile(f"corrupt image ({type(e).__name__})") from e
    return sections, skipped
