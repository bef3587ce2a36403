"""Text from pictures of pages (scans, photos, screenshots, PDF pages without a text layer),
in Chinese and English, offline: RapidOCR's PP-OCRv4 models ship inside the
rapidocr-onnxruntime wheel and run on ONNX Runtime, which rag already uses for its encoder.

Lines are put back in reading order (top to bottom, then left to right); a line the
recognizer is unsure of ends with LOW_MARK, so a reader of the passage knows to check it.
Orientation is decided per page, not per line: RapidOCR's line classifier turned a fifth of
clean English lines upside down (character accuracy 0.93 with it, 0.999 without, in
benchmarks/ocr.py); a page read with low confidence is read again turned, and the best kept.
Each file gets `max_ocr_seconds`; pages past it are reported as skipped, never dropped."""

from __future__ import annotations

import functools
import io
import time

from rag.core.errors import UnreadableFile
from rag.core.paths import cpu_count
from rag.readers.base import Limits, Section

LOW_CONFIDENCE = 0.6  # a line the recognizer scores under this is marked (clean pages score > 0.9)
MIN_CONFIDENCE = 0.3  # under this a "line" is noise (RapidOCR's own default drops under 0.5)
# Text boxes grown this much around the detected text: RapidOCR's 1.6 crops English lines so
# tightly that its recognizer drops the spaces between words; 2.4 kept them (benchmarks/ocr.py)
UNCLIP_RATIO = 2.4
UPRIGHT_CONFIDENCE = 0.8  # a page scoring under this is tried turned (upright pages score > 0.95, turned ones ~0.5)
TURNS = (0, 180, 90, 270)  # degrees counter-clockwise, in the order tried
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

    engine = RapidOCR(intra_op_num_threads=cpu_count(), inter_op_num_threads=1)
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return engine


def recognize(image) -> str:
    """One page image (PIL) -> its text, lines in reading order, unsure lines marked."""
    image = _fit(image.convert("RGB"))
    best_boxes, best = [], -1.0
    for turn in TURNS:
        found, boxes, confidence = _read(image.rotate(turn, expand=True, fillcolor="white") if turn else image)
        if confidence > best:
            best_boxes, best = boxes, confidence
        if confidence >= UPRIGHT_CONFIDENCE or not found:
            break  # upright enough, or a blank page (nothing detected in any orientation)
    return "\n".join(" ".join(t for *_, t in line) for line in _lines(best_boxes))


def _read(image):
    """One orientation: whether any text was detected, the boxes (top, bottom, left, text)
    worth keeping, and the length-weighted score of all it read (the orientation's signal).
    RapidOCR's steps are called one by one (as its __call__ in the pinned 1.4.4 does) to get
    the recognizer's character positions, which `_respace` needs."""
    import numpy as np

    engine = _engine()
    picture = np.asarray(image)[:, :, ::-1]  # RapidOCR takes OpenCV's BGR order
    engine.text_det.postprocess_op.unclip_ratio = UNCLIP_RATIO
    engine.text_det.postprocess_op.box_thresh = 0.5
    small, ratio_h, ratio_w = engine.preprocess(picture)
    small, record = engine.maybe_add_letterbox(small, {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}})
    found, _ = engine.auto_text_det(small)
    if found is None or len(found) == 0:
        return False, [], 0.0
    crops = engine.get_crop_img_list(small, found)
    recognized, _ = engine.text_rec(crops, True)
    corners = engine._get_origin_points(found, record, *picture.shape[:2])
    spacing = _Spacing(crops, recognized)
    boxes, weighted, length = [], 0.0, 0
    for box, crop, (text, score, columns) in zip(corners, crops, recognized):
        text, score = spacing.respace(text, columns, crop).strip(), float(score)
        weighted, length = weighted + score * len(text), length + len(text)
        if text and score >= MIN_CONFIDENCE:
            ys, xs = [p[1] for p in box], [p[0] for p in box]
            boxes.append((min(ys), max(ys), min(xs), text + (LOW_MARK if score < LOW_CONFIDENCE else "")))
    return True, boxes, weighted / max(1, length)


class _Spacing:
    """Spaces the recognizer dropped between words, put back from the line's pixels.

    On tightly set small type (Times at 9 pt, JPEG-compressed) PP-OCRv4 runs words together
    ("risenbylessthan"); the gap between two words is still plain in the picture: a run of
    blank columns far wider than the gaps between letters. A space goes where a blank run
    lies between two characters (found from where CTC decoded them) and is at least
    SPACE_SHARE of the gaps under the spaces the recognizer did read on that line (or page),
    and at least MIN_SPACE_GAP of the line's ink height. Never between Chinese characters."""

    def __init__(self, crops, recognized):
        self.lines = [_blank_runs(crop) for crop in crops]
        self.spaces = [sorted(w for w in _read_spaces(columns, crop, runs) if w)  # per line, read once
                       for (runs, _), (_, _, columns), crop in zip(self.lines, recognized, crops)]
        shares = [w / height for (_, height), widths in zip(self.lines, self.spaces) for w in widths]
        self.page_share = sorted(shares)[len(shares) // 2] if shares else None
        self.index = 0

    def respace(self, text: str, columns, crop) -> str:
        (runs, height), widths = self.lines[self.index], self.spaces[self.index]
        self.index += 1
        chars, xs = _positions(columns, crop)
        if len(chars) < 2 or "".join(chars) != text:
            return text
        typical = widths[len(widths) // 2] if widths else (self.page_share or 0) * height
        least = max(MIN_SPACE_GAP * height, SPACE_SHARE * typical)
        out = [chars[0]]
        for i in range(1, len(chars)):
            a, b = chars[i - 1], chars[i]
            if a != " " and b != " " and not _wide(a) and not _wide(b) and _widest(runs, xs[i - 1], xs[i]) >= least:
                out.append(" ")
            out.append(b)
        return "".join(out)


MIN_SPACE_GAP = 0.2  # of a line's ink height: gaps between letters stay under 0.15, word gaps over 0.23
SPACE_SHARE = 0.75  # of the line's typical word gap (monospace letters stand far apart too)


def _blank_runs(crop):
    """(start, end) of each run of ink-free columns inside a line crop, and the ink's height."""
    import cv2
    import numpy as np

    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    _, ink = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    rows = np.flatnonzero(ink.any(axis=1))
    height = int(rows[-1] - rows[0] + 1) if len(rows) else crop.shape[0]
    inked = np.concatenate(([1], ink.any(axis=0).astype(np.int8), [1]))
    edges = np.flatnonzero(np.diff(inked))  # blank runs start at a fall and end at a rise
    runs = [(int(s), int(e)) for s, e in zip(edges[0::2], edges[1::2]) if s > 0 and e < crop.shape[1]]
    return runs, height


def _positions(columns, crop):
    """Each decoded character and its x in the crop: the recognizer sees the crop 48 pixels
    high and emits one CTC column per 8 pixels of that."""
    col_num, words, word_columns = columns[0], columns[1], columns[2]
    chars = [c for word in words for c in word]
    cols = [c for word in word_columns for c in word]
    height, width = crop.shape[:2]
    resized = min(col_num * 8, -(-48 * width // max(1, height)))
    return chars, [(c + 0.5) * 8 * width / max(1, resized) for c in cols]


def _read_spaces(columns, crop, runs):
    """Widths of the widest blank run under each space the recognizer read."""
    chars, xs = _positions(columns, crop)
    return [_widest(runs, xs[i - 1], xs[i + 1]) for i in range(1, len(chars) - 1) if chars[i] == " "]


def _widest(runs, left: float, right: float) -> int:
    return max((e - s for s, e in runs if left < (s + e) / 2 < right), default=0)


def _wide(c: str) -> bool:
    import unicodedata

    return unicodedata.east_asian_width(c) in "WF"


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
