"""OCR: the text of scanned pages and images, offline, with RapidOCR (PP-OCRv4 ONNX models that
ship inside the rapidocr-onnxruntime wheel, so nothing is downloaded).

The pipeline, one small function per step:

    bytes --_open_image--> PIL image (checked: opens, at most MAX_PIXELS)
          --_recognise---> boxes with text and score (detection, orientation, recognition)
          --_rows--------> rows in reading order: top to bottom, boxes of one row left to right
          --_paragraphs--> one string per paragraph: a row that stops mid-sentence at the right
                           margin is joined to the next without a space, as Chinese is written

`ocr_image` runs it on one image; `pdf_page_images` finds the scan inside a PDF page; and
`cached_ocr` keeps each result as JSON under the cache folder, since a page takes seconds.

The engine is built once, on first use, with bounded threads (OMP_NUM_THREADS, default 2) and
one recognition at a time, so OCR yields the CPU to the rest of the process.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import statistics
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from qa.cache import cache_root, write_atomic
from qa.formats.base import SENTENCE_END, UnreadableFile

if TYPE_CHECKING:
    from pypdf import PageObject

log = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000  # a 600 dpi A3 scan is 35 Mpx; beyond this the image is refused, not decoded
# Recognition scores below this are marks, not text. Measured (bench/ocr.py --scores, 4 noisy
# pages): lines of body text scored 0.875-1.00, and 0.9 dropped the 0.875 one (page accuracy
# 99.77% -> 98.48%); what the engine read into strokes, dots, a stamp ring and a rule on a page
# without text scored 0.13-0.58 (dropped), and two single characters 0.86 (kept).
MIN_SCORE = 0.8
MAX_THREADS = 8
# RapidOCR's settings beside the threads; its global keys reach the Det, Cls and Rec sessions
# (rapidocr_onnxruntime.utils.parse_parameters.UpdateParameters).
SETTINGS: dict[str, Any] = {
    "inter_op_num_threads": 1,
    # No per-line orientation classifier: it squeezes a whole line into 192x48 px and, on a
    # clean upright A4 page, turned a full line of body text upside down (0.94 sure), which then
    # read as nothing (bench/ocr.py: 94.7% -> 100% on that page). It also costs time.
    "use_cls": False,
    "text_score": 0.0,  # keep every line: MIN_SCORE filters here, where it was measured
    # One line per recognition call, not 6 padded to the widest: bench/ocr.py --sweep, one clean
    # A4 page on 2 busy cores (load 5-6), best of 3: 1 -> 7.7 s, 3 -> 9.2 s, 6 -> 10.1 s, 12 -> 12.0 s.
    "rec_batch_num": 1,
}
# What made a cached result; a result cached under other settings is recomputed.
ENGINE = f"rapidocr-onnxruntime==1.4.4 use_cls={SETTINGS['use_cls']} min_score={MIN_SCORE}"
FULL_WIDTH_SLACK = 1.5  # a row ending within this many character heights of the right margin is full
CACHE_FORMAT = 1
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_WIDE = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f\u2018-\u201d\u2026]")

_engine: Any = None
_engine_lock = threading.Lock()  # builds the engine once
_run_lock = threading.Lock()  # one recognition at a time: bounded CPU beside other work


@dataclass(frozen=True, slots=True)
class Box:
    """One recognised piece of text and where it lies on the image (pixels)."""

    text: str
    score: float
    left: float
    right: float
    top: float
    bottom: float
    height: float  # the height of the text itself, not of the (possibly tilted) bounding box

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2


@dataclass(frozen=True, slots=True)
class Row:
    """Boxes on one line of the page, joined left to right."""

    text: str
    left: float
    right: float
    height: float


def ocr_image(raw: bytes) -> list[str]:
    """The paragraphs of text in one image (PNG, JPEG, TIFF ... bytes), in reading order.

    Raises UnreadableFile: "broken" if it is not an image, "too_large" beyond MAX_PIXELS,
    "no_tool" without rapidocr-onnxruntime.
    """
    return paragraphs(read_boxes(raw))


def read_boxes(raw: bytes) -> list[Box]:
    """Every piece of text the engine finds in an image, with its score, in no particular order
    (raises UnreadableFile like `ocr_image`)."""
    return _recognise(_open_image(raw))


def paragraphs(boxes: list[Box], min_score: float = MIN_SCORE) -> list[str]:
    """The paragraphs of `boxes` in reading order, leaving out those scored below `min_score`."""
    return _paragraphs(_rows([b for b in boxes if b.score >= min_score]))


def threads() -> int:
    """onnxruntime's intra-op threads: $OMP_NUM_THREADS, else 2, at most MAX_THREADS."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS") or 2)
    except ValueError:
        n = 2
    return max(1, min(n, MAX_THREADS))


def engine() -> Any:
    """The RapidOCR engine, built on first call (thread-safe); raises UnreadableFile("no_tool")."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = _build_engine()
    return _engine


def _build_engine() -> Any:
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise UnreadableFile(
            f"it is a scan and OCR cannot start ({exc}); install it: pip install rapidocr-onnxruntime==1.4.4 "
            f"(OpenCV under it needs libGL: apt-get install libgl1, which make browser does)",
            "no_tool",
        ) from exc
    return RapidOCR(intra_op_num_threads=threads(), **SETTINGS)


def _open_image(raw: bytes) -> Image.Image:
    """`raw` decoded as an RGB image, after checking its size from the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            pixels = image.width * image.height
            if pixels > MAX_PIXELS:
                raise UnreadableFile(
                    f"the image is {image.width}x{image.height} pixels, more than OCR takes "
                    f"({MAX_PIXELS // 1_000_000} megapixels); scan it at 300 dpi or less and add that",
                    "too_large",
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableFile(
            f"the image is larger than OCR takes ({MAX_PIXELS // 1_000_000} megapixels); scan it at 300 dpi or less",
            "too_large",
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UnreadableFile(
            f"it is not an image OCR can read ({exc}); save it again as PNG or JPEG and add that", "broken"
        ) from exc
    return image if image.mode == "RGB" else image.convert("RGB")


def _recognise(image: Image.Image) -> list[Box]:
    """Every text box the engine finds in `image`."""
    ocr = engine()
    with _run_lock:
        result, _ = ocr(image)
    boxes = []
    for points, text, score in result or []:
        if not text.strip():
            continue
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        (x0, y0), (x3, y3) = points[0], points[3]  # top-left and bottom-left corners
        height = ((x3 - x0) ** 2 + (y3 - y0) ** 2) ** 0.5
        boxes.append(Box(text.strip(), float(score), min(xs), max(xs), min(ys), max(ys), max(height, 1.0)))
    return boxes


def _rows(boxes: list[Box]) -> list[Row]:
    """`boxes` grouped into rows (middles within half a text height), top to bottom, each row's
    boxes left to right."""
    rows: list[list[Box]] = []
    for box in sorted(boxes, key=lambda b: b.middle):
        last = rows[-1] if rows else None
        if last and abs(box.middle - statistics.fmean(b.middle for b in last)) < 0.5 * min(
            box.height, *(b.height for b in last)
        ):
            last.append(box)
        else:
            rows.append([box])
    out = []
    for row in rows:
        row.sort(key=lambda b: b.left)
        text = row[0].text
        for box in row[1:]:
            text = _join(text, box.text)
        out.append(Row(text, row[0].left, max(b.right for b in row), statistics.median(b.height for b in row)))
    return out


def _paragraphs(rows: list[Row]) -> list[str]:
    """`rows` joined into paragraphs: a row that does not end a sentence and reaches the right
    margin (the usual right edge of the long rows) continues on the next row."""
    if not rows:
        return []
    widest = max(r.right - r.left for r in rows)
    margin = statistics.median(r.right for r in rows if r.right - r.left >= 0.5 * widest)
    slack = FULL_WIDTH_SLACK * statistics.median(r.height for r in rows)
    paragraphs: list[str] = []
    current = ""
    for row in rows:
        current = _join(current, row.text) if current else row.text
        if SENTENCE_END.search(row.text) or row.right < margin - slack:
            paragraphs.append(current)
            current = ""
    if current:
        paragraphs.append(current)
    return paragraphs


def _join(left: str, right: str) -> str:
    """Two pieces of one line or paragraph: no space next to Chinese, a space between words."""
    if _WIDE.match(right[:1]) or _WIDE.match(left[-1:]):
        return left + right
    return f"{left} {right}"


def pdf_page_images(page: PageObject) -> list[bytes]:
    """The images embedded in a pypdf page, largest first, as files PIL opens (a scanned page has
    one image that fills it). Images pypdf cannot extract are skipped with a warning."""
    found: list[tuple[int, bytes]] = []
    try:
        images = list(page.images)
    except Exception as exc:  # pypdf raises many types on damaged resources
        log.warning("the images of a PDF page cannot be read (%s); the page is skipped", exc)
        return []
    for image in images:
        try:
            pil = image.image
            data = image.data
        except Exception as exc:  # an unsupported filter (JBIG2, ...) or damaged data
            log.warning("a PDF image (%s) cannot be decoded (%s); it is skipped", image.name, exc)
            continue
        if pil is not None and data:
            found.append((pil.width * pil.height, data))
    found.sort(key=lambda item: item[0], reverse=True)
    return [data for _, data in found]


def cached_ocr(key: str, compute: Callable[[], list[str]]) -> list[str]:
    """The OCR result stored under `key` (the caller's, e.g. "<file sha256>-p3"), else
    `compute()`, stored as JSON in <cache_root>/ocr/<key>.json. A missing, corrupt or stale
    file is recomputed and rewritten."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"an OCR cache key is letters, digits, '.', '_' and '-' (at most 200), not {key!r}")
    path = cache_root() / "ocr" / f"{key}.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if (
            stored.get("format") == CACHE_FORMAT
            and stored.get("engine") == ENGINE
            and isinstance(stored.get("paragraphs"), list)
            and all(isinstance(p, str) for p in stored["paragraphs"])
        ):
            return list(stored["paragraphs"])
        log.info("OCR cache %s is from another version; recomputing", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("OCR cache %s is unreadable (%s); recomputing", path, exc)
    paragraphs = compute()
    record = {"format": CACHE_FORMAT, "engine": ENGINE, "paragraphs": paragraphs}
    write_atomic(path, json.dumps(record, ensure_ascii=False).encode("utf-8"))
    return paragraphs
