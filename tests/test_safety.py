"""An index folder is data, never code: damaged files are refused, planted files are never
deserialized, and the package holds no pickle, eval or other way to run what it reads.

tests/test_index.py covers four files truncated to half, altered in the last byte, or missing;
this extends that to every file of the index, more kinds of damage, and files an attacker adds.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from qa.errors import IndexCorruptError
from qa.folder import VERIFIED
from qa.index import MANIFEST, load_index
from qa.search import Retriever
from tests.conftest import ROOT
from tests.fakes import HashEncoder

QUESTION = "上海全市核酸筛查采样了多少人"


@pytest.fixture()
def index(hash_index: Path, tmp_path: Path) -> Path:
    """A private copy of the seed index (fake encoder) that a test may damage."""
    dst = tmp_path / "index"
    shutil.copytree(hash_index, dst)
    return dst


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- damaged files

DAMAGE = {
    "emptied": lambda b: b"",
    "one byte short": lambda b: b[:-1],
    "one byte longer": lambda b: b + b"\x00",
    "first byte flipped": lambda b: bytes([b[0] ^ 0x01]) + b[1:],
    "middle byte flipped": lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0x80]) + b[len(b) // 2 + 1 :],
    "last byte flipped": lambda b: b[:-1] + bytes([b[-1] ^ 0x01]),
}


def test_every_file_but_the_manifest_is_checksummed(index: Path):
    """...and the record of earlier checks (VERIFIED), which only ever spares a hash: garbage in it
    is ignored, and an entry that does not match a file's checksum and stat counts for nothing."""
    load_index(index)
    on_disk = {p.relative_to(index).as_posix() for p in index.rglob("*") if p.is_file()}
    assert set(_manifest(index)["files"]) == on_disk - {MANIFEST, VERIFIED}
    (index / VERIFIED).write_text("{not json", encoding="utf-8")
    load_index(index)
    path = index / "vectors.npy"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    st = path.stat()
    planted = {"files": {"vectors.npy": ["0" * 64, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]}}
    (index / VERIFIED).write_text(json.dumps(planted), encoding="utf-8")  # the stat right, the checksum not
    with pytest.raises(IndexCorruptError, match=r"vectors.npy is altered"):
        load_index(index)


def test_every_index_file_damaged_in_any_way_is_refused(index: Path):
    files = sorted(_manifest(index)["files"])
    assert len(files) >= 14  # passages, units, vectors, FAISS, and two BM25 indexes of five files each
    for name in files:
        path = index / name
        original = path.read_bytes()
        for damage in DAMAGE.values():
            path.write_bytes(damage(original))
            with pytest.raises(IndexCorruptError, match=rf"{name} is (truncated or )?altered.*qa index build"):
                load_index(index)
        path.write_bytes(original)
    load_index(index)  # and the undamaged copy still loads


def test_a_truncated_manifest_is_refused(index: Path):
    data = (index / MANIFEST).read_bytes()
    for cut in (0, 1, len(data) // 2, len(data) - 2):
        (index / MANIFEST).write_bytes(data[:cut])
        with pytest.raises(IndexCorruptError, match="manifest.json.*qa index build"):
            load_index(index)


def _flip_in(folder: Path, needle: bytes) -> None:
    """Flip the lowest bit of the second byte of `needle` in the manifest (a key's first letter)."""
    path = folder / MANIFEST
    data = path.read_bytes()
    at = data.index(needle) + 1
    path.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :])


@pytest.mark.parametrize(
    "needle",
    [
        pytest.param(b'"passage_count"', id="key-passage_count"),  # KeyError escapes load_index
        pytest.param(b'"name": "test/hash', id="key-model-name"),  # KeyError escapes Retriever()
        pytest.param(b'"title": "', id="key-title"),  # loads, the document has no title
        pytest.param(b'"threshold": ', id="key-threshold"),  # IndexMismatchError, not IndexCorruptError
    ],
)
def test_a_manifest_with_a_flipped_byte_is_refused(index: Path, needle: bytes):
    _flip_in(index, needle)
    with pytest.raises(IndexCorruptError):
        Retriever(load_index(index), HashEncoder())


# ---------------------------------------------------------------- planted files are never deserialized


class _Bait:
    """Unpickling this creates `marker`: proof that something was deserialized."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _pickle_bait(marker: Path) -> bytes:
    return pickle.dumps(_Bait(marker))


def _npy_bait(marker: Path) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([_Bait(marker)], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.fixture()
def no_unpickling(monkeypatch):
    """Any call into pickle's loaders fails the test (numpy's object arrays go through pickle.load)."""

    def forbidden(*args, **kwargs):
        pytest.fail("something was unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)


def test_the_bait_works(tmp_path: Path):
    """Without this, a marker that never appears would prove nothing."""
    marker = tmp_path / "pwned"
    pickle.loads(_pickle_bait(marker))
    assert marker.exists()
    marker.unlink()
    np.load(io.BytesIO(_npy_bait(marker)), allow_pickle=True)
    assert marker.exists()


def test_unexpected_files_in_the_index_are_ignored(index: Path, tmp_path: Path, no_unpickling):
    marker = tmp_path / "pwned"
    planted = {
        "index.pkl": _pickle_bait(marker),
        "model.pt": _pickle_bait(marker),
        "vectors.pkl": _pickle_bait(marker),
        "extra.npy": _npy_bait(marker),
        "bm25/nonoccurrence_array.index.npy": _npy_bait(marker),  # what bm25s reads for BM25L / BM25+
        "bm25/corpus.jsonl": _pickle_bait(marker),
        "bm25/pinyin/nonoccurrence_array.index.npy": _npy_bait(marker),
    }
    for name, data in planted.items():
        (index / name).write_bytes(data)
    retriever = Retriever(load_index(index), HashEncoder())
    assert retriever.search(QUESTION, mode="lexical").hits
    assert retriever.search(QUESTION, mode="hybrid").hits
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "bait"),
    [
        ("units.npy", _npy_bait),
        ("vectors.npy", _npy_bait),
        ("bm25/data.csc.index.npy", _npy_bait),
        ("bm25/indptr.csc.index.npy", _pickle_bait),
        ("bm25/pinyin/indices.csc.index.npy", _npy_bait),
        ("bm25/vocab.index.json", _pickle_bait),
        ("passages.jsonl", _pickle_bait),
        ("dense.faiss", _pickle_bait),
    ],
)
def test_a_pickle_in_place_of_an_index_file_is_refused_even_with_a_matching_checksum(
    index: Path, tmp_path: Path, no_unpickling, name: str, bait
):
    """Checksums catch damage, not an attacker who also rewrites manifest.json; then every
    reader still refuses pickled data (numpy with allow_pickle=False, JSON, FAISS)."""
    marker = tmp_path / "pwned"
    data = bait(marker)
    (index / name).write_bytes(data)
    manifest = _manifest(index)
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (index / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="qa index build"):
        load_index(index)
    assert not marker.exists()


# ---------------------------------------------------------------- FAISS reads nothing unverified


def test_a_faiss_file_claiming_huge_sizes_is_refused_before_faiss_reads_it(index: Path, monkeypatch):
    import faiss

    path = index / "dense.faiss"
    data = bytearray(path.read_bytes())
    # IndexFlatIP header: fourcc "IxFI", d (int32), ntotal (int64), ...
    assert data[:4] == b"IxFI" and int.from_bytes(data[4:8], "little") == 64
    data[8:16] = (1 << 62).to_bytes(8, "little")  # ntotal: 4.6e18 vectors; nothing else updated
    path.write_bytes(bytes(data))

    def read_index(*args, **kwargs):
        pytest.fail("faiss.read_index was called on an unverified file")

    monkeypatch.setattr(faiss, "read_index", read_index)
    with pytest.raises(IndexCorruptError, match=r"dense\.faiss is altered \(checksum mismatch\).*qa index build"):
        load_index(index)


# ---------------------------------------------------------------- no code runs what the index holds


FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
FORBIDDEN_CALLS = {"eval", "exec", "__import__", "compile"}  # builtins; re.compile is an attribute call
FORBIDDEN_ATTRIBUTE_CALLS = {
    ("torch", "load"),
    ("os", "system"),
    ("os", "popen"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("yaml", "load_all"),
}
FORBIDDEN_KEYWORDS = {("allow_pickle", True), ("trust_remote_code", True), ("weights_only", False), ("shell", True)}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "_YAML_LOADER"}


def code_execution_risks(source: str, filename: str = "<source>") -> list[str]:
    """Places in Python `source` that could deserialize or run code, found in the syntax tree,
    so that comments and strings that merely mention them ("never pickle") do not count."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where}: from {node.module} import")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{where}: {func.id}()")
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                pair = (func.value.id, func.attr)
                if pair in FORBIDDEN_ATTRIBUTE_CALLS or func.value.id in FORBIDDEN_MODULES:
                    found.append(f"{where}: {func.value.id}.{func.attr}()")
                if pair == ("yaml", "load"):
                    loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                    name = getattr(loader, "id", getattr(loader, "attr", None))
                    if name not in SAFE_YAML_LOADERS:
                        found.append(f"{where}: yaml.load() without a safe Loader")
            for k in node.keywords:
                if isinstance(k.value, ast.Constant) and (k.arg, k.value.value) in FORBIDDEN_KEYWORDS:
                    found.append(f"{where}: {k.arg}={k.value.value}")
    return found


def test_the_package_holds_no_pickle_eval_or_unsafe_loading():
    sources = sorted([*(ROOT / "qa").rglob("*.py"), *(ROOT / "ui").rglob("*.py")])
    assert len(sources) >= 10
    risks = [r for p in sources for r in code_execution_risks(p.read_text("utf-8"), str(p.relative_to(ROOT)))]
    assert risks == []


def test_the_scan_finds_code_not_prose():
    prose = '''
"""Nothing is ever unpickled; never pickle, never eval( or exec( what the index holds."""
# torch.load, marshal and allow_pickle=True are not used here
MESSAGE = "loaded with allow_pickle=False, not pickle.load(f)"
pattern = re.compile("x")
np.load(path, allow_pickle=False)
yaml.load(text, Loader=yaml.CSafeLoader)
'''
    assert code_execution_risks(prose) == []
    code = """
import pickle
from marshal import loads
import dill.settings
eval("1")
exec("x = 1")
compile("1", "f", "eval")
torch.load(path)
np.load(path, allow_pickle=True)
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.unsafe_load(text)
SentenceTransformer(name, trust_remote_code=True)
subprocess.run(cmd, shell=True)
pickle.loads(data)
"""
    assert len(code_execution_risks(code)) == 14
