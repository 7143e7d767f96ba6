"""Atomic, hashed artifact files.

Every file is written to a temporary sibling and renamed into place, so a reader never
sees half a file. An artifact directory carries ``MANIFEST.json`` with the sha256 and size
of each file; :func:`verify_dir` recomputes them on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

MANIFEST_NAME = "MANIFEST.json"


class IntegrityError(RuntimeError):
    """A file's bytes do not match the hash recorded when it was written."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; return its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_bytes(data)


def atomic_write_json(path: str | Path, obj: Any) -> str:
    return atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


class atomic_path:
    """Context manager yielding a temp path for writers that need a filename (parquet, safetensors).

    >>> with atomic_path(out) as tmp: pq.write_table(table, tmp)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_manifest(directory: str | Path, extra: dict | None = None, skip: tuple[str, ...] = ()) -> dict:
    """Hash every file under ``directory`` (recursively) into ``MANIFEST.json``; return it."""
    directory = Path(directory)
    files = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if not p.is_file() or rel == MANIFEST_NAME or p.name.startswith(".") or rel.split("/")[0] in skip:
            continue
        files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    manifest = {"files": files, **(extra or {})}
    atomic_write_json(directory / MANIFEST_NAME, manifest)
    return manifest


def verify_dir(directory: str | Path) -> dict:
    """Recompute every hash listed in ``MANIFEST.json``; raise :class:`IntegrityError` on a mismatch."""
    directory = Path(directory)
    mpath = directory / MANIFEST_NAME
    if not mpath.exists():
        raise IntegrityError(f"{directory} has no {MANIFEST_NAME}: it was not written by roadwork or is incomplete")
    manifest = json.loads(mpath.read_text())
    for rel, meta in manifest["files"].items():
        p = directory / rel
        if not p.exists():
            raise IntegrityError(f"{p} is listed in the manifest but missing")
        digest = sha256_file(p)
        if digest != meta["sha256"]:
            raise IntegrityError(f"{p}: sha256 {digest[:12]}… does not match the manifest's {meta['sha256'][:12]}…")
    return manifest
