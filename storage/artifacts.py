"""Atomic, checksummed artifact directories (index builds, model heads).

A build is written into a hidden temp directory, every file fsync'd, a manifest with sha256 sums
written last, and the directory renamed into place; `CURRENT` then moves in one os.replace. A crash
at any point leaves the previous build as the one CURRENT names, intact and loadable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.errors import ArtifactError, DiskFull

MANIFEST = "manifest.json"
CURRENT = "CURRENT"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _out_of_space(e: BaseException, where: Path) -> bool:
    """ENOSPC or a full quota, however the writing library reports it: an errno, the OS's
    message inside another error (FAISS, safetensors), or a short write with neither (numpy's
    "57600 requested and 6112 written") on a device with less than 1 MiB left."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if os.strerror(errno.ENOSPC) in str(e) or os.strerror(errno.EDQUOT) in str(e):
        return True
    try:
        fs = os.statvfs(where)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < 1 << 20


@contextmanager
def disk_space(what: str, where: Path) -> Iterator[None]:
    """Turn running out of space while writing `what` into DiskFull, which says what to do."""
    try:
        yield
    except Exception as e:
        if not _out_of_space(e, where):
            raise
        raise DiskFull(
            f"no space left on the device holding {where} while writing {what}; nothing was "
            "made current and the previous version stays in use. Free space there and retry"
        ) from e


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_artifact(
    root: Path,
    name: str,
    write_files: Callable[[Path], None],
    meta: dict[str, Any],
    *,
    make_current: bool = True,
) -> Path:
    """Write a new immutable artifact `root/name`; `write_files(tmpdir)` puts the payload there."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if final.exists():
        raise ArtifactError(f"artifact {final} already exists; artifacts are immutable")
    tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    try:
        with disk_space(f"artifact {name}", root):
            _write_payload(tmp, name, write_files, meta)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_current:
        with disk_space(f"the {CURRENT} pointer", root):
            write_text_atomic(root / CURRENT, name)
    return final


def _write_payload(
    tmp: Path, name: str, write_files: Callable[[Path], None], meta: dict[str, Any]
) -> None:
    """The payload, its sha256 manifest (written last) and every fsync, in `tmp`."""
    tmp.mkdir()
    write_files(tmp)
    payload = sorted(p for p in tmp.rglob("*") if p.is_file())
    files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in payload}
    for p in payload:
        _fsync_file(p)
    for d in {p.parent for p in payload}:
        _fsync_dir(d)
    manifest = {**meta, "name": name, "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    _fsync_file(tmp / MANIFEST)
    _fsync_dir(tmp)


def current(root: Path) -> Path | None:
    """The artifact CURRENT names, or None if nothing was ever built."""
    pointer = root / CURRENT
    if not pointer.exists():
        return None
    return root / pointer.read_text().strip()


def read_manifest(path: Path) -> dict[str, Any]:
    """Load and verify: every file listed is present with its recorded sha256."""
    try:
        manifest: dict[str, Any] = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable manifest ({e}); rebuild it") from e
    for fname, digest in manifest.get("files", {}).items():
        fpath = path / fname
        if not fpath.is_file():
            raise ArtifactError(f"{path}: {fname} is missing; rebuild the artifact")
        if sha256_file(fpath) != digest:
            raise ArtifactError(f"{path}: {fname} fails its sha256 check; refusing to load it")
    return manifest


DELETED = ".tmp-deleted-"


def delete_artifact(root: Path, name: str) -> bool:
    """Delete `root/name`, first renaming it out of sight: a crash mid-way leaves a hidden
    directory that the next call clears, never a half-deleted artifact under its name. False if
    it was not there."""
    for leftover in root.glob(f"{DELETED}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        hidden = root / f"{DELETED}{name}-{uuid.uuid4().hex[:8]}"
        os.rename(root / name, hidden)
    except FileNotFoundError:
        return False
    _fsync_dir(root)
    shutil.rmtree(hidden)
    return True


def remove_stale_temps(root: Path) -> None:
    """Delete half-written builds a crash left behind (they were never visible)."""
    if root.exists():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
