"""One contract for every store implementation (qa.stores): the embedded stores (plain files,
FAISS, bm25s) and the Milvus stores on the real engine (Milvus Lite, a .db file in tmp_path).

Keyword scores, idf and rankings must equal bm25s's (qa.lexical.LexicalIndex) on the same
passages; vector scores and rankings must equal an exact numpy search.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from qa.documents import read_documents
from qa.errors import IndexCorruptError
from qa.lexical import LexicalIndex, latin_terms, tokenize
from qa.manifest import StoreInfo
from qa.split import Passage, Source, collapse_duplicates, passage_id, sentence_units, split_document
from qa.stores import Stores, Unit
from qa.stores import local as local_store
from qa.stores import milvus as milvus_store
from qa.stores.local import Bm25KeywordStore, FaissVectorStore, PassageTable
from tests.conftest import ROOT, SEEDS

DIM = 16
TOL = 1e-4
EDGE_TEXTS = [
    "……！？",  # no words at all
    "COVID-19 疫苗：Pfizer-BioNTech 的 mRNA 疫苗与科兴疫苗。",
    "鍾南山院士說：「疫情防控要科學精準。」",
    "😷 口罩 😷 口罩 口罩，戴口罩！",
    "<p>钟南山</p> &amp; 张文宏 谈 Omicron",
]


def _passages() -> list[Passage]:
    docs = read_documents(SEEDS)
    seeds = collapse_duplicates([p for d in docs for p in split_document(d, 300)], 0.9)
    edge = [
        Passage(passage_id(t), t, (Source('边界/edge\'s "file".txt', "边界", i + 1, 0, len(t), i),))
        for i, t in enumerate(EDGE_TEXTS)
    ]
    paged = "第二页：食堂每桌最多坐四个人。"  # a PDF's passage: its citation names its page
    pdf = [Passage(passage_id(paged), paged, (Source("通知.pdf", "某单位防疫通知", 2, 0, len(paged), 0, 2),))]
    row = "姓名：张三，部门：后勤处，电话：13800001111；姓名：李四，部门：后勤处；"  # a workbook's rows
    sheet = Source(
        "名单.xlsx", "名单", 2, 0, len(row), 0, 3, (26,), ("工作表 人员名单 · 第3行", "工作表 人员名单 · 第4行")
    )
    return seeds + edge + [Passage(passage_id(row), row, (sheet,))] + pdf


PASSAGES = _passages()
QUERIES = [json.loads(line)["query"] for line in (ROOT / "tests" / "data" / "dev.jsonl").open(encoding="utf-8")]
QUERIES = ["钟南山 钟南山 疫情", "Zhong Nanshan Wuhan", "COVID-19 mRNA", "口罩", "完全不存在的词语组合", *QUERIES]


def _units_and_vectors(passages: list[Passage], seed: int = 0) -> tuple[list[Unit], np.ndarray]:
    units = [u for p in passages for u in sentence_units(p)]
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((len(units), DIM)).astype(np.float32)
    return units, v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclasses.dataclass
class Harness:
    """Empty stores of one implementation, and how to close them and open them again."""

    stores: Stores
    reopen_with: Callable[[Stores], Stores]

    def reopen(self) -> Stores:
        self.stores = self.reopen_with(self.stores)
        return self.stores


@pytest.fixture(scope="module")
def milvus_lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, StoreInfo]]:
    """One Milvus Lite file for the module (its collections are created once, emptied per test)."""
    if not milvus_store.available():
        pytest.skip("pymilvus is not installed: pip install -e '.[milvus]' (make test installs it)")
    folder = tmp_path_factory.mktemp("contract")
    info = milvus_store.store_info(str(folder / "contract.db"), None, folder)
    milvus_store.open_stores(folder, info, create=True, reset=True, dimension=DIM)
    try:
        yield folder, info
    finally:
        milvus_store.close(info, folder)


def _fill(stores: Stores, passages: list[Passage] = PASSAGES) -> tuple[list[Unit], np.ndarray]:
    units, vectors = _units_and_vectors(passages)
    assert stores.vectors is not None
    stores.vectors.upsert(units, vectors)
    stores.keywords.upsert(passages)
    stores.passages.upsert(passages)
    return units, vectors


def _exact(units: list[Unit], vectors: np.ndarray, q: np.ndarray, k: int) -> list[tuple[str, float]]:
    best: dict[str, float] = {}
    for u, s in zip(units, (vectors @ q).tolist(), strict=True):
        best[u.passage] = max(best.get(u.passage, -2.0), s)
    return sorted(best.items(), key=lambda kv: -kv[1])[:k]


def _same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]], every: dict[str, float]) -> None:
    """The same scores rank by rank, and at each rank a passage with that score: the same ids
    but where scores tie (bm25s picks which tied passages make the cut arbitrarily)."""
    assert len(got) == len(want) and len({i for i, _ in got}) == len(got)
    for (pid, score), (_, wanted) in zip(got, want, strict=True):
        assert score == pytest.approx(wanted, rel=TOL, abs=TOL)
        assert every.get(pid, 0.0) == pytest.approx(wanted, rel=TOL, abs=TOL)


def _reference(passages: list[Passage]) -> tuple[LexicalIndex, list[str]]:
    ids = sorted(p.id for p in passages)
    texts = {p.id: p.text for p in passages}
    return LexicalIndex.build([texts[i] for i in ids]), ids


def _check_keywords(harness: Harness, passages: list[Passage], queries: list[str]) -> None:
    store = harness.stores.keywords
    lexical, ids = _reference(passages)
    assert len(store) == len(passages)
    some = ids[::9] + ["0000000000000000"]
    for query in queries:
        tokens, latin = tokenize(query), latin_terms(query)
        scores = lexical.scores(tokens, latin)
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
        want = [(ids[i], float(scores[i])) for i in order[:20] if scores[i] > 0]
        _same_ranking(store.search(tokens, latin, 20), want, dict(zip(ids, scores.tolist(), strict=True)))
        got = store.scores(tokens, latin, some)
        assert set(got) == set(some)
        for pid in some:
            expected = float(scores[ids.index(pid)]) if pid in ids else 0.0
            assert got[pid] == pytest.approx(expected, rel=TOL, abs=TOL), (query, pid)
        assert np.allclose(store.idf(tokens), lexical.idf(tokens), rtol=TOL, atol=TOL), query


class StoreContract:
    """The contract every store implementation keeps. A backend's test class subclasses it and
    defines the `harness` fixture: empty stores of that implementation, and how to reopen them."""

    def test_passages_get_iter_and_neighbours(self, harness: Harness):
        store = harness.stores.passages
        assert len(store) == 0 and store.ids() == set() and store.get(["nope"]) == []
        store.upsert(PASSAGES)
        reference = PassageTable(PASSAGES)
        assert len(store) == len(PASSAGES) and store.ids() == {p.id for p in PASSAGES}
        ids = [PASSAGES[3].id, "0000000000000000", PASSAGES[0].id, PASSAGES[3].id]
        assert store.get(ids) == [PASSAGES[3], PASSAGES[0], PASSAGES[3]]  # order kept, unknown left out
        assert list(store) == list(reference)  # reading order
        for p in PASSAGES[::7] + PASSAGES[-3:]:
            for s in p.sources:
                assert store.neighbours(s) == reference.neighbours(s)
        sources = [s for p in PASSAGES for s in p.sources]
        assert store.neighbours_of(sources) == {(s.file, s.order): reference.neighbours(s) for s in sources}
        edge = PASSAGES[-4]
        assert edge.source.file == '边界/edge\'s "file".txt' and store.get([edge.id]) == [edge]
        paged = PASSAGES[-1]
        assert store.get([paged.id])[0].source.page == 2  # every store keeps the page
        rows = store.get([PASSAGES[-2].id])[0].source  # ... and a workbook's named rows
        assert (rows.place, rows.place_at(30)) == ("工作表 人员名单 · 第3–4行", "工作表 人员名单 · 第4行")

    def test_a_moved_passage_leaves_its_old_place(self, harness: Harness):
        store = harness.stores.passages
        store.upsert(PASSAGES)
        p = PASSAGES[10]
        moved = Passage(p.id, p.text, (dataclasses.replace(p.source, file="elsewhere.txt", order=0),))
        store.upsert([moved])
        reference = PassageTable(PASSAGES)
        reference.upsert([moved])
        assert store.get([p.id]) == [moved]
        for q in PASSAGES[8:13]:
            assert store.neighbours(q.source) == reference.neighbours(q.source)

    def test_vectors_search_and_unit_scores_are_exact_cosines(self, harness: Harness):
        store = harness.stores.vectors
        assert store is not None and store.dimension == DIM and len(store) == 0
        units, vectors = _units_and_vectors(PASSAGES)
        store.upsert(units, vectors)
        assert len(store) == len(units) and store.kind
        rng = np.random.default_rng(1)
        for _ in range(5):
            q = rng.standard_normal(DIM).astype(np.float32)
            q /= np.linalg.norm(q)
            got, want = store.search(q, 10), _exact(units, vectors, q, 10)
            assert [i for i, _ in got] == [i for i, _ in want]
            assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
            some = {p.id: p for p in PASSAGES[:40:3]}
            scores = store.unit_scores(q, list(some))
            assert set(scores) == set(some)
            for pid, scored in scores.items():
                assert scored[0].unit == Unit(pid, 0, len(some[pid].text))  # the passage whole first
                want = {u: float(v @ q) for u, v in zip(units, vectors, strict=True) if u.passage == pid}
                assert {s.unit for s in scored} == set(want)
                assert all(abs(s.score - want[s.unit]) < 1e-5 for s in scored)

    def test_vector_upsert_replaces_a_passages_units_and_delete_removes_them(self, harness: Harness):
        store = harness.stores.vectors
        assert store is not None
        units, vectors = _units_and_vectors(PASSAGES)
        store.upsert(units, vectors)
        target = PASSAGES[5]
        new = np.zeros((1, DIM), np.float32)
        new[0, 0] = 1.0
        store.upsert([Unit(target.id, 0, len(target.text))], new)  # now one unit only
        n_old = sum(u.passage == target.id for u in units)
        assert len(store) == len(units) - n_old + 1
        assert store.search(new[0], 1) == [(target.id, pytest.approx(1.0, abs=1e-5))]
        store.delete([target.id, "0000000000000000"])
        assert len(store) == len(units) - n_old
        assert store.unit_scores(new[0], [target.id]) == {}
        assert target.id not in dict(store.search(new[0], 50))

    def test_keyword_search_scores_and_idf_equal_bm25s(self, harness: Harness):
        harness.stores.keywords.upsert(PASSAGES)
        _check_keywords(harness, PASSAGES, QUERIES[::2])
        assert harness.stores.keywords.search([], [], 5) == []
        assert harness.stores.keywords.idf([]).shape == (0,)

    def test_keyword_statistics_follow_upserts_and_deletes(self, harness: Harness):
        store = harness.stores.keywords
        store.upsert(PASSAGES)
        store.idf(tokenize("钟南山 疫苗 上海 核酸 筛查"))  # a store that caches idf must drop it on the writes below
        gone = PASSAGES[::4]
        store.delete([p.id for p in gone])
        extra = [
            Passage(passage_id(t), t, (Source("extra.txt", "extra", i + 1, 0, len(t), i),))
            for i, t in enumerate(["钟南山院士再谈疫苗接种。", "上海核酸筛查又一轮。", "钟南山 钟南山 钟南山"])
        ]
        store.upsert(extra + PASSAGES[1:3])  # new ones and a repeated upsert of unchanged ones
        kept = [p for p in PASSAGES if p not in gone] + extra
        _check_keywords(harness, kept, QUERIES[1::6] + ["钟南山 疫苗", "上海 核酸 筛查", "Zhong Nanshan"])

    def test_deleting_a_passage_removes_its_units_and_keywords(self, harness: Harness):
        stores = harness.stores
        units, vectors = _fill(stores)
        assert stores.vectors is not None
        target = PASSAGES[20]
        tokens = tokenize(target.text)
        assert target.id in dict(stores.keywords.search(tokens, [], 50))
        row = next(i for i, u in enumerate(units) if u.passage == target.id)
        assert stores.vectors.search(vectors[row], 1)[0][0] == target.id
        stores.vectors.delete([target.id])
        stores.keywords.delete([target.id])
        stores.passages.delete([target.id])
        assert stores.passages.get([target.id]) == [] and len(stores.passages) == len(PASSAGES) - 1
        assert len(stores.vectors) == len(units) - sum(u.passage == target.id for u in units)
        assert len(stores.keywords) == len(PASSAGES) - 1
        assert target.id not in dict(stores.keywords.search(tokens, [], 50))
        assert stores.keywords.scores(tokens, [], [target.id]) == {target.id: 0.0}
        assert target.id not in dict(stores.vectors.search(vectors[row], 50))
        assert stores.vectors.unit_scores(vectors[row], [target.id]) == {}
        for s in target.sources:
            before = PassageTable(PASSAGES).neighbours(dataclasses.replace(s, order=s.order + 1))[0]
            assert before is not None and before.id == target.id
            assert stores.passages.neighbours(dataclasses.replace(s, order=s.order + 1))[0] is None

    def test_reopen_after_close_gives_the_same_answers(self, harness: Harness):
        _, vectors = _fill(harness.stores)
        q = vectors[7]
        tokens, latin = tokenize("钟南山 疫情 防控"), latin_terms("Zhong Nanshan")
        before = (
            harness.stores.vectors.search(q, 10) if harness.stores.vectors else None,
            harness.stores.keywords.search(tokens, latin, 10),
            list(harness.stores.passages)[:5],
            harness.stores.keywords.idf(tokens).tolist(),
        )
        stores = harness.reopen()
        assert stores.vectors is not None and len(stores.vectors) == len(_units_and_vectors(PASSAGES)[0])
        after = (stores.vectors.search(q, 10), stores.keywords.search(tokens, latin, 10), list(stores.passages)[:5],
                 stores.keywords.idf(tokens).tolist())  # fmt: skip
        assert before[0] is not None and [i for i, _ in after[0]] == [i for i, _ in before[0]]
        assert np.allclose([s for _, s in after[0]], [s for _, s in before[0]], atol=1e-6)
        assert after[1:] == before[1:]


# ---------------------------------------------------------------- the backends


class TestLocalStores(StoreContract):
    """The embedded stores: plain files, FAISS and bm25s, saved to a folder and loaded back."""

    @pytest.fixture()
    def harness(self, tmp_path: Path) -> Harness:
        table = PassageTable()
        keywords = Bm25KeywordStore.build([])
        keywords.attach(table)
        saves = iter(range(1, 100))

        def reopen(stores: Stores) -> Stores:
            assert isinstance(stores.passages, PassageTable) and isinstance(stores.keywords, Bm25KeywordStore)
            assert isinstance(stores.vectors, FaissVectorStore)
            folder = tmp_path / f"saved{next(saves)}"
            folder.mkdir()
            stores.passages.save(folder)
            stores.keywords.save(folder)
            stores.vectors.save(folder)
            table = PassageTable.load(folder)
            keywords = Bm25KeywordStore.load(folder)
            keywords.attach(table)
            return Stores(table, keywords, FaissVectorStore.load(folder, dimension=DIM, count=len(stores.vectors)))

        return Harness(Stores(table, keywords, FaissVectorStore.empty(DIM)), reopen)


class TestLocalStoresOnDisk(TestLocalStores):
    """The same, with every loaded passage table kept on disk (PassageFile), as a large one is."""

    @pytest.fixture(autouse=True)
    def _on_disk(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(local_store, "LAZY_MIN_PASSAGES", 0)

    def test_a_table_on_disk_finds_what_the_one_in_memory_finds(self, harness: Harness):
        _fill(harness.stores)
        table = harness.reopen().passages
        assert isinstance(table, PassageTable) and table.on_disk
        reference = PassageTable(PASSAGES)
        assert len(table) == len(PASSAGES) and table.ids() == reference.ids()
        assert table.get([p.id for p in PASSAGES[::-3]]) == PASSAGES[::-3] and table.on_disk
        assert table.get(["0000000000000000", "非ascii的id"]) == []
        assert list(table) == list(reference)  # reading order
        sources = [s for p in PASSAGES for s in p.sources]
        assert table.neighbours_of(sources) == reference.neighbours_of(sources)
        assert table.on_disk
        assert table.neighbours(Source("nowhere.txt", "t", 1, 0, 1, 0)) == (None, None)
        table.delete([PASSAGES[0].id])  # the first change reads it into memory
        assert not table.on_disk and len(table) == len(PASSAGES) - 1
        again = harness.reopen().passages  # the table just changed, saved and opened again
        assert again.on_disk and again.get([p.id for p in PASSAGES]) == PASSAGES[1:]
        assert not again.on_disk  # a fetch of most of it read it whole, once


def test_a_loaded_vector_store_reads_unit_rows_from_its_file(tmp_path: Path):
    """Loaded, the unit vectors are read from vectors.npy a passage's run at a time (RowReader),
    not through the mapping; the scores are those of the store in memory, and the rows come from
    the file the store opened, whatever replaces it later."""
    units, vectors = _units_and_vectors(PASSAGES)
    order = np.random.default_rng(3).permutation(len(units))  # units out of passage order too
    for picked in (np.arange(len(units)), order):
        folder = tmp_path / f"v{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        store = FaissVectorStore.empty(DIM)
        store.upsert([units[i] for i in picked], vectors[picked])
        store.save(folder)
        loaded = FaissVectorStore.load(folder, dimension=DIM, count=len(units))
        ids = [p.id for p in PASSAGES]
        for q in vectors[:: len(vectors) // 5]:
            assert loaded.unit_scores(q, ids) == store.unit_scores(q, ids)
        (folder / "vectors.npy").rename(folder / "old.npy")
        np.save(folder / "vectors.npy", np.zeros_like(vectors))  # a new file in its place
        assert loaded.unit_scores(vectors[0], ids) == store.unit_scores(vectors[0], ids)


def test_passage_arrays_that_do_not_match_the_file_are_named(tmp_path: Path):
    """The arrays beside passages.jsonl are checked against it (and the manifest's checksums
    against both); an index written before them still opens, parsed whole."""
    PassageTable(PASSAGES).save(tmp_path)
    offsets = np.load(tmp_path / local_store.PassageFile.OFFSETS)
    np.save(tmp_path / local_store.PassageFile.OFFSETS, offsets[:-1])
    with pytest.raises(IndexCorruptError, match=r"passages.jsonl cannot be read.*do not match.*qa index build"):
        PassageTable.load(tmp_path)
    for name in (local_store.PassageFile.OFFSETS, local_store.PassageFile.IDS, local_store.PassageFile.PLACES):
        (tmp_path / name).unlink(missing_ok=True)
    old = PassageTable.load(tmp_path)
    assert not old.on_disk and list(old) == list(PassageTable(PASSAGES))


class TestMilvusStores(StoreContract):
    """Milvus on the real engine (Milvus Lite): the collections closed and opened again."""

    @pytest.fixture()
    def harness(self, milvus_lite: tuple[Path, StoreInfo]) -> Harness:
        folder, info = milvus_lite
        stores = milvus_store.open_stores(folder, info, create=True, dimension=DIM)
        conn, names = milvus_store.connect(info, folder), milvus_store._names(str(info.collection))
        for part, key in [("passages", "passage_id"), ("places", "place"), ("units", "passage_id"),
                          ("keywords", "passage_id")]:  # fmt: skip
            conn.write("delete", names[part], filter=f'{key} != ""')

        def reopen(stores: Stores) -> Stores:
            assert stores.vectors is not None
            again = dataclasses.replace(info, dimension=DIM, vectors=len(stores.vectors), index=stores.vectors.kind)
            milvus_store.close(again, folder)
            return milvus_store.open_stores(folder, again)

        return Harness(stores, reopen)
