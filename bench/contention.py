"""Search latency where users are: quiet, beside one busy process, and during an index update
in the same server.

    python bench/contention.py [--index vectors/default] [--docs seeds] [--questions 60] [--json]

Three phases, in one process, on the same questions (tests/data/queries.jsonl), each question's
vector computed afresh (the encoder's query cache is cleared), hybrid mode, k=5:

- quiet: nothing else runs (the load average before it is printed; read it);
- busy: one CPU-bound process (a Python busy loop) runs beside the searches;
- update: the server's own upload path (qa.library.Library.add_files) adds a long document to a
  copy of the seed index in a thread, and the searches run meanwhile, on the old index, as the
  chat's would; only the searches that ran while the update was running are counted.

The runtime settings are qa.runtime's defaults unless the environment sets them: for the
figures of the libraries' own defaults, run it with GOMP_SPINCOUNT=300000 (libgomp's default
spin) set. Every loop is bounded in count and time. Printed (or one JSON object), never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UPDATE_DOC = ROOT / "seeds" / "003_d1ad4b9a7ddf73f7.txt"  # the longest seed: ~20 s of embedding on 2 cores
UPDATE_SECONDS = 300  # an update that takes longer than this is reported as unfinished


def percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"p50": float("nan"), "p95": float("nan"), "n": 0}
    s = sorted(ms)
    return {"p50": round(statistics.median(s), 2), "p95": round(s[int(0.95 * (len(s) - 1))], 2), "n": len(s)}


def questions(limit: int) -> list[str]:
    path = ROOT / "tests" / "data" / "queries.jsonl"
    return [json.loads(line)["query"] for line in path.read_text("utf-8").splitlines() if line.strip()][:limit]


def timed_searches(retriever: Any, texts: list[str], *, until: threading.Event | None = None) -> list[float]:
    """One hybrid search per question, each with a fresh query vector; stops early when `until` is set."""
    out: list[float] = []
    for text in texts:
        if until is not None and until.is_set():
            break
        retriever.encoder._cache.clear()
        t = time.perf_counter()
        retriever.search(text, k=5, mode="hybrid")
        out.append((time.perf_counter() - t) * 1000)
    return out


def busy_neighbour() -> subprocess.Popen[bytes]:
    """A CPU-bound process: another job, a build, a second service."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(index_dir: Path, docs_dir: Path, texts: list[str]) -> dict[str, Any]:
    import qa  # noqa: F401  (qa.runtime.configure runs before the engines load)
    from qa.search import Retriever

    out: dict[str, Any] = {
        "questions": len(texts),
        "runtime": {k: os.environ.get(k, "") for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
        "load_before": round(os.getloadavg()[0], 2),
    }
    retriever = Retriever.load(index_dir)
    retriever.warm_up()
    timed_searches(retriever, texts[:5])
    out["quiet_ms"] = percentiles(timed_searches(retriever, texts))

    neighbour = busy_neighbour()
    try:
        time.sleep(1.0)
        out["busy_ms"] = percentiles(timed_searches(retriever, texts))
    finally:
        neighbour.kill()
        neighbour.wait()
    out.update(update_phase(retriever, docs_dir, index_dir, texts))
    out["load_after"] = round(os.getloadavg()[0], 2)
    quiet = out["quiet_ms"]["p50"]
    out["ratios"] = {
        "busy_p50 / quiet_p50": round(out["busy_ms"]["p50"] / quiet, 2),
        "update_p50 / quiet_p50": round(out["update_ms"]["p50"] / quiet, 2),
        "busy_p95 / quiet_p95": round(out["busy_ms"]["p95"] / out["quiet_ms"]["p95"], 2),
        "update_p95 / quiet_p95": round(out["update_ms"]["p95"] / out["quiet_ms"]["p95"], 2),
    }
    return out


def update_phase(retriever: Any, docs_dir: Path, index_dir: Path, texts: list[str]) -> dict[str, Any]:
    """Searches while the same process adds a document through the chat's upload path."""
    from qa.index import Index
    from qa.library import Library
    from qa.search import Retriever

    with tempfile.TemporaryDirectory(prefix="qa-contention-") as tmp:
        docs = Path(tmp) / "docs"
        shutil.copytree(docs_dir, docs)
        index = Path(tmp) / "index"
        shutil.copytree(index_dir, index)
        server = Retriever(Index.open(index), retriever.encoder)
        server.warm_up()
        library = Library(server, docs)
        upload = Path(tmp) / "新上传的文件.txt"  # new text: every passage must be embedded
        upload.write_text(re.sub(r"([。！？])(?=\S)", r"\1据悉，", UPDATE_DOC.read_text("utf-8")), "utf-8")
        done = threading.Event()
        result: dict[str, Any] = {}

        def add() -> None:
            t = time.perf_counter()
            try:
                outcome = library.add_files([upload])
                result["update_embedded"] = outcome.report.embedded if outcome.report else 0
            finally:
                result["update_s"] = round(time.perf_counter() - t, 1)
                done.set()

        worker = threading.Thread(target=add, name="bench-upload", daemon=True)
        worker.start()
        time.sleep(0.5)  # the update is reading and splitting; measure once it embeds
        ms: list[float] = []
        deadline = time.monotonic() + UPDATE_SECONDS
        while not done.is_set() and time.monotonic() < deadline:
            ms += timed_searches(library.retriever, texts, until=done)
        worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            result["update_s"] = f"unfinished after {UPDATE_SECONDS} s"
        result["update_ms"] = percentiles(ms)
        return result


def report(r: dict[str, Any]) -> str:
    lines = [
        f"contention: {r['questions']} questions, hybrid, fresh query vectors; runtime {r['runtime']}; "
        f"load {r['load_before']} -> {r['load_after']}"
    ]
    for key in ("quiet_ms", "busy_ms", "update_ms"):
        v = r[key]
        lines.append(f"  {key[:-3]:7s} p50 {v['p50']:8.2f} ms   p95 {v['p95']:8.2f} ms   ({v['n']} searches)")
    lines.append(f"  update: {r.get('update_embedded')} units embedded in {r.get('update_s')} s")
    lines += [f"  {k:24s} {v}" for k, v in r["ratios"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=ROOT / "vectors" / "default")
    parser.add_argument("--docs", type=Path, default=ROOT / "seeds")
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = run(args.index, args.docs, questions(args.questions))
    print(json.dumps(results, ensure_ascii=False) if args.json else report(results))


if __name__ == "__main__":
    main()
