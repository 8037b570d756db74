"""Where qa keeps its per-user files (jieba's dictionary cache, the materialized model, the
reader's data and checkpoints), and how one such file is written safely."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """$QA_CACHE_DIR, else $XDG_CACHE_HOME/qa, else ~/.cache/qa."""
    if os.environ.get("QA_CACHE_DIR"):
        return Path(os.environ["QA_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "qa"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `path` through a temporary file beside it, fsynced and renamed into place: a crash
    leaves the old file or the new one, never half of one. `mode`: its permissions (0o600 for a
    file only its owner may read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
