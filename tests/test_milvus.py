"""The index on Milvus (qa.stores.milvus) against the real engine, Milvus Lite 2.5.1: the same
answers as FAISS, incremental updates, repair after a crash, the CLI, and two chat servers
sharing one knowledge base through a Milvus Lite server on 127.0.0.1.

The store contract itself (keywords equal to bm25s, exact cosines, neighbours) is in
tests/test_stores.py; this file tests the index built on it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qa.errors import IndexCorruptError, QAError, StoreError
from qa.index import Index, build_index, read_manifest, stale_documents
from qa.manifest import MANIFEST
from qa.search import Retriever
from qa.split import Passage, Source
from qa.stores import milvus
from tests.conftest import ROOT, SEEDS, free_port
from tests.fakes import HashEncoder

pytestmark = pytest.mark.skipif(
    not milvus.available(), reason="pymilvus is not installed: pip install -e '.[milvus]' (make test installs it)"
)

DEV = [json.loads(line) for line in (ROOT / "tests" / "data" / "dev.jsonl").open(encoding="utf-8")]
NEW_DOC = "蓝鲸牌保温杯说明书\n\n蓝鲸牌保温杯的容量是七百毫升，可以保温十二个小时，杯盖可以拆洗。\n"
NEW_QUESTION = "蓝鲸牌保温杯的容量是多少"


@pytest.fixture(scope="module")
def milvus_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The seed corpus indexed on Milvus Lite (INDEX/milvus.db) with the test hash encoder."""
    folder = tmp_path_factory.mktemp("milvus") / "index"
    build_index(SEEDS, folder, encoder=HashEncoder(), store="milvus")
    yield folder
    milvus.close_all()


# ---------------------------------------------------------------- the same index


def test_the_manifest_names_the_store_and_a_copy_lives_in_milvus(milvus_index: Path):
    manifest = read_manifest(milvus_index)
    store = manifest.store
    assert store is not None and store.kind == "milvus" and store.uri == "milvus.db"
    assert store.collection == "qa_index" and store.index == "milvus-flat-ip" and store.keywords == "milvus-bm25"
    assert store.vectors > 1000 and store.dimension == 64 and manifest.files == {}
    assert sorted(p.name for p in milvus_index.iterdir() if not p.name.startswith(".")) == [
        "manifest.json",
        "milvus.db",
    ]
    assert milvus.load_manifest(store, milvus_index) == manifest
    assert milvus.generation(store, milvus_index) == manifest.generation


def test_retriever_gives_the_same_answers_as_faiss(hash_index: Path, milvus_index: Path):
    faiss = Retriever.load(hash_index, encoder=HashEncoder())
    on_milvus = Retriever.load(milvus_index, encoder=HashEncoder())
    assert faiss.manifest.passage_count == on_milvus.manifest.passage_count
    for q in DEV:
        a, b = faiss.search(q["query"], k=5), on_milvus.search(q["query"], k=5)
        assert [h.id for h in b.hits] == [h.id for h in a.hits], q["query"]
        assert b.verdict == a.verdict, q["query"]
        assert [round(h.confidence, 4) for h in b.hits] == [round(h.confidence, 4) for h in a.hits], q["query"]
        assert [h.evidence for h in b.hits] == [h.evidence for h in a.hits]
    for mode in ("dense", "lexical"):
        for q in DEV[::10]:
            a, b = faiss.search(q["query"], k=5, mode=mode), on_milvus.search(q["query"], k=5, mode=mode)
            assert [h.id for h in b.hits] == [h.id for h in a.hits], (mode, q["query"])
    top = on_milvus.search("上海全市核酸筛查采样了多少人").hits[0]
    assert on_milvus.neighbours(top.sources[0]) == faiss.neighbours(top.sources[0])


# ---------------------------------------------------------------- updates


def test_an_update_embeds_only_new_passages(seeds_copy: Path, tmp_path: Path):
    folder = tmp_path / "index"
    enc = HashEncoder()
    first = build_index(seeds_copy, folder, encoder=enc, store="milvus")
    assert build_index(seeds_copy, folder, encoder=enc).up_to_date
    doc = seeds_copy / "004_a87b6fb253f9ae0b.txt"
    doc.write_text(
        doc.read_text(encoding="utf-8") + "\n<p>新增一段：疫苗加强针接种工作稳步推进。</p>\n", encoding="utf-8"
    )
    (seeds_copy / "001_90bd3d4f88e6e1ee.txt").unlink()
    calls = enc.calls
    report = build_index(seeds_copy, folder, encoder=enc)
    assert report.full_rebuild_reason is None and report.embedded == 1 == enc.calls - calls - 1  # + the probe
    index = Index.open(folder)
    assert index.manifest.generation == 2 and index.manifest.store is not None
    assert index.manifest.store.kind == "milvus" and stale_documents(index.manifest) == []
    assert index.stores.vectors is not None and len(index.stores.vectors) == index.manifest.store.vectors
    assert len(index.stores.passages) == index.manifest.passage_count < first.passages + 1
    assert not any(s.file == "001_90bd3d4f88e6e1ee.txt" for p in index.passages for s in p.sources)
    result = Retriever(index, enc).search("疫苗加强针接种工作")
    assert "疫苗加强针" in result.hits[0].text
    milvus.close_all()


def test_an_interrupted_update_is_repaired_by_the_next_build(seeds_copy: Path, tmp_path: Path, monkeypatch):
    folder = tmp_path / "index"
    enc = HashEncoder()
    build_index(seeds_copy, folder, encoder=enc, store="milvus")
    (seeds_copy / "new.txt").write_text(NEW_DOC, encoding="utf-8")
    (seeds_copy / "002_0dfd8f1c4a8d4d9f.txt").unlink(missing_ok=True)

    def crash(self, passages):
        raise OSError("the machine went down")

    monkeypatch.setattr(milvus.MilvusPassageStore, "upsert", crash)
    with pytest.raises(OSError, match="went down"):
        build_index(seeds_copy, folder, encoder=enc)
    monkeypatch.undo()
    old = Index.open(folder)  # the previous manifest, over collections that hold units of passages not added
    assert old.manifest.generation == 1
    with pytest.raises(IndexCorruptError, match="interrupted"):
        milvus.verify(folder, old.manifest)
    report = build_index(seeds_copy, folder, encoder=enc)
    assert not report.up_to_date and report.full_rebuild_reason is None
    index = Index.open(folder)
    milvus.verify(folder, index.manifest)
    assert index.stores.vectors is not None and len(index.stores.vectors) == index.manifest.store.vectors  # type: ignore[union-attr]
    assert "七百毫升" in Retriever(index, enc).search(NEW_QUESTION).hits[0].text
    milvus.close_all()


def test_another_index_folder_on_the_same_store_sees_updates(seeds_copy: Path, tmp_path: Path):
    """Two index folders (two servers) on one store: an update through one reaches the other's
    Retriever at its next refresh, through the manifest kept in Milvus."""
    a, b = tmp_path / "a", tmp_path / "b"
    enc = HashEncoder()
    build_index(seeds_copy, a, encoder=enc, store="milvus", uri=str(tmp_path / "shared.db"))
    assert read_manifest(a).store.uri == str(tmp_path / "shared.db")  # type: ignore[union-attr]
    shutil.copytree(a, b)
    other = Retriever.load(b, encoder=HashEncoder())
    assert NEW_DOC[:5] not in other.search(NEW_QUESTION).hits[0].text
    (seeds_copy / "new.txt").write_text(NEW_DOC, encoding="utf-8")
    build_index(seeds_copy, a, encoder=enc)
    assert other.refresh(force=True)
    assert other.manifest.generation == 2 and "new.txt" in {d["file"] for d in other.documents()}
    assert "七百毫升" in other.search(NEW_QUESTION).hits[0].text
    assert json.loads((b / MANIFEST).read_text(encoding="utf-8"))["generation"] == 1  # b's file is a stale copy
    assert read_manifest(b).generation == 2  # and Milvus's newer one wins
    milvus.close_all()


def test_a_manifest_over_60_kb_is_kept_in_chunks(tmp_path: Path):
    folder = tmp_path / "index"
    build_index(SEEDS, folder, dense=False, store="milvus")
    manifest = read_manifest(folder)
    big = dataclasses.replace(
        manifest, generation=manifest.generation + 1,
        documents=tuple(dataclasses.replace(manifest.documents[0], file=f"文档{i}.txt", title="标题" * 20)
                        for i in range(2000)),
    )  # fmt: skip
    assert len(big.to_json().encode()) > 4 * milvus.MANIFEST_CHUNK_BYTES
    assert milvus.load_manifest(manifest.store, folder) == manifest  # type: ignore[arg-type]
    milvus.save_manifest(folder, big)
    assert milvus.load_manifest(manifest.store, folder) == big  # type: ignore[arg-type]
    assert milvus.load_manifest(manifest.store, folder, newer_than=big.generation) is None  # type: ignore[arg-type]
    chunks = milvus._chunks("中文" * 50_000, milvus.MANIFEST_CHUNK_BYTES)
    assert "".join(chunks) == "中文" * 50_000 and max(len(c.encode()) for c in chunks) <= milvus.MANIFEST_CHUNK_BYTES
    milvus.close_all()


# ---------------------------------------------------------------- limits and errors


def test_text_over_milvus_limits_is_refused_with_the_fix():
    source = Source("big.txt", "big", 1, 0, 21846, 0)
    with pytest.raises(StoreError, match=r"65535.*--max-chars"):
        milvus._passage_row(Passage("0" * 16, "中" * 21846, (source,)))  # 65,538 bytes
    assert milvus._passage_row(Passage("0" * 16, "中" * 21845, (source,)))["text"]  # 65,535 bytes fit
    many = tuple(dataclasses.replace(source, file=f"copy-{i}-{'x' * 40}.txt", order=i) for i in range(1000))
    with pytest.raises(StoreError, match="JSON"):
        milvus._passage_row(Passage("0" * 16, "中", many))


def test_without_pymilvus_the_error_names_the_install(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(QAError, match=r"pip install -e '\.\[milvus\]'"):
        build_index(SEEDS, tmp_path / "index", dense=False, store="milvus")
    assert not milvus.available()
    code = "import sys, qa.index, qa.search, qa.stores.milvus; print('pymilvus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr  # qa imports without pymilvus


def test_a_token_comes_from_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("QA_TEST_MILVUS_TOKEN", "root:s3cret")
    info = milvus.store_info("http://127.0.0.1:9", "QA_TEST_MILVUS_TOKEN", tmp_path)
    assert info.token_env == "QA_TEST_MILVUS_TOKEN" and "s3cret" not in json.dumps(dataclasses.asdict(info))
    monkeypatch.delenv("QA_TEST_MILVUS_TOKEN", raising=False)
    with pytest.raises(StoreError, match=r"\$QA_TEST_MILVUS_TOKEN.*not set"):
        milvus.connect(info, tmp_path)
    with pytest.raises(QAError, match="environment variable name"):
        milvus.store_info("http://127.0.0.1:9", "not a name", tmp_path)
    with pytest.raises(QAError, match="36"):
        milvus.store_info(str(tmp_path / ("x" * 40 + ".db")), None, tmp_path)


def test_a_lite_file_serves_one_process(milvus_index: Path):
    Index.open(milvus_index)  # this process holds the file now
    code = f"from qa.index import Index; Index.open({str(milvus_index)!r})"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode != 0
    assert "in use by process" in out.stderr and "one process at a time" in out.stderr


# ---------------------------------------------------------------- the CLI


@pytest.fixture()
def hash_model(monkeypatch):
    """`qa` commands load the test hash encoder instead of the model."""
    import qa.index
    import qa.search

    monkeypatch.setattr(qa.index, "make_encoder", lambda *a, **k: HashEncoder())
    monkeypatch.setattr(qa.search, "make_encoder", lambda *a, **k: HashEncoder())
    monkeypatch.setenv("QA_MODEL", HashEncoder().name)


def test_cli_build_ask_eval_and_info(tmp_path: Path, hash_model, capsys):
    from qa.cli import main

    folder = str(tmp_path / "index")
    assert main(["index", "build", "--docs", str(SEEDS), "--index", folder, "--store", "milvus", "-q"]) == 0
    assert "5 documents" in capsys.readouterr().out
    assert main(["index", "build", "--docs", str(SEEDS), "--index", folder, "--store", "milvus", "-q"]) == 0
    assert "up to date" in capsys.readouterr().out  # --store milvus again keeps the store
    assert main(["ask", "上海全市核酸筛查采样了多少人", "--json", "--index", folder]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["hits"] and "2566.5万人" in answer["hits"][0]["text"]
    assert (
        main(["eval", str(ROOT / "tests" / "data" / "dev.jsonl"), "--index", folder, "--mode", "hybrid", "--json"]) == 0
    )
    metrics = json.loads(capsys.readouterr().out)["hybrid"]["metrics"]
    assert metrics["hit@5"] > 0.5
    assert main(["index", "info", "--index", folder]) == 0
    out = capsys.readouterr().out
    assert "in milvus (milvus-flat-ip) at milvus.db, collections qa_index_*" in out and "up to date" in out
    milvus.close_all()


# ---------------------------------------------------------------- two servers, one knowledge base


@pytest.fixture()
def lite_server(tmp_path: Path) -> Iterator[str]:
    """Milvus Lite serving a file on a free 127.0.0.1 port; always stopped."""
    with milvus.serve_lite(tmp_path / "kb.db", free_port()) as uri:
        yield uri
    milvus.close_all()


def _start_chat(docs: Path, index: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.serve_hash", "--docs", str(docs), "--index", str(index),
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}/"


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, seconds: float = 240.0) -> Any:
    from gradio_client import Client

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the chat server exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        if "Ready in" in log.read_text(errors="replace"):
            return Client(url, verbose=False, download_files=False)
        time.sleep(0.5)
    pytest.fail(f"the chat server did not start in {seconds} s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_two_chat_servers_share_one_knowledge_base(lite_server: str, seeds_copy: Path, tmp_path: Path):
    """Two `qa serve` processes (python -m ui, with the hash encoder) on one Milvus server: a
    document uploaded through one is found by the other without a restart, and a document
    removed through the other is gone from the first."""
    from gradio_client import handle_file

    a, b = tmp_path / "a", tmp_path / "b"
    build_index(seeds_copy, a, encoder=HashEncoder(), store="milvus", uri=lite_server)
    shutil.copytree(a, b)  # the second server's folder: the same manifest, pointing at the same server
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pa, url_a = _start_chat(seeds_copy, a, tmp_path / "a.log")
        procs.append(pa)
        pb, url_b = _start_chat(seeds_copy, b, tmp_path / "b.log")
        procs.append(pb)
        client_a, client_b = _wait_ready(pa, url_a, tmp_path / "a.log"), _wait_ready(pb, url_b, tmp_path / "b.log")
        for client in (client_a, client_b):
            result = client.predict("上海全市核酸筛查采样了多少人", api_name="/search")
            assert "2566.5万人" in result["hits"][0]["text"]
        assert "七百毫升" not in client_b.predict(NEW_QUESTION, api_name="/search")["hits"][0]["text"]
        note = tmp_path / "保温杯.txt"
        note.write_text(NEW_DOC, encoding="utf-8")
        status, *_ = client_a.predict([handle_file(str(note))], api_name="/upload")
        assert "已加入：保温杯.txt" in status and "索引已更新" in status
        deadline, found = time.monotonic() + 10.0, None
        while time.monotonic() < deadline:
            result = client_b.predict(NEW_QUESTION, api_name="/search")
            if "七百毫升" in result["hits"][0]["text"]:
                found = result
                break
            time.sleep(0.5)
        assert found is not None, "the second server did not find the upload within 10 s"
        assert found["hits"][0]["sources"][0]["file"] == "保温杯.txt"
        status, *_ = client_b.predict("保温杯.txt", api_name="/remove")  # and back: removed through the other
        assert "已删除：保温杯.txt" in status
        deadline, gone = time.monotonic() + 10.0, False
        while time.monotonic() < deadline and not gone:
            gone = "七百毫升" not in client_a.predict(NEW_QUESTION, api_name="/search")["hits"][0]["text"]
            time.sleep(0 if gone else 0.5)
        assert gone, "the first server still found the removed document after 10 s"
    finally:
        for proc in procs:
            _stop(proc)
