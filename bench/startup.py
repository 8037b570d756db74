"""Start-up: from launching `qa serve` to its first answer, and its resident memory.

    python bench/startup.py [--index vectors/default] [--docs seeds] [--runs 3] [--json]

Each run starts `python -m ui` (what `qa serve` execs) on a free port over an existing
index, polls the page, then asks the search API (gradio_client) until it answers. It
reports the time to the page, the time to the first answer, the server's CPU time until
then (user + system: less sensitive than wall time to other processes on the cores) and its
resident memory (RSS, and USS: the memory only it holds) right after that answer. The server is
then stopped. Bounded: a run that takes longer than --timeout seconds is stopped and
reported as such. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "上海全市核酸筛查采样了多少人"
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _page_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _memory(pid: int) -> dict[str, float]:
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    rss = sum(p.memory_info().rss for p in procs)
    uss = sum(p.memory_full_info().uss for p in procs)
    cpu = sum(sum(p.cpu_times()[:2]) for p in procs)
    return {"rss_mb": rss / 2**20, "uss_mb": uss / 2**20, "cpu_s": cpu}


def one_run(index: str, docs: str, timeout: float, extra_env: dict[str, str]) -> dict[str, Any]:
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, **ENV, **extra_env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-m", "ui", "--index", index, "--docs", docs, "--port", str(port)]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    try:
        while not _page_up(url):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"qa serve exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
                )
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"no page after {timeout:.0f} s")
            time.sleep(0.05)
        out["page_s"] = time.perf_counter() - started
        client = None
        while True:
            try:
                client = client or Client(url, verbose=False)
                result = client.predict(QUESTION, api_name="/search")
                if result.get("hits"):
                    break
            except Exception:
                if proc.poll() is not None or time.perf_counter() - started > timeout:
                    raise
                time.sleep(0.05)
        out["first_answer_s"] = time.perf_counter() - started
        out["answered"] = bool(result["answered"])
        out.update(_memory(proc.pid))
        t = time.perf_counter()
        client.predict(QUESTION + "？", api_name="/search")
        out["second_answer_ms"] = (time.perf_counter() - t) * 1000
        out["load_after"] = os.getloadavg()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def measure(
    index: str, docs: str, runs: int, timeout: float, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    results = [one_run(index, docs, timeout, extra_env or {}) for _ in range(runs)]
    summary: dict[str, Any] = {"runs": runs}
    for key in ("page_s", "first_answer_s", "cpu_s", "rss_mb", "uss_mb", "second_answer_ms", "load_before"):
        summary[key] = round(statistics.median(r[key] for r in results), 2)
    summary["first_answer_all_s"] = [round(r["first_answer_s"], 2) for r in results]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="vectors/default")
    parser.add_argument("--docs", default="seeds")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (ROOT / args.index / "manifest.json").exists():
        sys.exit(f"No index in {args.index}. Build it first: qa index build --index {args.index}")
    summary = measure(args.index, args.docs, args.runs, args.timeout)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:22s} {value}")


if __name__ == "__main__":
    main()
