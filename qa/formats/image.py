"""Images of pages (.png, .jpg/.jpeg, .tif/.tiff): their text, read by OCR (`qa.formats.ocr`).

Each frame is a page (a fax or a scanner's multi-page TIFF has several), cited 第N页（OCR）,
since its text may hold recognition errors. Results are cached by the file's checksum and the
page number, so a rebuild does not read them again. The title is the first paragraph when it
reads as a heading, else the file name.
"""

from __future__ import annotations

import hashlib
import io

from qa.formats.base import OCR_PLACE, Document, UnreadableFile, file_title, heading_title, short_title
from qa.progress import Progress, Stage

MAX_FRAMES = 500  # pages of one image file read at most
MAX_FRAME_PIXELS = 40_000_000  # as qa.formats.ocr.MAX_PIXELS: a frame beyond it is not decoded


def read_image(raw: bytes, path: str, on_progress: Progress | None = None) -> Document:
    """The text of an image file as a `Document` with one OCR'd page per frame (raises UnreadableFile)."""
    from qa.formats.ocr import cached_ocr, ocr_image

    sha = hashlib.sha256(raw).hexdigest()
    frames = _frames(raw)
    lines: list[str] = []
    pages: list[int] = []
    places: list[str] = []
    offset = 0
    for number, frame in enumerate(frames, start=1):
        if on_progress is not None:
            on_progress(Stage.OCR, number - 1, len(frames))
        paragraphs = cached_ocr(f"{sha}-p{number}", lambda frame=frame: ocr_image(frame))  # type: ignore[misc]
        if not paragraphs:
            continue
        pages.append(offset)
        places.append(OCR_PLACE.format(page=number))
        for line in paragraphs:
            lines.append(line)
            offset += len(line) + 1
    if on_progress is not None:
        on_progress(Stage.OCR, len(frames), len(frames))
    if not lines:
        raise UnreadableFile("OCR found no text in it; add a clearer scan (300 dpi, upright)", "empty")
    text = "\n".join(lines)
    title = short_title(heading_title(text) or file_title(path))
    return Document(path=path, title=title, text=text, sha256=sha, pages=tuple(pages), places=tuple(places))


def _frames(raw: bytes) -> list[bytes]:
    """The file itself when it holds one image, else each frame as PNG (a multi-page TIFF)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            count = getattr(image, "n_frames", 1)
            if count <= 1:
                return [raw]
            frames = []
            for i in range(min(count, MAX_FRAMES)):
                image.seek(i)
                if image.width * image.height > MAX_FRAME_PIXELS:
                    raise UnreadableFile(
                        f"page {i + 1} is {image.width}x{image.height} pixels, more than OCR takes; "
                        f"scan it at 300 dpi or less and add that",
                        "too_large",
                    )
                out = io.BytesIO()
                image.convert("RGB").save(out, "PNG")
                frames.append(out.getvalue())
            return frames
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UnreadableFile(
            f"it is not an image OCR can read ({exc}); save it again as PNG or JPEG and add that", "broken"
        ) from exc
