"""OCR of scanned Chinese body text: character accuracy (1 - CER) and seconds per page.

Renders `--pages` A4 pages (150 dpi, 28 px Noto Sans CJK, about 800 characters each) from the
seed corpus, clean and made to look scanned (tests/scans.py), and reads them back with
qa.formats.ocr (RapidOCR, PP-OCRv4). CER is the edit distance over the reference length after
NFKC and without whitespace. Each timing is printed with the load average beside it: this
machine is shared, so a figure means little without it.

    python bench/ocr.py                    # 4 pages, the default settings
    python bench/ocr.py --pages 2 --json
    python bench/ocr.py --scores           # line scores, and accuracy at each MIN_SCORE
    python bench/ocr.py --sweep            # engine settings: threads, det size, rec batch
    python bench/ocr.py --tesseract        # Debian's tesseract (chi_sim) on the same pages

Targets: accuracy >= 97% clean and >= 90% noisy; >= 1 page/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.documents import parse_document  # noqa: E402
from qa.formats import ocr  # noqa: E402
from tests.scans import char_accuracy, page_text, png_bytes, render_page  # noqa: E402

PAGE_CHARS = (700, 900)  # the body text of one A4 page
_CJK = re.compile(r"[\u4e00-\u9fff]")


def body_paragraphs() -> list[list[str]]:
    """Per seed file, its paragraphs of Chinese prose (mostly Chinese characters, 30 or more)."""
    out = []
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        doc = parse_document(path.read_bytes(), path.name)
        paras = [p.strip() for p in doc.text.split("\n")]
        out.append([p for p in paras if len(p) >= 30 and len(_CJK.findall(p)) >= 0.7 * len(p)])
    return [paras for paras in out if paras]


def pages(n: int) -> list[list[str]]:
    """`n` pages of 700-900 characters, page k from seed file k (in turn), each filled with whole
    paragraphs (the last one cut at a sentence end)."""
    files = body_paragraphs()
    taken = [0] * len(files)
    low, high = PAGE_CHARS
    result: list[list[str]] = []
    for k in range(n):
        f = k % len(files)
        paras = files[f]
        page: list[str] = []
        size = 0
        while size < low:
            para = paras[taken[f] % len(paras)]
            taken[f] += 1
            if size + len(para) > high:
                cut = para[: high - size]
                end = max(cut.rfind("。"), cut.rfind("！"), cut.rfind("？"))
                para = cut[: end + 1] if end > 0 else cut
            page.append(para)
            size += len(para)
        result.append(page)
    return result


def timed(read: Callable[[bytes], list[str]], raw: bytes) -> tuple[str, float]:
    start = time.perf_counter()
    text = "\n".join(read(raw))
    return text, time.perf_counter() - start


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def measure(read: Callable[[bytes], list[str]], texts: list[list[str]], label: str, quiet: bool) -> dict:
    """Accuracy and seconds of `read` on each page, clean and noisy."""
    rows = []
    for i, lines in enumerate(texts):
        reference = page_text(lines)
        for noisy in (False, True):
            raw = png_bytes(render_page(lines, noisy=noisy, seed=i))
            text, seconds = timed(read, raw)
            row = {
                "page": i,
                "noisy": noisy,
                "chars": len(reference.replace("\n", "")),
                "accuracy": round(char_accuracy(reference, text), 4),
                "seconds": round(seconds, 2),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
            rows.append(row)
            if not quiet:
                kind = "noisy" if noisy else "clean"
                print(
                    f"{label} page {i} {kind}: {row['chars']} chars, accuracy {row['accuracy']:.2%}, "
                    f"{seconds:.2f} s  ({load()})",
                    flush=True,
                )
    summary: dict = {"engine": label, "pages": len(texts), "rows": rows}
    for noisy, kind in ((False, "clean"), (True, "noisy")):
        sel = [r for r in rows if r["noisy"] == noisy]
        secs = sum(r["seconds"] for r in sel)
        summary[kind] = {
            "accuracy": round(sum(r["accuracy"] for r in sel) / len(sel), 4),
            "seconds_per_page": round(secs / len(sel), 2),
            "pages_per_second": round(len(sel) / secs, 3),
        }
    return summary


def tesseract_read(raw: bytes) -> list[str]:
    """Debian's tesseract with the chi_sim model, one page (block) layout."""
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        f.write(raw)
        f.flush()
        env = {**os.environ, "OMP_THREAD_LIMIT": str(ocr.threads())}
        out = subprocess.run(
            ["tesseract", f.name, "-", "-l", "chi_sim", "--psm", "6"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
    return [line for line in out.splitlines() if line.strip()]


def scores(texts: list[list[str]]) -> None:
    """Recognition scores of every line, and page accuracy when lines below a threshold are dropped,
    on noisy pages and on a noisy page with marks but no text."""
    from tests.scans import scanned

    thresholds = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9)
    for i, lines in enumerate(texts):
        reference = page_text(lines)
        boxes = ocr.read_boxes(png_bytes(render_page(lines, noisy=True, seed=i)))
        values = sorted(b.score for b in boxes)
        print(f"noisy page {i}: {len(values)} lines, lowest scores {[round(v, 3) for v in values[:5]]}")
        for t in thresholds:
            acc = char_accuracy(reference, "\n".join(ocr.paragraphs(boxes, min_score=t)))
            print(f"  min_score {t:.1f}: accuracy {acc:.2%}")
    boxes = ocr.read_boxes(png_bytes(scanned(marks_page(seed=3), seed=5)))
    print(f"noisy page of marks, no text: {sorted((round(b.score, 3), b.text) for b in boxes)}")


def marks_page(seed: int) -> Image.Image:
    """A blank page with what a scan picks up besides text: strokes, ink dots, a stamp ring, a rule."""
    rng = random.Random(seed)
    page = render_page([], noisy=False)
    draw = ImageDraw.Draw(page)
    for _ in range(40):
        x, y = rng.randrange(100, 1100), rng.randrange(100, 1600)
        end = (x + rng.randrange(-80, 80), y + rng.randrange(-80, 80))
        draw.line([(x, y), end], fill=0, width=rng.randrange(1, 5))
    for _ in range(30):
        x, y, r = rng.randrange(100, 1100), rng.randrange(100, 1600), rng.randrange(2, 9)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=rng.randrange(0, 120))
    draw.ellipse([900, 1400, 1100, 1600], outline=0, width=6)
    draw.line([(100, 1650), (1140, 1650)], fill=0, width=2)
    return page


def sweep(texts: list[list[str]], repeats: int = 3) -> None:
    """Seconds per page (best of `repeats`) and accuracy of one clean page under several engine
    settings, each a change to qa.formats.ocr.SETTINGS and its threads."""
    from rapidocr_onnxruntime import RapidOCR

    changes: list[dict] = [
        {},
        {"intra_op_num_threads": 1},
        {"rec_batch_num": 3},
        {"rec_batch_num": 6},  # rapidocr's default
        {"intra_op_num_threads": 1, "rec_batch_num": 6},
        {"det_limit_type": "max", "det_limit_side_len": 960},
        {"use_cls": True},
    ]
    lines = texts[0]
    reference = page_text(lines)
    raw = png_bytes(render_page(lines, noisy=False, seed=0))
    for change in changes:
        settings = {"intra_op_num_threads": ocr.threads(), **ocr.SETTINGS, **change}
        ocr._engine = RapidOCR(**settings)
        ocr.read_boxes(raw)  # warm up
        best, text = float("inf"), ""
        for _ in range(repeats):
            text, seconds = timed(ocr.ocr_image, raw)
            best = min(best, seconds)
        accuracy = char_accuracy(reference, text)
        print(f"{change or 'default'}: {best:.2f} s, accuracy {accuracy:.2%}  ({load()})", flush=True)
    ocr._engine = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--scores", action="store_true", help="line scores and accuracy per MIN_SCORE")
    parser.add_argument("--sweep", action="store_true", help="seconds per page under several engine settings")
    parser.add_argument("--tesseract", action="store_true", help="also run tesseract -l chi_sim")
    args = parser.parse_args()
    texts = pages(args.pages)
    if args.scores:
        scores(texts)
        return
    if args.sweep:
        sweep(texts)
        return
    ocr.engine()
    ocr.ocr_image(png_bytes(render_page(texts[0][:1], noisy=False, seed=0)))  # load and warm up
    results = [measure(ocr.ocr_image, texts, "rapidocr", args.json)]
    if args.tesseract:
        if shutil.which("tesseract") is None:
            print("tesseract is not installed: apt-get install -y tesseract-ocr tesseract-ocr-chi-sim", file=sys.stderr)
        else:
            results.append(measure(tesseract_read, texts, "tesseract", args.json))
    if args.json:
        print(json.dumps({"threads": ocr.threads(), "results": results}, ensure_ascii=False, indent=1))
        return
    for r in results:
        for kind in ("clean", "noisy"):
            s = r[kind]
            print(
                f"{r['engine']} {kind}: accuracy {s['accuracy']:.2%}, {s['seconds_per_page']:.2f} s/page, "
                f"{s['pages_per_second']:.3f} pages/s over {r['pages']} pages"
            )
    print(f"threads {ocr.threads()}, {load()}")


if __name__ == "__main__":
    main()
