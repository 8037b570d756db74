"""An index folder on disk, made durable: file checksums, fsync, file locks and the build lock,
and the swap of a freshly written folder into place (with the recovery of one a crash cut
short). Used by the life of an index (qa.index) and by the stores that keep their files in the
folder (qa.stores.local); it knows nothing of either.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from qa.cache import write_atomic
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


VERIFIED = ".verified.json"  # what an earlier open checked: each file's checksum and its stat
VERIFIED_MARGIN_NS = 2_000_000_000  # a file changed this close to a check is hashed again (coarse clocks)


def verify_files(folder: Path, manifest: Manifest, *, full: bool = False) -> None:
    """Every file the manifest lists is present, of the right size and checksum.

    Hashing is what costs (about 7 s for the 8.8 GB of a million passages), so a successful check
    is remembered in `VERIFIED`: a file whose size, times, inode and device are what they were
    when it was hashed, and that had not changed for `VERIFIED_MARGIN_NS` before (a write in the
    same clock tick leaves the times as they were), is not hashed again. Any write, truncation or
    copy changes the stat, so it is hashed. `full` hashes every file whatever was remembered
    (`qa index info --verify`: for corruption no write explains, such as a failing disk)."""
    fix = f"Rebuild the index: qa index build --index {folder}"
    checked_ns = time.time_ns()
    known = {} if full else _remembered(folder)
    seen: dict[str, list[int | str]] = {}
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise IndexCorruptError(f"Index file {path} is missing. {fix}")
        st = path.stat()
        if st.st_size != entry.bytes:
            raise IndexCorruptError(
                f"Index file {path} is truncated or altered (size {st.st_size}, expected {entry.bytes}). {fix}"
            )
        stamp: list[int | str] = [entry.sha256, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        if known.get(name) == stamp:
            seen[name] = stamp
            continue
        if sha256_file(path) != entry.sha256:
            raise IndexCorruptError(f"Index file {path} is altered (checksum mismatch). {fix}")
        if max(st.st_mtime_ns, st.st_ctime_ns) <= checked_ns - VERIFIED_MARGIN_NS:
            seen[name] = stamp
    if seen != known:
        _remember(folder, seen)


def _remembered(folder: Path) -> dict[str, list[int | str]]:
    try:
        d = json.loads((folder / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = d.get("files") if isinstance(d, dict) else None
    return {str(k): v for k, v in files.items() if isinstance(v, list)} if isinstance(files, dict) else {}


def _remember(folder: Path, files: dict[str, list[int | str]]) -> None:
    """Best effort: a folder this process may not write is simply hashed again next time."""
    try:
        write_atomic(folder / VERIFIED, json.dumps({"files": files}, sort_keys=True).encode("utf-8"))
    except OSError as exc:
        log.debug("Cannot remember the checked files of %s (%s); they will be hashed on every open.", folder, exc)
