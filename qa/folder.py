"""An index folder on disk, made durable: file checksums, fsync, file locks and the build lock,
and the swap of a freshly written folder into place (with the recovery of one a crash cut
short). Used by the life of an index (qa.index) and by the stores that keep their files in the
folder (qa.stores.local); it knows nothing of either.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from qa.errors import IndexCorruptError
from qa.manifest import MANIFEST, Manifest

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    for p in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        fsync(p)
    fsync(folder)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file `path` (created if needed) while the block runs; others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_lock(target: Path) -> contextlib.AbstractContextManager[None]:
    """The lock every build of the index folder `target` holds (a file beside it)."""
    return locked(target.parent / f".{target.name}.lock")


def backup_name(target: Path) -> Path:
    return target.parent / f".{target.name}.previous"


def recover(target: Path, *, locked: bool = False) -> None:
    """Finish a swap that a crash interrupted: put the previous index back in place.

    A build swaps under the build lock, so a reader that finds the index missing takes the lock
    first (`locked`: the caller holds it): it must not undo a swap that is under way, only one
    whose build died."""
    backup = backup_name(target)
    if target.exists() or not (backup / MANIFEST).exists():
        return
    if not locked:
        with build_lock(target):
            recover(target, locked=True)
        return
    log.warning("Restoring the previous index %s from %s (a build was interrupted).", target, backup)
    os.replace(backup, target)


def remove_leftovers(target: Path) -> None:
    """What builds that died left beside the index (call with the build lock held, after
    `recover`): temporary folders, and the previous index once the new one is in place."""
    stale = list(target.parent.glob(f".{target.name}.tmp-*"))
    if target.exists():
        stale += [p for p in [backup_name(target)] if p.exists()]
    for folder in stale:
        log.warning("Removing %s, left by an interrupted build.", folder)
        shutil.rmtree(folder, ignore_errors=True)


def swap_into_place(tmp: Path, target: Path) -> None:
    backup = backup_name(target)
    if backup.exists():
        shutil.rmtree(backup)
    if target.exists():
        os.replace(target, backup)
    os.replace(tmp, target)
    fsync(target.parent)
    if backup.exists():
        shutil.rmtree(backup)


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is present, of the right size and checksum."""
    fix = f"Rebuild the index: qa index build --index {folder}"
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise IndexCorruptError(f"Index file {path} is missing. {fix}")
        size = path.stat().st_size
        if size != entry.bytes:
            raise IndexCorruptError(
                f"Index file {path} is truncated or altered (size {size}, expected {entry.bytes}). {fix}"
            )
        if sha256_file(path) != entry.sha256:
            raise IndexCorruptError(f"Index file {path} is altered (checksum mismatch). {fix}")
