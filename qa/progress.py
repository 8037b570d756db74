"""Build progress as typed events: `on_progress(stage, done, total)`.

The CLI turns them into tqdm bars and the chat into its progress bar; neither parses log
text. Importing this module is cheap (no torch, no FAISS).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class Stage(StrEnum):
    """The stages of a build or an update, in the order they run."""

    READ = "read"  # reading documents: done/total files
    OCR = "ocr"  # OCR of one file's scanned pages or images, while it is read: done/total pages
    SPLIT = "split"  # splitting into passages: done/total documents
    MODEL = "model"  # loading the embedding model: 0/1, then 1/1
    EMBED = "embed"  # embedding new text units: done/total units (total 0: nothing new)
    KEYWORDS = "keywords"  # tokenizing and indexing keywords: 0/1, then 1/1
    WRITE = "write"  # writing the stores and the manifest: 0/1, then 1/1
    LOAD = "load"  # loading the new index for searching: 0/1, then 1/1


Progress = Callable[[Stage, int, int], None]


def no_progress(stage: Stage, done: int, total: int) -> None:
    """The default `on_progress`: ignore every event."""
