"""Every error the engine raises, under one base class.

Messages say what happened and what to run to fix it.
"""

from __future__ import annotations


class QAError(Exception):
    """Base class of every error raised by the `qa` package."""


class DocumentsError(QAError):
    """The documents folder is missing, empty, or holds nothing readable."""


class IndexMissingError(QAError):
    """No index was found where one was expected."""


class IndexCorruptError(QAError):
    """A file of the index is missing, truncated, altered or of an unknown format."""


class IndexMismatchError(QAError):
    """The index was built with another model or other parameters than the ones in use."""


class StoreError(QAError):
    """A store server (Milvus) cannot be reached, or refused a request or a record."""


class ModelError(QAError):
    """The embedding model cannot be found, materialized or loaded."""


class QueryError(QAError, ValueError):
    """A query that cannot be searched (empty, whitespace only)."""


class QuerySetError(QAError, ValueError):
    """A malformed evaluation query set."""


class UploadError(QAError, ValueError):
    """A document upload that was refused (type, size, name)."""
