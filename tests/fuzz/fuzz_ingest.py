"""Fuzz the ingest path: arbitrary bytes as .txt / .md / .html -> parse_document -> split_document
-> tokenize. The only exceptions allowed out are the project's declared ones
(`qa.documents.UnreadableFile`, `qa.errors.QAError`); anything else is a finding.

    python tests/fuzz/fuzz_ingest.py --seconds 600        # what `make fuzz` runs

Uses atheris (libFuzzer, coverage-guided) when it is installed, else a hypothesis loop.
Findings are collected, not fatal: each distinct (exception type, place) is reported once, with
the input saved under --findings, and the run goes on. The last lines printed are the
executions count and the findings.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SUFFIXES = (".txt", ".md", ".html")
ALLOWED: tuple[type[BaseException], ...] = ()  # filled by _load(), after instrumentation
_state: dict = {"runs": 0, "findings": {}, "findings_dir": None, "started": 0.0}


def _load() -> None:
    global ALLOWED, parse_document, split_document, tokenize
    from qa.documents import UnreadableFile, parse_document
    from qa.errors import QAError
    from qa.lexical import tokenize
    from qa.split import split_document

    ALLOWED = (UnreadableFile, QAError)


def ingest(raw: bytes, suffix: str, max_chars: int = 300, query: str = "") -> None:
    """One execution: the contract under test. Raises only ALLOWED exceptions."""
    try:
        doc = parse_document(raw, "fuzz" + suffix)
    except ALLOWED:
        return
    passages = split_document(doc, max_chars)
    for p in passages:
        if doc.text[p.source.start : p.source.end] != p.text:
            raise AssertionError(f"span {p.source.start}:{p.source.end} does not hold the passage text")
    tokenize(doc.text[:2000])
    if query:
        tokenize(query)


def _record(exc: BaseException, data: bytes) -> None:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
    key = f"{type(exc).__name__} at {where}"
    if key in _state["findings"]:
        return
    name = hashlib.sha1(data).hexdigest()[:12]
    _state["findings"][key] = f"{type(exc).__name__}: {str(exc)[:200]} (input {name})"
    folder = _state["findings_dir"]
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    print(f"\nFINDING {key}: {str(exc)[:200]}\n{''.join(traceback.format_tb(exc.__traceback__)[-3:])}", flush=True)


def _one(data: bytes, provider_cls, deadline: float) -> None:  # type: ignore[no-untyped-def]
    if time.monotonic() > deadline:  # end here: libFuzzer's own exit skips Python's atexit
        _summary(_state["started"], "atheris")
        os._exit(1 if _state["findings"] else 0)
    _state["runs"] += 1
    fdp = provider_cls(data)
    suffix = SUFFIXES[fdp.ConsumeIntInRange(0, len(SUFFIXES) - 1)]
    max_chars = fdp.ConsumeIntInRange(20, 400)
    query = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 40))
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        ingest(raw, suffix, max_chars, query)
    except Exception as exc:
        _record(exc, data)


def _summary(started: float, engine: str) -> None:
    seconds = time.monotonic() - started
    print(f"\n{engine}: {_state['runs']} executions in {seconds:.0f} s ({_state['runs'] / max(seconds, 1e-9):.0f}/s)")
    if _state["findings"]:
        print(f"{len(_state['findings'])} finding(s):")
        for key, msg in _state["findings"].items():
            print(f"  {key}: {msg}")
    else:
        print("0 findings")
    sys.stdout.flush()


def seed_corpus(folder: Path) -> Path:
    """A starting corpus: the seed documents (cut to 4 KB) and a few hand-made odd files."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = [p.read_bytes()[:4096] for p in sorted((ROOT / "seeds").glob("*"))]
    samples += [
        "---\ntitle: 标题\ndate: 2022-05-05\n---\n# 标题\n\n正文。".encode(),
        "<html><head><title>页</title></head><body><p>第一段。</p><script>x</script></body></html>".encode(),
        "第一段。\n\n第二段！".encode("utf-16"),
        "疫情防控，人人有责！".encode("gbk"),
        b"\xef\xbb\xbf\xe4\xb8\xad\xe6\x96\x87",
    ]
    for raw in samples:
        # the provider reads suffix, max_chars and query length from the front
        (folder / hashlib.sha1(raw).hexdigest()[:12]).write_bytes(b"\x00\x01\x00" + raw)
    return folder


def run_atheris(seconds: int, workdir: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["qa"]):
        _load()
    corpus = seed_corpus(workdir / "corpus")
    _state["started"] = started = time.monotonic()
    argv = [sys.argv[0], str(corpus), f"-max_total_time={seconds + 60}", "-max_len=8192", "-timeout=30",
            "-rss_limit_mb=3072", f"-dict={Path(__file__).with_name('ingest.dict')}",
            f"-artifact_prefix={workdir}/"]  # fmt: skip
    atheris.Setup(argv, lambda data: _one(data, atheris.FuzzedDataProvider, started + seconds))
    atheris.Fuzz()


def run_hypothesis(seconds: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    _load()
    started = time.monotonic()

    @settings(max_examples=10**9, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=8192), st.sampled_from(SUFFIXES), st.integers(20, 400), st.text(max_size=40))
    def loop(raw: bytes, suffix: str, max_chars: int, query: str) -> None:
        if time.monotonic() - started > seconds:
            raise _Done
        _state["runs"] += 1
        try:
            ingest(raw, suffix, max_chars, query)
        except Exception as exc:
            _record(exc, raw)

    with contextlib.suppress(_Done):
        loop()
    _summary(started, "hypothesis")


class _Done(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--workdir", type=Path, default=ROOT / "artifacts" / "fuzz")
    args = parser.parse_args()
    _state["findings_dir"] = args.workdir / "findings"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    if engine == "atheris":
        run_atheris(args.seconds, args.workdir)
    else:
        run_hypothesis(args.seconds)


if __name__ == "__main__":
    main()
