"""Stage 1: read a folder of documents (txt / md / html / pdf / docx / xlsx / pptx / doc) into
plain-text `Document`s.

Formats are decided by content as well as by extension: a file that starts with `%PDF-` is a
PDF, a zip holding `word/document.xml` is a Word document (`xl/workbook.xml` a workbook,
`ppt/presentation.xml` a deck), an OLE file holding `WordDocument` a legacy .doc, a PNG, JPEG or
TIFF header an image of a page (read by OCR), whatever their names (the readers are in
`qa.formats`, one module per format); a `.txt` file that starts with YAML front matter is
read as markdown, and HTML embedded anywhere is parsed with a real HTML parser (tags,
attributes, scripts and styles never reach the text). Encodings: UTF-8 (with or without
BOM), UTF-16 with BOM, GB18030/GBK. Each non-empty line of `Document.text` is one paragraph.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

import yaml

from qa.errors import DocumentsError
from qa.formats.base import TITLE_MAX_CHARS as TITLE_MAX_CHARS  # re-exported: the readers' shared types
from qa.formats.base import Document as Document
from qa.formats.base import Unreadable as Unreadable
from qa.formats.base import UnreadableFile as UnreadableFile
from qa.formats.base import short_title as short_title
from qa.progress import Progress, Stage, no_progress

log = logging.getLogger(__name__)

SUFFIXES = frozenset(
    {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".doc", ".xlsx", ".pptx"}
    | {".png", ".jpg", ".jpeg", ".tif", ".tiff"}  # images of pages, read by OCR
)
META_MAX_CHARS = 1000


# ---------------------------------------------------------------- decoding


def decode(raw: bytes) -> str:
    """Decode bytes as UTF-8 (BOM optional), UTF-16 with BOM, or GB18030; refuse binary."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="replace")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as exc:  # odd length, lone surrogate
            raise UnreadableFile("it starts like UTF-16 text but is not valid UTF-16", "encoding") from exc
        if _control_ratio(text) > 0.01:
            raise UnreadableFile("it looks binary (too many control characters)", "binary")
        return text
    if b"\x00" in raw[:8192]:
        raise UnreadableFile("it looks binary (it contains NUL bytes)", "binary")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise UnreadableFile("it is neither UTF-8 nor GB18030/GBK text", "encoding") from exc
    if _control_ratio(text) > 0.01:
        raise UnreadableFile("it looks binary (too many control characters)", "binary")
    return text


def _control_ratio(text: str) -> float:
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f")
    return controls / max(len(text), 1)


# ---------------------------------------------------------------- HTML

_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "br",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe", "object"})
_HTML_TAG = re.compile(
    r"</?(?:p|div|br|span|strong|em|b|i|a|img|h[1-6]|ul|ol|li|table|tr|td|th|section|article|"
    r"blockquote|pre|code|script|style|html|body|head|font|center|figure)\b[^>]*>",
    re.IGNORECASE,
)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self.heading = ""
        self._skip = 0
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS or tag == "title":
            self._skip += 1
            self._in.append(tag)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag in ("h1", "h2"):
            self._in.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._in:
            while self._in:
                top = self._in.pop()
                if top in _SKIP_TAGS or top == "title":
                    self._skip = max(0, self._skip - 1)
                if top == tag:
                    break
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        # Python's parser raises AssertionError on `<![foo[` (found by fuzzing); HTML reads a
        # marked section other than CDATA as a bogus comment, and so does this.
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            return self.parse_bogus_comment(i)

    def handle_data(self, data: str) -> None:
        if "title" in self._in and not self.title:
            self.title = data.strip()
        if self._skip:
            return
        if any(t in ("h1", "h2") for t in self._in) and not self.heading:
            self.heading = data.strip()
        # Whitespace inside HTML is layout, except line breaks between plain-text lines.
        self.parts.append(re.sub(r"[ \t\r\f\v]+", " ", data))


def html_to_text(html: str) -> tuple[str, str]:
    """Visible text of an HTML fragment (one paragraph per line) and its title, if any."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts), parser.title or parser.heading


def looks_like_html(text: str) -> bool:
    return len(_HTML_TAG.findall(text[:200_000])) >= 2 or bool(re.search(r"<!doctype html|<html", text[:2000], re.I))


# ---------------------------------------------------------------- markdown

# libyaml's parser when PyYAML has it: safe like yaml.safe_load, and it refuses deep nesting at
# once where the pure-Python parser spends seconds reaching a RecursionError.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def split_front_matter(text: str) -> tuple[dict[str, str], str]:
    """YAML front matter (if any) as flat string metadata, and the body after it."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text
    try:
        data = yaml.load(m.group(1), Loader=_YAML_LOADER)
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: a date like 2022-13-45
        return {}, text
    if not isinstance(data, dict):
        return {}, text
    meta = {str(k): v for k, v in ((k, _flat(v)) for k, v in data.items()) if v is not None}
    return meta, text[m.end() :]


def _flat(value: object) -> str | None:
    """A scalar, or a list of scalars joined, at most META_MAX_CHARS long; nothing for nested
    values. (YAML aliases let a few hundred bytes stand for billions of items.)"""
    if isinstance(value, list):
        parts, size = [], 0
        for v in value:
            if size > META_MAX_CHARS:
                break
            if not isinstance(v, list | dict):
                parts.append(str(v)[:META_MAX_CHARS])
                size += len(parts[-1]) + 2
        return ", ".join(parts)[:META_MAX_CHARS]
    if value is None or isinstance(value, dict):
        return None
    return str(value)[:META_MAX_CHARS]


_MD_LINE = re.compile(r"^\s*(?:>\s*)+|^\s{0,3}#{1,6}\s+|^\s*[-*+]\s+(?=\S)")


def clean_lines(text: str) -> str:
    """One paragraph per line: markdown quote/heading markers dropped, blank lines removed."""
    lines = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = _MD_LINE.sub("", line).strip()
        if line and not re.fullmatch(r"[-=*_]{3,}|#+", line):
            lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------- reading


Format = Literal["pdf", "docx", "xlsx", "pptx", "doc", "image", "encrypted_office", "text"]
# The first bytes of the image formats OCR reads: PNG, JPEG, TIFF (both byte orders).
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")
# The zip member that makes an Office Open XML file one format or another, and its suffix.
_OOXML: tuple[tuple[str, Format], ...] = (
    ("word/document.xml", "docx"),
    ("xl/workbook.xml", "xlsx"),
    ("ppt/presentation.xml", "pptx"),
)

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the container of .doc files and of password-protected .docx


def sniff(raw: bytes, path: str) -> Format:
    """The format of a file's bytes, whatever its name; the suffix only decides for damaged files."""
    suffix = Path(path).suffix.lower()
    if raw[:1024].lstrip()[:5] == b"%PDF-":
        return "pdf"
    if raw.startswith(_IMAGE_MAGIC):
        return "image"
    if raw.startswith(b"PK\x03\x04"):
        names = _zip_names(raw)
        for member, kind in _OOXML:
            if member in names or (not names and suffix == f".{kind}"):  # a damaged zip: its suffix decides
                return kind
    if raw.startswith(_OLE):
        if "EncryptedPackage".encode("utf-16-le") in raw:
            return "encrypted_office"
        if "WordDocument".encode("utf-16-le") in raw or suffix == ".doc":
            return "doc"
    if suffix == ".doc" and raw[:1024].lstrip().startswith(b"{\\rtf"):
        return "doc"  # Word's "save as .doc" in RTF
    return "text"


def _zip_names(raw: bytes) -> frozenset[str]:
    """The member names of a zip, or none if it is damaged."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            return frozenset(z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return frozenset()


def parse_document(raw: bytes, path: str, on_progress: Progress | None = None) -> Document:
    """Turn one file's bytes into a `Document` (raises UnreadableFile). `on_progress` hears the
    OCR of scanned pages and images (Stage.OCR), which takes seconds a page."""
    kind = sniff(raw, path)
    if kind == "pdf":
        from qa.formats.pdf import read_pdf

        return read_pdf(raw, path, on_progress)
    if kind == "image":
        from qa.formats.image import read_image

        return read_image(raw, path, on_progress)
    if kind == "docx":
        from qa.formats.docx import read_docx

        return read_docx(raw, path)
    if kind == "xlsx":
        from qa.formats.xlsx import read_xlsx

        return read_xlsx(raw, path)
    if kind == "pptx":
        from qa.formats.pptx import read_pptx

        return read_pptx(raw, path)
    if kind == "doc":
        from qa.formats.doc import read_doc

        return read_doc(raw, path)
    if kind == "encrypted_office":
        raise UnreadableFile(
            "it is a password-protected Office file; remove the password in Word, Excel, PowerPoint or WPS, "
            "then add it again",
            "encrypted",
        )
    return parse_text(raw, path)


def parse_text(raw: bytes, path: str) -> Document:
    """A text file (plain, markdown or HTML, decided by content) as a `Document`."""
    text = decode(raw)
    suffix = Path(path).suffix.lower()
    meta, body = split_front_matter(text)
    html_title = ""
    if suffix in (".html", ".htm") or looks_like_html(body):
        body, html_title = html_to_text(body)
    body = clean_lines(body)
    if not body:
        raise UnreadableFile("it has no text", "empty")
    first_line = body.split("\n", 1)[0]
    title = short_title(meta.get("title") or html_title or _heading(text) or first_line)
    meta = {k: v for k, v in meta.items() if k in ("title", "date", "author", "source", "categories")}
    return Document(path=path, title=title, text=body, sha256=hashlib.sha256(raw).hexdigest(), meta=meta)


def _heading(text: str) -> str:
    m = re.search(r"^\s{0,3}#\s+(.+)$", text[:5000], re.MULTILINE)
    return m.group(1).strip() if m else ""


def iter_files(docs_dir: Path, *, skipped: list[str] | None = None) -> Iterator[Path]:
    """Document files below `docs_dir`, in a stable order; hidden files and folders skipped, and so
    are the `~$name.docx` lock files Word leaves beside an open document, and symbolic links
    that lead outside `docs_dir` (noted in `skipped`, when given)."""
    root = docs_dir.resolve()
    for p in sorted(docs_dir.rglob("*")):
        rel = p.relative_to(docs_dir)
        if any(part.startswith(".") for part in rel.parts) or p.name.startswith("~$"):
            continue
        if p.is_file() and p.suffix.lower() in SUFFIXES:
            if not p.resolve().is_relative_to(root):
                if skipped is not None:
                    skipped.append(f"Skipped {p}: it is a link to {p.resolve()}, outside {docs_dir}")
                continue
            yield p


def read_documents(
    docs_dir: str | Path, *, skipped: list[str] | None = None, on_progress: Progress | None = None
) -> list[Document]:
    """Read every document below `docs_dir`; unreadable files are skipped with a warning
    (also appended to `skipped`, when given)."""
    root = Path(docs_dir)
    if not root.is_dir():
        raise DocumentsError(
            f"Documents folder {root} does not exist. Put documents there (.txt .md .html .pdf .docx .doc "
            f".xlsx .pptx, or scans as .png .jpg .tif), "
            f"or point to another folder: qa index build --docs PATH"
        )
    docs = []
    links: list[str] = []
    files = list(iter_files(root, skipped=links))
    report = on_progress or no_progress
    for n, p in enumerate(files, start=1):
        report(Stage.READ, n - 1, len(files))
        rel = p.relative_to(root).as_posix()
        try:
            docs.append(parse_document(p.read_bytes(), rel, report))
        except (UnreadableFile, OSError) as exc:
            log.warning("Skipped %s: %s", p, exc)
            if skipped is not None:
                skipped.append(f"Skipped {p}: {exc}")
    report(Stage.READ, len(files), len(files))
    for msg in links:
        log.warning("%s", msg)
    if skipped is not None:
        skipped.extend(links)
    if not docs:
        raise DocumentsError(
            f"No readable documents in {root}. Add .txt, .md or .html files "
            f"(UTF-8 or GBK), .pdf files with a text layer or .docx files, then run: qa index build --docs {root}"
        )
    return docs
