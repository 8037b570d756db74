"""The child side of tests/test_crash.py: a build, an update or an upload that stops at a
chosen point and waits there to be killed with SIGKILL (or told to go on).

A kill point is either the n-th progress event of a stage (the typed `on_progress(stage,
done, total)` events) or the n-th call of a function of the write phase (os.replace, os.fsync,
np.save, ...), before or after it runs. The child tells the parent over a pipe when it has
stopped, and then waits (bounded: if nobody kills it or lets it go on, it exits by itself).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

import qa.index
from qa.index import Index, build_index
from qa.progress import Stage
from qa.search import Retriever
from tests.fakes import HashEncoder

Job = Literal["build", "update", "upload"]
EMBED_BATCH = 16  # smaller batches than qa.index's: more embedding events to stop at
PAUSE_SECONDS = 120  # how long a stopped child waits to be killed before it exits by itself

# The functions of the write phase a kill point can name: module, attribute.
CALLS: dict[str, tuple[Any, str]] = {
    "os.replace": (os, "replace"),
    "os.fsync": (os, "fsync"),
    "os.link": (os, "link"),
    "shutil.rmtree": (shutil, "rmtree"),
    "np.save": (np, "save"),
    "faiss.write_index": (faiss, "write_index"),
}


@dataclass(frozen=True, slots=True)
class KillPoint:
    """Where the child stops: the `n`-th event of stage `name`, or the `n`-th call of `name`
    (one of CALLS), `when` before or after it."""

    kind: Literal["event", "call"]
    name: str
    n: int
    when: Literal["before", "after"] = "before"

    def __str__(self) -> str:
        return f"{self.name}#{self.n}" + (f"-{self.when}" if self.kind == "call" else "")


def _stop(conn: Connection, point: KillPoint) -> None:
    """Tell the parent, then wait to be killed, or told to go on ("resume")."""
    conn.send(("stopped", str(point)))
    if conn.poll(PAUSE_SECONDS) and conn.recv() == "resume":
        return
    os._exit(3)


def _arm(point: KillPoint | None, conn: Connection) -> Callable[[Stage, int, int], None]:
    """Patch the named function (for a call point) and return the progress callback."""
    seen: dict[str, int] = {}

    if point is not None and point.kind == "call":
        module, attr = CALLS[point.name]
        real = getattr(module, attr)

        def patched(*args: Any, **kwargs: Any) -> Any:
            seen[point.name] = seen.get(point.name, 0) + 1
            hit = seen[point.name] == point.n
            if hit and point.when == "before":
                _stop(conn, point)
            out = real(*args, **kwargs)
            if hit:
                _stop(conn, point)
            return out

        setattr(module, attr, patched)

    def progress(stage: Stage, done: int, total: int) -> None:
        seen[stage.value] = seen.get(stage.value, 0) + 1
        if point is not None and point.kind == "event" and point.name == stage.value and seen[stage.value] == point.n:
            _stop(conn, point)

    return progress


def run(job: Job, docs: str, index: str, files: Sequence[str], point: KillPoint | None, conn: Connection) -> None:
    """The child process: run `job`, stopping at `point`; report "done" (or the error) if it finishes."""
    try:
        qa.index.EMBED_BATCH = EMBED_BATCH
        progress = _arm(point, conn)
        if job == "build":
            build_index(docs, index, encoder=HashEncoder(), force=True, on_progress=progress)
        elif job == "update":
            Index.open(index).update(docs, encoder=HashEncoder(), on_progress=progress)
        else:
            from qa.library import Library

            retriever = Retriever.load(index, encoder=HashEncoder(), check_stale=False)
            Library(retriever, Path(docs)).add_files(files, on_progress=progress)
        conn.send(("done", None))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
