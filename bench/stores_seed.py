"""The embedded store and Milvus Lite side by side at the seed size: build time and search p50/p95.

    python bench/stores_seed.py

Both indexes are built from seeds/ with the tests' 384-d hash encoder (tests/fakes.py), so
the model's time is left out and what is measured is the stores; 100 dev questions, each mode.
Needs the [milvus] extra.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.evaluate import load_queries  # noqa: E402
from qa.index import build_index  # noqa: E402
from qa.search import Retriever  # noqa: E402
from tests.fakes import HashEncoder  # noqa: E402


def main() -> None:
    questions = [q.query for q in load_queries(ROOT / "tests/data/dev.jsonl")][:100]
    with tempfile.TemporaryDirectory() as tmp:
        for store in ("faiss", "milvus"):
            folder = Path(tmp) / store
            started = time.perf_counter()
            report = build_index(ROOT / "seeds", folder, encoder=HashEncoder(dimension=384), store=store)  # type: ignore[arg-type]
            built = time.perf_counter() - started
            retriever = Retriever.load(folder, encoder=HashEncoder(dimension=384), check_stale=False)
            for q in questions[:5]:
                retriever.search(q)
            for mode in ("hybrid", "dense", "lexical"):
                times = []
                for q in questions:
                    t = time.perf_counter()
                    retriever.search(q, mode=mode)  # type: ignore[arg-type]
                    times.append((time.perf_counter() - t) * 1000)
                times.sort()
                print(f"{store:6s} build {built:5.1f} s ({report.units} vectors) | {mode:7s} "
                      f"p50 {statistics.median(times):6.1f} ms p95 {times[int(0.95 * len(times)) - 1]:6.1f} ms")  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
