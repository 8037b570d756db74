"""Knowledge bases: several documents folders, each with its own index, picked by name.

An office keeps its rules, its notices and its manuals apart. `qa serve --kb 防疫=seeds --kb
制度=docs/rules` serves both, and the chat lets a user pick one; `qa ask/eval/docs --kb 制度` work
on one. A knowledge base named N keeps its index in `vectors/kb/N` (`KB_ROOT`), so a name is all
the CLI needs: the index remembers the documents folder it was built from. Without `--kb`,
everything works as before on the one default knowledge base (`seeds` → `vectors/default`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qa import DEFAULT_DOCS, DEFAULT_INDEX
from qa.errors import QAError

KB_ROOT = Path(DEFAULT_INDEX).parent / "kb"  # vectors/kb/<name>: each knowledge base's index
DEFAULT_KB = "默认"  # the name the chat shows for the zero-configuration knowledge base
MAX_NAME_CHARS = 40
_NAME = re.compile(r"[\w\-. ]+")


class KnowledgeBaseError(QAError):
    """A knowledge base is misnamed, missing or given twice."""


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    """A name, the documents folder it answers from, and the folder of its index."""

    name: str
    docs_dir: Path
    index_dir: Path


def check_name(name: str) -> str:
    """`name`, NFKC-normalized and stripped, if it can name a knowledge base (and its index
    folder): letters of any script, digits, spaces, `-`, `_` and `.`, not starting with a dot."""
    clean = unicodedata.normalize("NFKC", name).strip()
    if not clean or len(clean) > MAX_NAME_CHARS or not _NAME.fullmatch(clean) or clean.startswith("."):
        raise KnowledgeBaseError(
            f"{name!r} cannot name a knowledge base: use 1 to {MAX_NAME_CHARS} letters, digits, spaces, "
            "'-', '_' or '.', e.g. --kb 制度=docs/rules"
        )
    return clean


def index_of(name: str, root: Path = KB_ROOT) -> Path:
    """The index folder of the knowledge base `name`."""
    return root / check_name(name)


def parse_spec(spec: str, root: Path = KB_ROOT) -> KnowledgeBase:
    """A knowledge base from `NAME=FOLDER` (qa serve --kb 制度=docs/rules)."""
    name, sep, folder = spec.partition("=")
    if not sep or not folder.strip() or not name.strip():
        raise KnowledgeBaseError(f"--kb takes NAME=FOLDER, e.g. --kb 制度=docs/rules (got {spec!r})")
    clean = check_name(name)
    return KnowledgeBase(clean, Path(folder.strip()), root / clean)


def check_distinct(kbs: Sequence[KnowledgeBase]) -> list[KnowledgeBase]:
    """`kbs`, refused if two share a name, an index or a documents folder (an upload to one would
    change the other's documents behind its back)."""
    for attr, what in (("name", "name"), ("index_dir", "index folder"), ("docs_dir", "documents folder")):
        seen: dict[str, str] = {}
        for kb in kbs:
            key = str(getattr(kb, attr)) if attr == "name" else str(Path(getattr(kb, attr)).resolve())
            if key in seen:
                raise KnowledgeBaseError(
                    f"The knowledge bases {seen[key]!r} and {kb.name!r} have the same {what} ({key}): "
                    "give each its own name and its own documents folder."
                )
            seen[key] = kb.name
    return list(kbs)


def default_kb(docs_dir: str | Path = DEFAULT_DOCS, index_dir: str | Path = DEFAULT_INDEX) -> KnowledgeBase:
    """The one knowledge base of a server started without --kb."""
    return KnowledgeBase(DEFAULT_KB, Path(docs_dir), Path(index_dir))


def resolve_index(kb: str | None, index: str | Path, root: Path = KB_ROOT) -> Path:
    """The index folder a command works on: `--kb NAME`'s, which must exist, else `--index`."""
    if kb is None:
        return Path(index)
    folder = index_of(kb, root)
    if not (folder / "manifest.json").exists():
        known = sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists()) if root.is_dir() else []
        raise KnowledgeBaseError(
            f"No knowledge base named {kb!r} in {root}"
            + (f" (there are: {', '.join(known)})" if known else "")
            + f". Create it with: qa serve --kb {kb}=FOLDER, or qa index build --docs FOLDER --index {folder}"
        )
    return folder
