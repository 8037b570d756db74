"""Where qa keeps its per-user files (jieba's dictionary cache, the materialized model)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$QA_CACHE_DIR, else $XDG_CACHE_HOME/qa, else ~/.cache/qa."""
    if os.environ.get("QA_CACHE_DIR"):
        return Path(os.environ["QA_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "qa"
