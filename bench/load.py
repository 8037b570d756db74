"""Load test of the chat server: N clients × M questions at once; latency, throughput, errors.

    make stress                                    # 50 × 10 against `qa serve` over the seeds, into RESULTS.md
    python bench/load.py --url http://127.0.0.1:7860/            # against a running `qa serve`
    python bench/load.py --clients 20 --questions 3 --client gradio --api chat

Each client is a thread with its own connection that asks its questions one after another.
After the load, one client asks every distinct question once, one at a time: every answer
given under load must carry the same hits (search) or the same rendered reply (chat) as in
that sequential run.

Two kinds of client:
  http     the documented REST route (POST /gradio_api/call/<api>, then its event stream) over
           one kept-alive connection per client: what a script or a proxy does; the cost on the
           client side is small, so the figures are the server's.
  gradio   gradio_client.Client, one per thread, as the issue's first measurement did. For a
           plain http:// URL it is made with ssl_verify=False: with verification on, gradio_client
           builds a fresh certifi SSL context for each of the two connections it opens per request
           (20-200 ms of CPU each on these cores) although no TLS is ever spoken.

Every loop is bounded: M questions per client, a timeout per request, a deadline for the whole
run (requests not sent by then are counted, never waited for). Servers bind 127.0.0.1 only.
Numbers are printed and appended, never asserted; the two cores are usually shared, so say so.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Api = Literal["search", "chat"]
ClientKind = Literal["http", "gradio"]
QUERY_FILE = ROOT / "tests" / "data" / "queries.jsonl"
BUSY = "busy"  # the error kind of a request the server turned away at once (HTTP 503, queue full)


def load_questions(path: Path = QUERY_FILE) -> list[str]:
    """The evaluation questions (varied, so the query-embedding cache does not answer them all)."""
    return [json.loads(line)["query"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- clients


@dataclass(frozen=True, slots=True)
class Answer:
    """What identifies an answer: the hit ids and verdict (search), or the rendered reply (chat)."""

    key: tuple[str, ...]


class Refused(Exception):
    """The server turned the request away (kind BUSY) or answered with an error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _answer(api: Api, data: Any) -> Answer:
    if api == "search":
        result = data[0] if isinstance(data, list) else data
        return Answer((result["verdict"], *(h["id"] for h in result["hits"])))
    history = data[0]
    content = history[-1]["content"]
    text = content[0]["text"] if isinstance(content, list) else content
    return Answer((text,))


class HttpClient:
    """One user over the REST route, on one kept-alive connection."""

    def __init__(self, url: str, api: Api, timeout: float) -> None:
        import httpx

        self.url, self.api = url.rstrip("/") + "/", api
        # No TLS on loopback: skip building a certifi SSL context (see the module docstring).
        self._http = httpx.Client(timeout=timeout, verify=url.startswith("https:"), trust_env=False)
        self._defaults = _defaults(self._http, self.url, api)
        # One session per user, as a browser tab or a gradio_client.Client has: without it
        # every call would be a new session, whose state Gradio builds and keeps (~14 ms, ~56 KB).
        self._session = uuid.uuid4().hex

    def ask(self, question: str) -> Answer:
        response = self._http.post(
            f"{self.url}gradio_api/call/{self.api}",
            json={"data": [question, *self._defaults], "session_hash": self._session},
        )
        if response.status_code == 503:
            raise Refused(BUSY, response.json().get("detail", "503"))
        response.raise_for_status()
        event_id = response.json()["event_id"]
        event, data = None, None
        with self._http.stream("GET", f"{self.url}gradio_api/call/{self.api}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:].strip()
                elif line.startswith("data: ") and event in ("complete", "error"):
                    data = json.loads(line[6:])
                    break
        if event != "complete":
            raise Refused("error", str(data))
        return _answer(self.api, data)

    def close(self) -> None:
        self._http.close()


def _defaults(http: Any, url: str, api: Api) -> list[Any]:
    """The default values of the endpoint's parameters after the first (the question)."""
    info = http.get(f"{url}gradio_api/info").json()["named_endpoints"][f"/{api}"]
    return [p.get("parameter_default") for p in info["parameters"][1:]]


class GradioClient:
    """One user through gradio_client, as the issue measured it."""

    def __init__(self, url: str, api: Api, timeout: float) -> None:
        from gradio_client import Client

        self.api, self.timeout = api, timeout
        self._client = Client(url, verbose=False, download_files=False, ssl_verify=not url.startswith("http://"))

    def ask(self, question: str) -> Answer:
        from gradio_client.exceptions import AppError
        from gradio_client.utils import QueueError

        args: tuple[Any, ...] = (question,) if self.api == "search" else (question, [])
        try:
            data = self._client.submit(*args, api_name=f"/{self.api}").result(timeout=self.timeout)
        except QueueError as exc:
            raise Refused(BUSY, str(exc)) from exc
        except AppError as exc:
            raise Refused("error", str(exc)) from exc
        return _answer(self.api, data if self.api == "search" else [data[0]])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


CLIENTS: dict[str, Callable[[str, Api, float], HttpClient | GradioClient]] = {
    "http": HttpClient,
    "gradio": GradioClient,
}


# ---------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: who asked what, how long it took, and what came back (or why not)."""

    client: int
    question: str
    seconds: float
    answer: Answer | None = None
    error: str | None = None  # BUSY, "timeout", "error", "mismatch" or an exception name
    detail: str = ""


@dataclass
class Report:
    """A whole run: every outcome, the wall time, and what was planned."""

    outcomes: list[Outcome]
    seconds: float
    clients: int
    per_client: int
    api: Api
    kind: ClientKind
    unsent: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(o.error is None for o in self.outcomes)

    @property
    def errors(self) -> Counter[str]:
        return Counter(o.error for o in self.outcomes if o.error is not None)

    def percentile(self, q: float) -> float:
        """Latency percentile `q` (0-100) of the answered requests, in milliseconds (nearest rank)."""
        times = sorted(o.seconds for o in self.outcomes if o.error is None)
        if not times:
            return float("nan")
        rank = max(1, min(len(times), round(q / 100 * len(times) + 0.5)))
        return 1000 * times[rank - 1]

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        errors = ", ".join(f"{k} {n}" for k, n in sorted(self.errors.items())) or "none"
        return (
            f"{self.clients} {self.kind} clients × {self.per_client} /{self.api}: {self.answered} of "
            f"{self.clients * self.per_client} answered in {self.seconds:.1f} s ({self.throughput:.1f}/s); "
            f"p50 {self.percentile(50):.0f} ms, p95 {self.percentile(95):.0f} ms, p99 {self.percentile(99):.0f} ms; "
            f"errors: {errors}; not sent: {self.unsent}; different from the sequential run: {len(self.mismatches)}"
        )


def plan(questions: Sequence[str], clients: int, per_client: int) -> list[list[str]]:
    """The questions each client asks, in order: consecutive slices of `questions`, wrapping around."""
    n = len(questions)
    return [[questions[(c * per_client + j) % n] for j in range(per_client)] for c in range(clients)]


def sequential(url: str, questions: Sequence[str], *, api: Api = "search", kind: ClientKind = "http",
               timeout: float = 60.0) -> dict[str, Answer]:  # fmt: skip
    """Each distinct question asked once, one at a time: the reference answers."""
    client = CLIENTS[kind](url, api, timeout)
    try:
        return {q: client.ask(q) for q in dict.fromkeys(questions)}
    finally:
        client.close()


def run_load(url: str, questions: Sequence[str], *, clients: int = 50, per_client: int = 10, api: Api = "search",
             kind: ClientKind = "http", timeout: float = 60.0, deadline: float = 300.0,
             reference: dict[str, Answer] | None = None) -> Report:  # fmt: skip
    """`clients` threads, each asking its `per_client` questions one after another, all at once.

    A request taking longer than `timeout` seconds is an error; no request starts after
    `deadline` seconds. With `reference`, every answer is compared with it."""
    work = plan(questions, clients, per_client)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    started = time.perf_counter()
    stop_at = [started + deadline]

    def user(c: int) -> None:
        client = None
        try:
            client = CLIENTS[kind](url, api, timeout)
        except Exception as exc:
            with lock:
                outcomes.extend(Outcome(c, q, 0.0, None, type(exc).__name__, str(exc)[:200]) for q in work[c])
        with contextlib.suppress(threading.BrokenBarrierError):
            start_gate.wait(timeout=timeout)
        if client is None:
            return
        try:
            for q in work[c]:
                if time.perf_counter() > stop_at[0]:
                    return
                t = time.perf_counter()
                try:
                    answer = client.ask(q)
                    out = Outcome(c, q, time.perf_counter() - t, answer)
                except Refused as exc:
                    out = Outcome(c, q, time.perf_counter() - t, None, exc.kind, str(exc)[:200])
                except Exception as exc:
                    kind_ = "timeout" if "timeout" in type(exc).__name__.lower() else type(exc).__name__
                    out = Outcome(c, q, time.perf_counter() - t, None, kind_, str(exc)[:200])
                with lock:
                    outcomes.append(out)
        finally:
            client.close()

    threads = [threading.Thread(target=user, args=(c,), daemon=True, name=f"load-{c}") for c in range(clients)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start_gate.wait(timeout=timeout)
    started = time.perf_counter()  # the clock starts when every client is connected
    stop_at[0] = started + deadline
    for t in threads:
        t.join(timeout=max(0.0, stop_at[0] + timeout + 5 - time.perf_counter()))
    seconds = time.perf_counter() - started
    with lock:
        done = list(outcomes)
    report = Report(done, seconds, clients, per_client, api, kind, unsent=clients * per_client - len(done))
    if reference is not None:
        compare(report, reference)
    return report


def compare(report: Report, reference: dict[str, Answer]) -> None:
    """Mark every answer that differs from the sequential run's as an error ("mismatch")."""
    checked = []
    for o in report.outcomes:
        if o.error is None and o.answer != reference.get(o.question):
            report.mismatches.append(o.question)
            o = Outcome(o.client, o.question, o.seconds, o.answer, "mismatch", "differs from the sequential run")
        checked.append(o)
    report.outcomes = checked


# ---------------------------------------------------------------- a server in this process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def in_process_server(docs: Path, index: Path, *, encoder: Literal["real", "hash"] = "real") -> Iterator[str]:
    """`qa serve` in this process (index built if missing), on a free 127.0.0.1 port; yields its URL."""
    from qa.index import build_index
    from qa.search import Retriever
    from ui.app import create_app, launch_app

    if encoder == "hash":
        from tests.fakes import HashEncoder

        enc: Any = HashEncoder()
    else:
        from qa.embed import make_encoder

        enc = make_encoder()
    build_index(docs, index, encoder=enc)
    retriever = Retriever.load(index, encoder=enc)
    retriever.warm_up()
    app = create_app(retriever, docs)
    url = launch_app(app, host="127.0.0.1", port=_free_port())
    try:
        yield url
    finally:
        app.close(verbose=False)


@contextlib.contextmanager
def qa_serve(docs: Path, index: Path, *, startup: float = 600.0) -> Iterator[str]:
    """`qa serve` (python -m ui) in its own process on a free 127.0.0.1 port; yields its URL.

    The clients then do not share this process's GIL with the server."""
    port = _free_port()
    cmd = [sys.executable, "-m", "ui", "--docs", str(docs), "--index", str(index), "--host", "127.0.0.1",
           "--port", str(port)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        ready = threading.Event()
        lines: list[str] = []

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line.rstrip())
                if line.startswith("Ready in"):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(startup) or proc.poll() is not None:
            raise RuntimeError("qa serve did not start:\n" + "\n".join(lines[-20:]))
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- the record


def machine() -> str:
    """nproc, the CPU model, RAM and the load average, for the results table."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        ram = f"{kb / 1048576:.0f} GiB"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {cpu}, {ram} RAM, load average {load}"


def append_results(path: Path, report: Report, command: str, where: str, *, before_load: str) -> None:
    """One row of the load table in `path` (created with its header if missing)."""
    header = (
        "\n## Load: `qa serve` under many clients (bench/load.py)\n\n"
        "| date | machine | command | server | answered | errors | p50 ms | p95 ms | p99 ms | req/s | same hits |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if "## Load: `qa serve` under many clients" not in text:
        text = text.rstrip("\n") + "\n" + header
    errors = ", ".join(f"{k} {n}" for k, n in sorted(report.errors.items())) or "0"
    row = (
        f"| {dt.date.today().isoformat()} | {before_load} | `{command}` | {where} | "
        f"{report.answered}/{report.clients * report.per_client} | {errors} | {report.percentile(50):.0f} | "
        f"{report.percentile(95):.0f} | {report.percentile(99):.0f} | {report.throughput:.1f} | "
        f"{'yes' if not report.mismatches else f'no ({len(report.mismatches)})'} |\n"
    )
    path.write_text(text.rstrip("\n") + "\n" + row if text.endswith("|\n") else text + row, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start `qa serve` over a copy of --docs)")
    parser.add_argument("--docs", type=Path, default=ROOT / "seeds", help="documents of the server started here")
    parser.add_argument("--in-process", action="store_true", help="run the server in this process instead")
    parser.add_argument("--encoder", choices=["real", "hash"], default="real", help="in-process server's encoder")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--questions", type=int, default=10, help="questions per client")
    parser.add_argument("--api", choices=["search", "chat"], default="search")
    parser.add_argument("--client", choices=["http", "gradio"], default="http")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds after which no request starts")
    parser.add_argument("--no-check", action="store_true", help="skip the sequential run and the comparison")
    parser.add_argument("--append", type=Path, help="append the result to this markdown file")
    args = parser.parse_args(argv)
    questions = load_questions()
    before = machine()
    with contextlib.ExitStack() as stack:
        if args.url:
            url, where = args.url, args.url
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qa-load-")))
            docs = tmp / "docs"
            shutil.copytree(args.docs, docs)
            if args.in_process:
                url = stack.enter_context(in_process_server(docs, tmp / "index", encoder=args.encoder))
                where = f"in-process, {args.encoder} encoder"
            else:
                url = stack.enter_context(qa_serve(docs, tmp / "index"))
                where = "qa serve (seeds, e5-small)" if args.docs == ROOT / "seeds" else f"qa serve ({args.docs})"
        print(f"Machine: {before}\nServer: {where} ({url})", flush=True)
        report = run_load(url, questions, clients=args.clients, per_client=args.questions, api=args.api,
                          kind=args.client, timeout=args.timeout, deadline=args.deadline)  # fmt: skip
        if not args.no_check:  # afterwards, so that the load meets questions the server has not seen
            needed = [q for qs in plan(questions, args.clients, args.questions) for q in qs]
            t = time.perf_counter()
            reference = sequential(url, needed, api=args.api, kind=args.client, timeout=args.timeout)
            print(f"Sequential reference: {len(reference)} questions in {time.perf_counter() - t:.1f} s", flush=True)
            compare(report, reference)
    print(report.summary())
    for o in [o for o in report.outcomes if o.error][:5]:
        print(f"  {o.error}: {o.question[:30]} … {o.detail}")
    if args.append:
        command = "python bench/load.py " + " ".join(argv if argv is not None else sys.argv[1:])
        append_results(args.append, report, command, where, before_load=before)
        print(f"Appended to {args.append}")
    return 0 if report.answered == args.clients * args.questions and not report.mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
