"""The documents of one index, changed one at a time: add files (checked by content, stored under
safe new names, duplicates refused), remove one, and update the index at a lower priority while
searches go on (the new index is swapped in once it loads). If the update fails, the change to
the documents folder is undone. The chat's document tab and `qa docs` both go through `Library`.

Messages are in Chinese: they are shown to the people who upload.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.documents import SUFFIXES, UnreadableFile, parse_document
from qa.errors import QAError, UploadError
from qa.index import BuildReport, Index
from qa.progress import Stage
from qa.runtime import in_background
from qa.search import Retriever

MAX_UPLOAD_BYTES = 5 * 1024 * 1024


def safe_filename(name: str) -> str:
    """A name that is safe to create in the documents folder: no folders, no leading dot,
    letters (any script), digits, `-`, `_` and `.` only, and a document suffix."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFKC", name))[-1]
    base = re.sub(r"[^\w.\-]+", "_", base, flags=re.UNICODE).strip("._ ")
    base = re.sub(r"\.{2,}", ".", base)
    stem, dot, suffix = base.rpartition(".")
    if not dot or f".{suffix.lower()}" not in SUFFIXES:
        allowed = " ".join(sorted(SUFFIXES))
        raise UploadError(f"不支持这种文件类型，只接受 {allowed}")
    stem = stem.strip("._-")[:80] or "document"
    return f"{stem}.{suffix.lower()}"


_UNREADABLE = {
    "binary": "看起来是二进制文件，不是文本",
    "encoding": "编码无法识别（只支持 UTF-8、UTF-16、GB18030/GBK）",
    "empty": "没有可读的文字",
    "no_text_layer": "这个 PDF 没有文字层，文字识别（OCR）也没有读出文字；请上传更清晰的扫描件（300 dpi、端正）",
    "encrypted": "文件有密码保护，请去掉密码后再上传",
    "too_large": "文件太大（解压后的内容或单元格数超过上限），请拆分成几个小文件后再上传",
    "no_tool": "服务器缺少读取这种文件的工具，请管理员安装后再上传（见 README 的格式一节）",
    "broken": "文件已损坏，无法打开；请重新保存或导出后再上传",
    "legacy_doc": "这是旧版 Word .doc 文件，请用 Word 或 WPS 另存为 .docx 后再上传",
}


def _unreadable_reason(exc: UnreadableFile) -> str:
    return _UNREADABLE.get(exc.reason, str(exc))


def _store_new(folder: Path, name: str, raw: bytes) -> str:
    """Write `raw` under `name` in `folder`, or under name-2, name-3 … if taken; never overwrite.

    The bytes go to a hidden file first (documents never include hidden files), which is then
    hard-linked under its name: a crash mid-write never leaves half a document to be indexed."""
    stem, suffix = name.rsplit(".", 1)
    fd, part = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(part, 0o644)
        for n in range(1, 1000):
            candidate = name if n == 1 else f"{stem}-{n}.{suffix}"
            try:
                os.link(part, folder / candidate)  # fails if the name is taken: never overwrites
            except FileExistsError:
                continue
            return candidate
    finally:
        os.unlink(part)
    raise UploadError(f"文档文件夹里已有太多名为 {name} 的文件")


@dataclass
class UploadOutcome:
    """What an upload did: files stored (original name, stored name), files refused (name, reason)."""

    stored: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    report: BuildReport | None = None

    def summary(self) -> str:
        lines = []
        for orig, name in self.stored:
            lines.append(f"已加入：{orig}" + (f"（保存为 {name}）" if name != orig else ""))
        for orig, reason in self.refused:
            lines.append(f"未加入：{orig}：{reason}")
        if self.report is not None:
            r = self.report
            lines.append(
                f"索引已更新：{r.documents} 个文档，{r.passages} 个段落（新向量化 {r.embedded} 个文本单元，复用 {r.reused} 个）。"
            )
        return "\n".join(lines) or "没有选择文件。"


# ---------------------------------------------------------------- the library


class Library:
    """The retriever in use, its documents folder, and index updates one at a time.

    Searches read `self.retriever` and keep working on the old index while an update
    runs; the new retriever is swapped in only once it has loaded.
    """

    def __init__(self, retriever: Retriever, docs_dir: str | Path, *, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self._retriever = retriever
        self.docs_dir = Path(docs_dir)
        self.index_dir = Path(retriever.index.folder)
        self.max_upload_bytes = max_upload_bytes
        self._lock = threading.Lock()
        self._originals: Path | None = None

    @property
    def retriever(self) -> Retriever:
        return self._retriever

    def documents(self) -> list[dict[str, Any]]:
        return self._retriever.documents()

    def original_copy(self, file: str, raw: bytes) -> Path:
        """A copy of an indexed document's file (`raw`, from `Retriever.original`) in this
        server's temporary folder, which Gradio may serve for download; the documents folder
        itself is blocked."""
        with self._lock:
            if self._originals is None:
                self._originals = Path(tempfile.mkdtemp(prefix="qa-originals-"))
                atexit.register(shutil.rmtree, self._originals, ignore_errors=True)
            folder = self._originals / hashlib.sha256(raw).hexdigest()[:16]
        path = folder / Path(file).name
        if not path.is_file():
            folder.mkdir(exist_ok=True)
            partial = folder / f".{path.name}.{threading.get_ident()}"
            partial.write_bytes(raw)
            os.replace(partial, path)
        return path

    def add_files(
        self, paths: Sequence[str | Path], on_progress: Callable[[Stage, int, int], None] | None = None
    ) -> UploadOutcome:
        """Check each file by content, store the good ones under safe new names, update the index.

        A refused file is reported and the others go on; if the index update fails, the
        stored files are removed again so the folder and the index stay in step.
        """
        out = UploadOutcome()
        with self._lock:
            known = {d["sha256"]: d["file"] for d in self.documents()}
            for path in paths:
                orig = Path(path).name
                try:
                    raw = self._check(Path(path), orig)
                    digest = hashlib.sha256(raw).hexdigest()
                    if digest in known:
                        raise UploadError(f"内容与已有文档 {known[digest]} 相同")
                    stored = _store_new(self.docs_dir, safe_filename(orig), raw)
                    known[digest] = stored
                    out.stored.append((orig, stored))
                except UploadError as exc:
                    out.refused.append((orig, str(exc)))
                except OSError as exc:
                    out.refused.append((orig, f"无法读取或保存（{exc.strerror or exc}）"))
            if out.stored:
                try:
                    out.report = self._rebuild(on_progress)
                except Exception as exc:
                    for _, name in out.stored:
                        (self.docs_dir / name).unlink(missing_ok=True)
                    raise UploadError(f"索引更新失败，上传已撤销：{exc}") from exc
        return out

    def _check(self, path: Path, orig: str) -> bytes:
        name = safe_filename(orig)
        size = path.stat().st_size
        if size == 0:
            raise UploadError("文件是空的")
        if size > self.max_upload_bytes:
            raise UploadError(f"文件太大（{size / 1048576:.1f} MB），上限是 {self.max_upload_bytes / 1048576:g} MB")
        raw = path.read_bytes()
        try:
            parse_document(raw, name)
        except UnreadableFile as exc:
            raise UploadError(_unreadable_reason(exc)) from exc
        return raw

    def remove(self, file: str, on_progress: Callable[[Stage, int, int], None] | None = None) -> BuildReport:
        """Delete an indexed document's file and update the index (the file comes back if that fails)."""
        with self._lock:
            self._retriever.refresh(force=True)  # another server may have added it a moment ago
            indexed = {d["file"] for d in self.documents()}
            if file not in indexed:
                raise QAError(f"索引里没有文档 {file}")
            if len(indexed) == 1:
                raise QAError("这是最后一个文档，不能删除：索引至少需要一个文档")
            root = self.docs_dir.resolve()
            path = root / file  # not resolved: a symbolic link is removed, never what it points to
            if not path.parent.resolve().is_relative_to(root) or not (path.is_file() or path.is_symlink()):
                raise QAError(f"文档文件夹里找不到 {file}")
            link = os.readlink(path) if path.is_symlink() else None
            raw = path.read_bytes() if link is None else b""
            path.unlink()
            try:
                return self._rebuild(on_progress)
            except Exception:
                if link is not None:
                    os.symlink(link, path)
                else:
                    path.write_bytes(raw)
                raise

    def _rebuild(self, on_progress: Callable[[Stage, int, int], None] | None) -> BuildReport:
        """Update the index from the documents folder, then search the new one. The update runs
        at a lower priority (qa.runtime.in_background), so the searches meanwhile keep their cores."""
        return in_background(lambda: self._update(on_progress), name="qa-index-update")

    def _update(self, on_progress: Callable[[Stage, int, int], None] | None) -> BuildReport:
        retriever = self._retriever
        report = retriever.index.update(
            self.docs_dir, encoder=retriever.encoder if retriever.has_dense else None, on_progress=on_progress
        )
        if on_progress:
            on_progress(Stage.LOAD, 0, 1)
        retriever.replace_index(Index.open(self.index_dir))
        retriever.warm_up()
        if on_progress:
            on_progress(Stage.LOAD, 1, 1)
        return report
