"""Hostile and odd input, through the Python API, the CLI and the upload path: every question
gets an answer or a QueryError, every document is indexed or reported, never a crash, and
nothing already indexed is lost. Lexical-only indexes and the fake encoder keep this fast."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from qa.cli import main
from qa.documents import parse_document, read_documents
from qa.errors import DocumentsError, QueryError
from qa.index import build_index, load_index, read_manifest, stale_documents
from qa.search import MAX_QUERY_CHARS, Retriever, SearchResult
from tests.conftest import SEEDS
from tests.fakes import HashEncoder

SMALL_SEEDS = ["004_a87b6fb253f9ae0b.txt", "001_90bd3d4f88e6e1ee.txt"]
ANSWERED = "中共中央政治局常务委员会召开会议"  # a sentence of 004

# ---------------------------------------------------------------- questions

ODD_QUESTIONS = {
    "100k-chars": "上海核酸筛查" * (100_000 // 6),
    "control-chars": "\x00\x01\x1b[31m上海\x7f核酸\x08",
    "zero-width-inside": "上\u200b海\u200d核\ufeff酸",
    "rtl-marks": "\u202e上海核酸筛查\u202c\u200f",
    "emoji-only": "😷🦠💉👨‍👩‍👧",
    "emoji-mixed": "😷上海😷核酸😷",
    "html-script": "<script>alert(document.cookie)</script>上海",
    "html-onerror": '<img src=x onerror="alert(1)">',
    "javascript-link": "javascript:alert(1)",
    "sql-injection": "'; DROP TABLE passages; -- 上海",
    "sql-or": "1' OR '1'='1",
    "format-string": "%s%n%x{0}{__class__.__mro__}",
    "lone-surrogates": "\udcff\udcfe上海核酸",
    "punctuation-only": "？？？！！。。",
    "full-width": "ＳＨＡＮＧＨＡＩ　上海",
    "newlines": "\n\n上海\r\n核酸\n\n",
    "combining": "e\u0301\u0301\u0301\u0301上海",
}
EMPTY_QUESTIONS = {
    "empty": "", "spaces": "   ", "whitespace-runs": "\n\t\r \u3000\u2028", "none": None, "bytes": b"x",
    "zero-width-only": "\u200b\u200c\u200d\ufeff\u2060",  # invisible marks are removed: nothing is left
}  # fmt: skip


@pytest.fixture(scope="module")
def hybrid(hash_index: Path) -> Retriever:
    return Retriever.load(hash_index, encoder=HashEncoder(), check_stale=False)


def _check(result: SearchResult, question: str) -> None:
    assert isinstance(result.answered, bool)
    assert len(result.query) <= MAX_QUERY_CHARS
    encoded = json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8")  # strict: no lone surrogates
    assert json.loads(encoded)["query"] == result.query
    for hit in result.hits:
        assert 0.0 <= hit.confidence <= 1.0 and hit.text
        assert all(0 <= s < e <= len(hit.text) for s, e in hit.highlights)
    if len(question.strip()) > MAX_QUERY_CHARS:
        assert any("was cut" in w for w in result.warnings)


@pytest.mark.parametrize("question", ODD_QUESTIONS.values(), ids=ODD_QUESTIONS.keys())
@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_odd_questions_get_an_answer(hybrid: Retriever, question: str, mode: str):
    result = hybrid.search(question, mode=mode)
    _check(result, question)


@pytest.mark.parametrize("question", EMPTY_QUESTIONS.values(), ids=EMPTY_QUESTIONS.keys())
def test_empty_questions_get_a_query_error(hybrid: Retriever, question):
    with pytest.raises(QueryError, match="empty"):
        hybrid.search(question)


def test_questions_without_words_find_nothing_rather_than_noise(hybrid: Retriever):
    for key in ("emoji-only", "punctuation-only", "html-onerror"):
        result = hybrid.search(ODD_QUESTIONS[key])
        assert not result.answered, key
    assert hybrid.search(ODD_QUESTIONS["emoji-only"]).hits == []


def test_markup_and_sql_are_searched_as_text(hybrid: Retriever):
    result = hybrid.search(ODD_QUESTIONS["sql-injection"], mode="lexical")
    assert result.query == ODD_QUESTIONS["sql-injection"].strip()
    assert any("上海" in h.text for h in result.hits)
    assert hybrid.search("<script>上海核酸筛查</script>", mode="lexical").hits[0].text == (
        hybrid.search("上海核酸筛查", mode="lexical").hits[0].text
    )


def test_undecodable_bytes_are_replaced_not_echoed(hybrid: Retriever):
    """A lone surrogate (an undecodable byte of a command line) crashed tokenization; the query
    echoed back held it, and printing it as UTF-8 failed."""
    result = hybrid.search(ODD_QUESTIONS["lone-surrogates"], mode="lexical")
    assert result.query == "\ufffd\ufffd上海核酸" and result.hits


@pytest.mark.parametrize(("k", "mode"), [(0, "lexical"), (101, "lexical"), (5, "sql"), (5, "")])
def test_bad_options_are_value_errors(hybrid: Retriever, k: int, mode: str):
    with pytest.raises(ValueError, match="must be"):
        hybrid.search("上海", k=k, mode=mode)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def lexical_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = tmp_path_factory.mktemp("hostile-docs")
    for name in SMALL_SEEDS:
        shutil.copy(SEEDS / name, docs / name)
    folder = tmp_path_factory.mktemp("hostile") / "index"
    assert main(["index", "build", "--docs", str(docs), "--index", str(folder), "--no-dense", "-q"]) == 0
    return folder


@pytest.mark.parametrize(
    "key", ["100k-chars", "control-chars", "emoji-only", "html-script", "sql-injection", "rtl-marks", "format-string"]
)
def test_cli_answers_odd_questions(lexical_index: Path, capsys, key: str):
    question = ODD_QUESTIONS[key]
    assert main(["ask", question, "--json", "--mode", "lexical", "--index", str(lexical_index)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert isinstance(json.loads(out)["answered"], bool)


@pytest.mark.parametrize("question", ["", "   ", "\u3000\n"])
def test_cli_empty_question_exits_2(lexical_index: Path, capsys, question: str):
    assert main(["ask", question, "--mode", "lexical", "--index", str(lexical_index)]) == 2
    assert "empty" in capsys.readouterr().err


def test_cli_undecodable_argument_prints_valid_utf8_json(lexical_index: Path, capsys):
    """Bytes of argv that are not UTF-8 reach Python as lone surrogates (b"\\xff" -> "\\udcff");
    the JSON printed must still be UTF-8. capsys's stdout encodes strictly, like a UTF-8 locale."""
    question = b"\xff\xfe\xe4\xb8\x8a\xe6\xb5\xb7".decode("utf-8", "surrogateescape")  # what Python makes of it
    assert main(["ask", question, "--json", "--mode", "lexical", "--index", str(lexical_index)]) == 0
    assert json.loads(capsys.readouterr().out)["query"] == "\ufffd\ufffd上海"


# ---------------------------------------------------------------- documents


def _alias_bomb(levels: int) -> bytes:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return ("---\n" + "\n".join(lines) + "\n---\n炸弹文件的正文：蓝色长颈鹿在草原上散步。\n").encode()


HOSTILE_HTML = """<html><head><title>说明书</title><script>window.stolen = document.cookie</script></head>
<body><p onclick="steal()">紫色熊猫喜欢在竹林里弹钢琴。</p>
<a href="javascript:alert(1)">点击这里</a><img src=x onerror="alert(1)"><![foo[ 奇怪的标记 ]]>
<iframe src="https://evil.example"></iframe><style>p { color: red }</style></body></html>"""


@pytest.fixture()
def hostile_docs(tmp_path: Path) -> Path:
    """Two seed documents, a new good one, and every kind of bad or odd file beside them."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in SMALL_SEEDS:
        shutil.copy(SEEDS / name, docs / name)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("机密：银色海豚的密码是一二三四。", encoding="utf-8")
    (outside / "sub").mkdir()
    (outside / "sub" / "more.txt").write_text("机密：金色乌龟的密码是五六七八。", encoding="utf-8")
    files = {
        "empty.txt": b"",
        "blank.md": b"  \n\t\n\r\n",
        "image.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,  # a damaged PNG: a scan
        "program.txt": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4,
        "bad-utf16.txt": b"\xff\xfe" + "半个字".encode("utf-16-le") + b"\x41",
        "gbk.txt": "GBK编码的文档：红色狐狸在雪地里跳舞。".encode("gbk"),
        "utf16.txt": "UTF-16编码的文档：绿色青蛙在荷叶上唱歌。".encode("utf-16"),
        "bom.md": "\ufeff# 带BOM的文档\n\n橙色老虎在山顶看日出。".encode(),
        "page.html": HOSTILE_HTML.encode(),
        "bomb.md": _alias_bomb(8),
        "bad-date.md": "---\ndate: 2022-13-45\n---\n日期错误的文档：白色兔子在月亮上种萝卜。".encode(),
        ".hidden.txt": "隐藏文件不应被索引：黑色天鹅。".encode(),
    }
    for name, data in files.items():
        (docs / name).write_bytes(data)
    (docs / "link.txt").symlink_to(outside / "secret.txt")
    (docs / "folder-link").symlink_to(outside / "sub", target_is_directory=True)
    (docs / "inner-link.txt").symlink_to(docs / "gbk.txt")  # inside the folder: allowed
    return docs


GOOD = {
    "gbk.txt": "红色狐狸",
    "utf16.txt": "绿色青蛙",
    "bom.md": "橙色老虎",
    "page.html": "紫色熊猫",
    "bomb.md": "蓝色长颈鹿",
    "bad-date.md": "白色兔子",
    "inner-link.txt": "红色狐狸",
}
BAD = {
    "empty.txt": "no text",
    "blank.md": "no text",
    "image.txt": "not an image OCR can read",  # found by content: a PNG header, whatever the name
    "program.txt": "binary",
    "bad-utf16.txt": "UTF-16",
}


def test_a_hostile_folder_builds_with_the_good_files_and_reports_the_bad(hostile_docs: Path, tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING):
        report = build_index(hostile_docs, tmp_path / "index", dense=False)
    assert report.documents == len(SMALL_SEEDS) + len(GOOD)
    for name, why in BAD.items():
        assert any(name in s and why in s for s in report.skipped), (name, report.skipped)
    assert any("link.txt" in s and "outside" in s for s in report.skipped)
    assert "link.txt" in caplog.text and "outside" in caplog.text
    index = load_index(tmp_path / "index")
    files = {s.file for p in index.passages for s in p.sources}
    assert files == set(SMALL_SEEDS) | set(GOOD)
    text = "\n".join(p.text for p in index.passages)
    for name, words in GOOD.items():
        assert words in text, name
    for leaked in (
        "银色海豚",
        "金色乌龟",
        "黑色天鹅",
        "window.stolen",
        "steal()",
        "javascript:",
        "onerror",
        "evil.example",
    ):
        assert leaked not in text
    assert "color: red" not in text and "<" not in text
    # the link that leads outside is not "new" either, so qa serve does not rebuild for it
    assert not [c for c in stale_documents(read_manifest(tmp_path / "index")) if "link" in c]


def test_an_index_built_beside_unreadable_files_is_not_stale(hostile_docs: Path, tmp_path: Path):
    build_index(hostile_docs, tmp_path / "index", dense=False)
    assert build_index(hostile_docs, tmp_path / "index", dense=False).up_to_date
    assert stale_documents(read_manifest(tmp_path / "index")) == []


def test_the_cli_builds_a_hostile_folder(hostile_docs: Path, tmp_path: Path, capsys):
    assert main(["index", "build", "--docs", str(hostile_docs), "--index", str(tmp_path / "i"), "--no-dense"]) == 0
    assert f"{len(SMALL_SEEDS) + len(GOOD)} documents" in capsys.readouterr().out


def test_bad_files_never_cost_what_is_already_indexed(hostile_docs: Path, tmp_path: Path):
    good = tmp_path / "good"
    good.mkdir()
    for name in SMALL_SEEDS:
        shutil.copy(SEEDS / name, good / name)
    folder = tmp_path / "index"
    build_index(good, folder, dense=False)
    before = Retriever.load(folder).search(ANSWERED, mode="lexical").hits[0].text
    # bad files arrive beside the good ones
    for name in BAD:
        shutil.copy(hostile_docs / name, good / name)
    report = build_index(good, folder, dense=False)
    assert report.documents == len(SMALL_SEEDS) and len(report.skipped) == len(BAD)
    assert Retriever.load(folder).search(ANSWERED, mode="lexical").hits[0].text == before
    # only bad files left: the build stops and the previous index stays as it was
    for name in SMALL_SEEDS:
        (good / name).unlink()
    with pytest.raises(DocumentsError, match="No readable documents"):
        build_index(good, folder, dense=False)
    assert Retriever.load(folder, check_stale=False).search(ANSWERED, mode="lexical").hits[0].text == before


def test_a_ten_megabyte_text_is_read_whole(tmp_path: Path):
    line = "上海全市核酸筛查采样工作有序推进，各区按要求完成采样任务。\n"
    raw = (line * (10_000_000 // len(line.encode()) + 1)).encode()
    assert len(raw) > 10_000_000
    (tmp_path / "big.txt").write_bytes(raw)
    (doc,) = read_documents(tmp_path)
    assert doc.text.count("\n") == raw.count(b"\n") - 1  # one paragraph a line, none lost


def test_an_html_page_keeps_its_text_and_loses_its_code():
    doc = parse_document(HOSTILE_HTML.encode(), "page.html")
    assert doc.title == "说明书"
    assert doc.text.split("\n") == ["紫色熊猫喜欢在竹林里弹钢琴。", "点击这里"]


# ---------------------------------------------------------------- uploads


@pytest.fixture()
def library(tmp_path: Path):
    from qa.library import Library

    docs = tmp_path / "library-docs"
    docs.mkdir()
    for name in SMALL_SEEDS:
        shutil.copy(SEEDS / name, docs / name)
    build_index(docs, tmp_path / "library-index", dense=False)
    return Library(Retriever.load(tmp_path / "library-index"), docs, max_upload_bytes=1024 * 1024)


def test_hostile_uploads_are_refused_one_by_one(library, hostile_docs: Path, tmp_path: Path):
    big = tmp_path / "big.txt"
    big.write_bytes("大".encode() * 400_000)  # 1.2 MB, over this library's 1 MB limit
    names = ["image.txt", "program.txt", "bad-utf16.txt", "empty.txt", "blank.md", "page.html", "bomb.md"]
    outcome = library.add_files([*(hostile_docs / n for n in names), big])
    refused = dict(outcome.refused)
    assert set(refused) == {"image.txt", "program.txt", "bad-utf16.txt", "empty.txt", "blank.md", "big.txt"}
    assert "二进制" in refused["program.txt"] and "编码" in refused["bad-utf16.txt"]
    assert "损坏" in refused["image.txt"]  # a damaged scan
    assert "太大" in refused["big.txt"] and "空" in refused["empty.txt"]
    assert [stored for _, stored in outcome.stored] == ["page.html", "bomb.md"]
    assert set(p.name for p in library.docs_dir.iterdir()) == {*SMALL_SEEDS, "page.html", "bomb.md"}
    assert library.retriever.search("紫色熊猫在哪里弹钢琴", mode="lexical").hits[0].sources[0].file == "page.html"


def test_an_upload_whose_index_update_fails_is_rolled_back(library, tmp_path: Path, monkeypatch):
    from qa.errors import UploadError
    from qa.stores.local import FaissVectorStore, PassageTable

    note = tmp_path / "note.md"
    note.write_text("一份新文档：灰色大象在河边洗澡。", encoding="utf-8")
    manifest = (library.index_dir / "manifest.json").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(PassageTable, "save", fail)  # the new index cannot be written
    monkeypatch.setattr(FaissVectorStore, "save", fail)
    with pytest.raises(UploadError, match="上传已撤销.*disk full"):
        library.add_files([note])
    assert sorted(p.name for p in library.docs_dir.iterdir()) == sorted(SMALL_SEEDS)
    assert (library.index_dir / "manifest.json").read_bytes() == manifest
    assert library.retriever.search(ANSWERED, mode="lexical").answered


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../../../etc/cron.d/evil.txt", "evil.txt"),
        ("/absolute/path/doc.md", "doc.md"),
        ("C:\\Users\\x\\..\\doc.html", "doc.html"),
        ("\u202etxt.exe.md", "txt.exe.md"),  # right-to-left override dropped
        ("a\x00b.txt", "a_b.txt"),
        ("-.txt", "document.txt"),
        ("x" * 300 + ".md", "x" * 80 + ".md"),
        ("ＲＥＡＤＭＥ．ＭＤ", "README.md"),  # full-width letters and dot, NFKC
    ],
)
def test_upload_names_cannot_leave_the_folder(name: str, safe: str):
    from qa.library import safe_filename

    assert safe_filename(name) == safe


@pytest.mark.parametrize("name", ["", "..txt", "../", "/", "evil.txt.exe", "\u202etxt.exe", "doc.txt\x00.py"])
def test_upload_names_without_a_document_suffix_are_refused(name: str):
    from qa.errors import UploadError
    from qa.library import safe_filename

    with pytest.raises(UploadError, match="只接受"):
        safe_filename(name)
