"""Retrieval question answering over Chinese documents.

from qa import Retriever, build_index
build_index(docs_dir="seeds", index_dir="vectors/default")
r = Retriever.load("vectors/default")
result = r.search("上海全市核酸筛查采样了多少人", k=5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
DEFAULT_DOCS = "seeds"  # the seed corpus, relative to the working directory
DEFAULT_INDEX = "vectors/default"

__all__ = [
    "BuildReport", "EvalResult", "Hit", "Retriever", "SearchResult", "Source", "__version__",
    "build_index", "evaluate", "load_queries",
]  # fmt: skip

if TYPE_CHECKING:
    from qa.evaluate import EvalResult, evaluate, load_queries
    from qa.index import BuildReport, build_index
    from qa.search import Hit, Retriever, SearchResult
    from qa.split import Source

_LAZY = {
    "BuildReport": "qa.index", "build_index": "qa.index",
    "Hit": "qa.search", "Retriever": "qa.search", "SearchResult": "qa.search",
    "Source": "qa.split",
    "EvalResult": "qa.evaluate", "evaluate": "qa.evaluate", "load_queries": "qa.evaluate",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    """Import the heavy stages (torch, faiss) only when they are first used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qa' has no attribute {name!r}")
