"""Test scans: Chinese body text rendered onto an A4 page, clean or made to look scanned (noise, a
slight rotation, blur), and the same pages as PNG, JPEG or an image-only PDF (no text layer).

Used by tests/test_ocr.py and bench/ocr.py. The font is Debian's Noto Sans CJK (fonts-noto-cjk);
without a Chinese font the caller is skipped (pytest) rather than failed.
"""

from __future__ import annotations

import functools
import io
import random
import shutil
import subprocess
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

PAGE_SIZE = (1240, 1754)  # A4 at 150 dpi
MARGIN = 100  # px on every side
FONT_PX = 28  # about 10.5 pt at 150 dpi: body text
LINE_PITCH = 46  # px from one baseline to the next (1.6 lines)
NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
NOTO_SC_INDEX = 2  # in the .ttc: JP, KR, SC, TC, HK (fc-list names each face)
# Marks that may not start a line: they stay at the end of the line before (kinsoku).
_NO_LINE_START = set("，。、；：！？）》」』”’,.;:!?)…")


class NoChineseFont(RuntimeError):
    """No font that draws Chinese is installed (install fonts-noto-cjk)."""


@functools.cache
def chinese_font(size: int = FONT_PX) -> ImageFont.FreeTypeFont:
    """Noto Sans CJK SC, else the first font fc-list says covers Chinese (raises NoChineseFont)."""
    if NOTO_CJK.exists():
        return ImageFont.truetype(str(NOTO_CJK), size, index=NOTO_SC_INDEX)
    if shutil.which("fc-list"):
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            path = line.split(":", 1)[0].strip()
            if path:
                return ImageFont.truetype(path, size)
    raise NoChineseFont("no Chinese font found: apt-get install fonts-noto-cjk")


def wrap(paragraph: str, font: ImageFont.FreeTypeFont, width: float, indent: float = 0.0) -> list[str]:
    """`paragraph` cut into lines no wider than `width` px (the first one `indent` narrower), one
    character at a time as Chinese is set; closing punctuation stays on the line it closes."""
    lines: list[str] = []
    line = ""
    room = width - indent
    for ch in paragraph:
        if line and font.getlength(line + ch) > room and ch not in _NO_LINE_START:
            lines.append(line)
            line, room = "", width
        line += ch
    if line:
        lines.append(line)
    return lines


def render_page(lines: Sequence[str], *, noisy: bool, seed: int = 0) -> Image.Image:
    """A grayscale A4 page (1240x1754, 150 dpi) with each of `lines` set as a paragraph of body
    text (28 px Noto Sans CJK, first line indented by two characters). Text that does not fit the
    page is cut off. `noisy` makes it look scanned: a slight rotation (±1.5°), blur, gaussian and
    salt-and-pepper noise, all drawn from `seed`."""
    font = chinese_font()
    page = Image.new("L", PAGE_SIZE, 255)
    draw = ImageDraw.Draw(page)
    width = PAGE_SIZE[0] - 2 * MARGIN
    y = MARGIN
    for paragraph in lines:
        indent = 2 * FONT_PX
        for row in wrap(paragraph.strip(), font, width, indent):
            if y + LINE_PITCH > PAGE_SIZE[1] - MARGIN:
                break
            draw.text((MARGIN + indent, y), row, font=font, fill=0)
            y += LINE_PITCH
            indent = 0
    return scanned(page, seed) if noisy else page


def page_text(lines: Sequence[str]) -> str:
    """The text that `render_page(lines, ...)` actually draws (a page cuts off what does not fit)."""
    font = chinese_font()
    width = PAGE_SIZE[0] - 2 * MARGIN
    room = (PAGE_SIZE[1] - 2 * MARGIN) // LINE_PITCH
    out: list[str] = []
    for paragraph in lines:
        rows = wrap(paragraph.strip(), font, width, 2 * FONT_PX)[: max(room, 0)]
        room -= len(rows)
        if rows:
            out.append("".join(rows))
    return "\n".join(out)


def scanned(page: Image.Image, seed: int) -> Image.Image:
    """`page` as a cheap scanner would give it back: rotated by up to ±1.5°, blurred a little, with
    gaussian noise (sigma 12 grey levels) and 0.2% salt-and-pepper specks."""
    rng = random.Random(seed)
    img = page.rotate(rng.uniform(-1.5, 1.5), resample=Image.Resampling.BICUBIC, expand=False, fillcolor=255)
    img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.5, 0.9)))
    gen = np.random.default_rng(seed)
    arr = np.asarray(img, dtype=np.float32) + gen.normal(0.0, 12.0, size=(img.height, img.width))
    specks = gen.random(arr.shape)
    arr[specks < 0.001] = 0
    arr[specks > 0.999] = 255
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def png_bytes(img: Image.Image) -> bytes:
    """`img` as a PNG file."""
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, quality: int = 85) -> bytes:
    """`img` as a JPEG file (the format most scanners and phones write)."""
    buf = io.BytesIO()
    img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def image_pdf(images: Sequence[Image.Image], dpi: float = 150.0) -> bytes:
    """An image-only PDF, one image per page and no text layer: what a scanner writes."""
    if not images:
        raise ValueError("image_pdf needs at least one image")
    first, *rest = images
    buf = io.BytesIO()
    first.save(buf, "PDF", save_all=True, append_images=rest, resolution=dpi)
    return buf.getvalue()


def normalized(text: str) -> str:
    """`text` for comparing OCR output: NFKC (full-width and half-width punctuation alike), no
    whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between `a` and `b` (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def char_accuracy(reference: str, hypothesis: str) -> float:
    """1 - CER: one minus the edit distance over the reference's length, both `normalized`."""
    ref, hyp = normalized(reference), normalized(hypothesis)
    if not ref:
        return 1.0 if not hyp else 0.0
    return 1.0 - edit_distance(ref, hyp) / len(ref)
