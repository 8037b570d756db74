"""Crash safety: a build, an update or an upload killed with SIGKILL anywhere leaves the complete
old index or the complete new one, and the next build succeeds; concurrent builds serialize.

Each job runs in a child process (tests/crash_child.py, forked from a server that has already
imported qa, so a child starts in milliseconds) that stops at a kill point and is SIGKILLed
there. After each kill `Index.open` must succeed (it verifies every checksum and the counts
against the manifest), the index must hold exactly the old or the new documents, and a search
must work; then an update brings it to the new documents and leaves no temporary folder behind.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from qa.errors import IndexMissingError
from qa.index import Index, build_index
from qa.search import Retriever
from tests.conftest import SEEDS
from tests.crash_child import Job, KillPoint, run
from tests.fakes import HashEncoder

WAIT = 120  # seconds a child may take to reach its kill point or to finish

E = KillPoint  # short: the kill points read as a table
BUILD_POINTS = [
    E("event", "read", 1),  # reading the documents
    E("event", "read", 5),
    E("event", "split", 3),  # splitting into passages
    E("event", "model", 2),  # the model is loaded
    E("event", "embed", 1),  # embedding: before the first batch
    E("event", "embed", 3),  # … in the middle
    E("event", "keywords", 1),  # keyword index
    E("event", "write", 1),  # writing starts: nothing in the temporary folder yet
    E("call", "np.save", 1, "after"),  # some store files written
    E("call", "faiss.write_index", 1, "before"),
    E("call", "os.fsync", 2, "after"),  # files written, not all synced
    E("call", "shutil.rmtree", 1, "after"),  # the old index removed, the build about to return
    E("call", "os.replace", 1, "after"),  # old index moved aside, new one not yet in place
    E("call", "os.replace", 2, "after"),  # new index in place, old one not yet removed
]
UPDATE_POINTS = [
    E("event", "read", 2),
    E("event", "split", 5),
    E("event", "embed", 2),  # only the new and changed passages
    E("event", "keywords", 2),
    E("call", "np.save", 3, "before"),
    E("call", "os.fsync", 1, "before"),
    E("call", "os.replace", 1, "after"),
    E("event", "write", 2),  # committed, the build returns
]
UPLOAD_POINTS = [
    E("call", "os.fsync", 1, "before"),  # the uploaded bytes written to a hidden file, not synced
    E("call", "os.link", 1, "after"),  # the upload stored under its name, the index not updated yet
    E("event", "embed", 1),
    E("event", "write", 1),
    E("call", "os.replace", 1, "after"),
    E("event", "load", 1),  # the new index is on disk, the app is loading it
]


# ---------------------------------------------------------------- corpora


def _trim(text: str, limit: int = 1500) -> str:
    cut = text.rfind("\n", 0, limit)
    return text[: cut if cut > 0 else limit]


def _seed_texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(SEEDS.iterdir())]


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def old_corpus() -> dict[str, str]:
    return {f"{'abcde'[i]}.txt": _trim(t) for i, t in enumerate(_seed_texts())}


def new_corpus() -> dict[str, str]:
    """The old documents with one changed, one deleted and one added."""
    docs = old_corpus()
    docs["b.txt"] += "\n\n补充说明：本文件在更新后多了这一段，关于蓝鲸牌保温杯的容量。\n"
    del docs["c.txt"]
    docs["f.txt"] = _trim(_seed_texts()[3][5000:])
    return docs


UPLOAD = "# 长颈鹿笔记\n\n紫色长颈鹿每天傍晚在图书馆里阅读量子力学教材。\n"


def digests(files: dict[str, str]) -> dict[str, str]:
    return {name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, text in files.items()}


def indexed(index: Path) -> dict[str, str] | None:
    """The documents of the complete index in `index` (None when there is none), after checking
    that it is whole: checksums (Index.open), counts against the manifest, a search."""
    try:
        idx = Index.open(index)
    except IndexMissingError:
        return None
    m = idx.manifest
    assert len(idx.stores.passages) == m.passage_count == len(idx.passages)
    assert idx.stores.vectors is not None and m.store is not None
    assert len(idx.stores.vectors) == m.store.vectors > 0
    assert Retriever(idx, HashEncoder(), refresh=False).search("疫情防控").hits
    return {d.file: d.sha256 for d in m.documents}


def leftovers(index: Path) -> list[str]:
    return sorted(p.name for p in index.parent.glob(f".{index.name}.*") if not p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def old_index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash-old")
    index = root / "index"
    build_index(_write(root / "docs", old_corpus()), index, encoder=HashEncoder())
    return index


@pytest.fixture(scope="module")
def forks():
    """Children forked from a server that imported qa, the test encoder and the chat app once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.crash_child", "ui.app"])
    return ctx


class Child:
    """A job in a forked child, and the pipe it reports on."""

    def __init__(self, forks, job: Job, docs: Path, index: Path, point: KillPoint | None = None,
                 files: Sequence[Path] = ()) -> None:  # fmt: skip
        self.conn, child_end = forks.Pipe()
        self.process = forks.Process(
            target=run, args=(job, str(docs), str(index), [str(f) for f in files], point, child_end), daemon=True
        )
        self.process.start()
        child_end.close()

    def message(self, timeout: float = WAIT) -> tuple[str, str | None]:
        conn: Connection = self.conn
        if not conn.poll(timeout):
            self.kill()
            raise AssertionError(f"the child said nothing in {timeout} s")
        return conn.recv()

    def kill(self) -> None:
        self.process.kill()  # SIGKILL
        self.process.join(WAIT)


def _killed_at(forks, job: Job, point: KillPoint, root: Path, old_index: Path) -> None:
    """Run `job` from the old index until `point`, SIGKILL it, and check what it left."""
    index = root / "index"
    shutil.copytree(old_index, index)
    docs = _write(root / "docs", old_corpus() if job == "upload" else new_corpus())
    upload = _write(root / "incoming", {"长颈鹿笔记.md": UPLOAD}) / "长颈鹿笔记.md"
    old = digests(old_corpus())
    new = {**old, "长颈鹿笔记.md": digests({"x": UPLOAD})["x"]} if job == "upload" else digests(new_corpus())

    child = Child(forks, job, docs, index, point, files=[upload])
    said, detail = child.message()
    assert said == "stopped", f"{job} never reached kill point {point}: {said} {detail}"
    child.kill()

    found = indexed(index)
    assert found in (old, new), f"{job} killed at {point}: the index holds neither the old nor the new documents"
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in docs.iterdir() if not p.name.startswith(".")}
    assert on_disk in (old, new), f"{job} killed at {point}: a partial document in the folder"
    build_index(docs, index, encoder=HashEncoder())  # the next update succeeds …
    assert indexed(index) == on_disk  # … and the index follows the folder
    assert leftovers(index) == [], f"{job} killed at {point} left {leftovers(index)}"


KILLS = [("build", p) for p in BUILD_POINTS] + [("update", p) for p in UPDATE_POINTS]
KILLS += [("upload", p) for p in UPLOAD_POINTS]


def test_there_are_enough_kill_points_in_every_phase():
    assert len(KILLS) >= 20
    stages = {p.name for _, p in KILLS if p.kind == "event"}
    assert stages >= {"read", "split", "model", "embed", "keywords", "write", "load"}
    assert {p.name for _, p in KILLS if p.kind == "call"} >= {"np.save", "os.fsync", "os.replace", "os.link"}


def test_a_kill_anywhere_leaves_the_old_or_the_new_index(forks, old_index, tmp_path):
    failures: list[str] = []

    def one(n: int) -> None:
        job, point = KILLS[n]
        try:
            _killed_at(forks, job, point, tmp_path / f"{n:02d}-{job}-{point}", old_index)
        except AssertionError as exc:
            failures.append(f"{job} {point}: {exc}")

    with ThreadPoolExecutor(2) as pool:  # two at a time: each child waits on the other's disk and CPU
        list(pool.map(one, range(len(KILLS))))
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- builds at once


def test_two_builds_started_at_once_both_finish_one_after_the_other(forks, old_index, tmp_path):
    index = shutil.copytree(old_index, tmp_path / "index")
    first = _write(tmp_path / "first", new_corpus())
    second = _write(
        tmp_path / "second", {**old_corpus(), "g.txt": "第二次构建独有的文档：沙漠里的仙人掌会在月圆之夜开花。\n"}
    )
    generation = Index.open(index).manifest.generation
    children = [Child(forks, "build", first, index), Child(forks, "build", second, index)]
    assert [c.message() for c in children] == [("done", None), ("done", None)]
    assert indexed(index) in (digests(new_corpus()), digests({p.name: p.read_text("utf-8") for p in second.iterdir()}))
    assert Index.open(index).manifest.generation == generation + 2
    assert leftovers(index) == []


def test_a_build_killed_while_holding_the_lock_does_not_block_the_next(forks, old_index, tmp_path):
    index = shutil.copytree(old_index, tmp_path / "index")
    docs = _write(tmp_path / "docs", new_corpus())
    stuck = Child(forks, "build", docs, index, E("event", "embed", 2))
    assert stuck.message() == ("stopped", "embed#2")
    waiting = Child(forks, "update", docs, index)
    assert not waiting.conn.poll(1.0)  # it waits for the lock …
    stuck.kill()
    assert waiting.message() == ("done", None)  # … and gets it when the holder dies
    assert indexed(index) == digests(new_corpus())


def test_a_reader_never_undoes_a_swap_under_way(forks, old_index, tmp_path):
    """Regression: Index.open used to 'recover' an index a running build had just moved aside,
    so the build's second rename failed (the update was lost) and readers raced it."""
    index = shutil.copytree(old_index, tmp_path / "index")
    docs = _write(tmp_path / "docs", new_corpus())
    child = Child(forks, "update", docs, index, E("call", "os.replace", 1, "after"))
    assert child.message() == ("stopped", "os.replace#1-after")
    assert not index.exists()  # between the two renames
    seen: list[dict[str, str] | None] = []
    reader = threading.Thread(target=lambda: seen.append(indexed(index)), daemon=True)
    reader.start()
    reader.join(1.0)
    assert reader.is_alive()  # it waits for the build's lock instead of moving the old index back
    child.conn.send("resume")
    assert child.message() == ("done", None)
    reader.join(WAIT)
    assert seen == [digests(new_corpus())]
    assert leftovers(index) == []
