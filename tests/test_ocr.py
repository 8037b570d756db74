"""qa.formats.ocr with the real engine (RapidOCR, PP-OCRv4) on rendered scans of Chinese text.

Two pages are rendered once per module (one clean, one noisy) and OCRed once; each page takes
seconds, so the tests share them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from qa.formats import ocr
from qa.formats.base import UnreadableFile
from tests import scans

PARAGRAPHS = [
    "坚持科学精准防控，要求压实四方责任、筑牢群防群控防线。新冠肺炎疫情防控是一场人民战争，"
    "必须紧紧依靠人民群众，全国动员、全民参与，联防联控、群防群治，构筑起最严密的防控体系。",
    "在日常学习、工作或生活中，大家总少不了接触作文或者范文吧，通过文章可以把我们那些零零散散的思想，"
    "聚集在一块。范文怎么写才能发挥它最大的作用呢？",
    "要加强学校等重点场所常态化防控，压实主体责任，做实做细防控措施和应急预案。",
]


@pytest.fixture(scope="module")
def pages() -> dict[str, Image.Image]:
    """The clean and the noisy page of PARAGRAPHS."""
    try:
        scans.chinese_font()
    except scans.NoChineseFont as exc:
        pytest.skip(f"{exc} (needed to render test scans)")
    return {
        "clean": scans.render_page(PARAGRAPHS, noisy=False, seed=1),
        "noisy": scans.render_page(PARAGRAPHS, noisy=True, seed=1),
    }


@pytest.fixture(scope="module")
def read(pages: dict[str, Image.Image]) -> dict[str, list[str]]:
    """ocr_image on each page: the clean one as PNG, the noisy one as JPEG, as scanners write them."""
    return {
        "clean": ocr.ocr_image(scans.png_bytes(pages["clean"])),
        "noisy": ocr.ocr_image(scans.jpeg_bytes(pages["noisy"])),
    }


def test_clean_page_reads_back_as_its_paragraphs(read: dict[str, list[str]]) -> None:
    paragraphs = read["clean"]
    assert scans.char_accuracy("".join(PARAGRAPHS), "".join(paragraphs)) >= 0.95
    # Rows that stop mid-sentence at the margin are joined: one string per paragraph, in order.
    assert len(paragraphs) == len(PARAGRAPHS)
    for expected, got in zip(PARAGRAPHS, paragraphs, strict=True):
        assert scans.char_accuracy(expected, got) >= 0.95
    assert "范文怎么写才能发挥它最大的作用呢" in scans.normalized("".join(paragraphs))


def test_noisy_page_is_mostly_right(read: dict[str, list[str]]) -> None:
    assert scans.char_accuracy("".join(PARAGRAPHS), "".join(read["noisy"])) >= 0.85


def test_scanned_pdf_page_yields_its_image(pages: dict[str, Image.Image], read: dict[str, list[str]]) -> None:
    from pypdf import PdfReader

    pdf = scans.image_pdf([pages["clean"], pages["noisy"]])
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 2
    assert not reader.pages[0].extract_text().strip()  # no text layer: a scan
    images = ocr.pdf_page_images(reader.pages[0])
    assert len(images) == 1
    with Image.open(io.BytesIO(images[0])) as img:
        assert img.size == pages["clean"].size
    got = ocr.ocr_image(images[0])
    assert scans.char_accuracy("".join(PARAGRAPHS), "".join(got)) >= 0.95


def test_cache_returns_the_stored_result(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path))
    calls: list[int] = []

    def compute() -> list[str]:
        calls.append(1)
        return ["第一段。", "第二段，含 English 与 emoji 🙂。"]

    first = ocr.cached_ocr("ab12-p1", compute)
    second = ocr.cached_ocr("ab12-p1", compute)
    assert first == second == ["第一段。", "第二段，含 English 与 emoji 🙂。"]
    assert calls == [1]
    stored = json.loads((tmp_path / "ocr" / "ab12-p1.json").read_text(encoding="utf-8"))
    assert stored["paragraphs"] == first


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "paragraphs": "no"}', b"[1, 2]", b"\xff\xfe"])
def test_cache_recovers_from_a_corrupt_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes) -> None:
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path))
    path = tmp_path / "ocr" / "ab12-p2.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert ocr.cached_ocr("ab12-p2", lambda: ["重新识别。"]) == ["重新识别。"]
    assert ocr.cached_ocr("ab12-p2", lambda: pytest.fail("recomputed a good cache file")) == ["重新识别。"]


def test_cache_refuses_a_key_that_is_a_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="cache key"):
        ocr.cached_ocr("../escape", lambda: [])


def test_not_an_image_is_broken() -> None:
    with pytest.raises(UnreadableFile, match="PNG or JPEG") as info:
        ocr.ocr_image("这不是图片".encode())
    assert info.value.reason == "broken"


def test_huge_image_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr, "MAX_PIXELS", 100 * 100)
    with pytest.raises(UnreadableFile, match="megapixels|pixels") as info:
        ocr.ocr_image(scans.png_bytes(Image.new("L", (200, 200), 255)))
    assert info.value.reason == "too_large"


def test_blank_image_has_no_text() -> None:
    assert ocr.ocr_image(scans.png_bytes(Image.new("L", (400, 300), 255))) == []


def test_threads_follow_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert ocr.threads() == ocr.MAX_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ocr.threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert ocr.threads() == 2
