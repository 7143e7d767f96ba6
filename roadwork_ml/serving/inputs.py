"""Input paths for ``roadwork predict``: what a folder scan finds, and file names as text.

File names on POSIX are bytes; Python hands a name that is not valid UTF-8 over as a ``str``
with lone surrogates (``'caf\\udce9.jpg'``), which no UTF-8 writer (CSV, JSON readers,
Parquet) accepts. Every output therefore carries :func:`escape_path` — valid UTF-8 and
readable, identical to the name for every UTF-8 name without a backslash, and reversible
(:func:`unescape_path`) — plus :func:`path_b64`, the raw bytes in base64, whenever the
escaped form is not the name itself.

:func:`scan_inputs` accounts for every path a scan sees: an image candidate, a file skipped
for its suffix, or a problem with the reason (dangling symlink, folder that cannot be listed,
symlink loop). Nothing is dropped without a trace.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

_ESCAPE = re.compile(rb"\\|[\x80-\xff]+")
_UNESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def escape_path(path: str | os.PathLike) -> str:
    """A valid-UTF-8 text form of a file name: every byte that is not part of valid UTF-8
    becomes ``\\xNN`` and a literal backslash ``\\\\`` (so the mapping is one-to-one);
    every other character is kept as is."""
    raw = os.fsencode(path)
    out, pos = [], 0
    for m in _ESCAPE.finditer(raw):
        out.append(raw[pos : m.start()].decode("utf-8"))
        chunk = m.group()
        if chunk == b"\\":
            out.append("\\\\")
        else:  # a run of non-ASCII bytes: keep valid UTF-8 characters, escape the rest
            out.append(chunk.decode("utf-8", "backslashreplace"))
        pos = m.end()
    out.append(raw[pos:].decode("utf-8"))
    return "".join(out)


def unescape_path(text: str) -> bytes:
    """The raw file name bytes from :func:`escape_path`'s form (``os.fsdecode`` them to open)."""
    out, pos = bytearray(), 0
    for m in _UNESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8")
        out += b"\\" if m.group(1) == "\\" else bytes([int(m.group(1)[1:], 16)])
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def path_b64(path: str | os.PathLike) -> str | None:
    """Base64 of the raw name bytes when :func:`escape_path` changed the name, else None."""
    raw = os.fsencode(path)
    return None if escape_path(path).encode("utf-8") == raw else base64.b64encode(raw).decode("ascii")


def safe_text(text: str) -> str:
    """``text`` with lone surrogates (from undecodable names inside messages) as ``\\udcNN``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class ScanResult:
    """What :func:`scan_inputs` saw; paths are ``str`` as the OS gave them (maybe with surrogates)."""

    files: list[str] = field(default_factory=list)  # image candidates, in order
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    skipped: list[str] = field(default_factory=list)  # files whose suffix is not an image suffix
    folders: list[str] = field(default_factory=list)  # folders that were scanned


def _dangling_reason(path: str) -> str | None:
    if os.path.islink(path) and not os.path.exists(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"dangling symlink: its target {escape_path(target)!r} does not exist"
    return None


def missing_reason(path: str) -> str:
    """Why an explicitly given path that cannot be opened is bad (dangling link or missing)."""
    return _dangling_reason(path) or "FileNotFoundError: no such file or folder"


def _scan_folder(folder: str, result: ScanResult, seen: set[tuple[int, int]]) -> None:
    try:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            result.problems.append((folder, "folder already scanned (a symlink loop, or the same folder given twice)"))
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        result.problems.append((folder, f"cannot list folder: {type(exc).__name__}: {exc.strerror or exc}"))
        return
    result.folders.append(folder)
    for entry in entries:
        path = entry.path
        try:
            if entry.is_dir():  # follows symlinks; loops are caught by ``seen``
                _scan_folder(path, result, seen)
                continue
            is_file = entry.is_file()
        except OSError as exc:
            result.problems.append((path, f"{type(exc).__name__}: {exc.strerror or exc}"))
            continue
        dangling = _dangling_reason(path)
        suffix = Path(path).suffix.lower()
        if dangling is not None:
            target_suffix = Path(os.readlink(path)).suffix.lower()
            if suffix in IMAGE_SUFFIXES or target_suffix in IMAGE_SUFFIXES:
                result.problems.append((path, dangling))
            else:
                result.skipped.append(path)
        elif is_file and suffix in IMAGE_SUFFIXES:
            result.files.append(path)
        elif is_file:
            result.skipped.append(path)
        elif suffix in IMAGE_SUFFIXES:  # fifo, socket, device: never opened (a fifo would block)
            result.problems.append((path, "not a regular file (fifo, socket or device)"))
        else:
            result.skipped.append(path)


def scan_inputs(paths: Iterable[str | os.PathLike]) -> ScanResult:
    """Each folder is scanned recursively (sorted by name, symlinked folders followed once);
    each other path is taken as given (a missing one is reported by the reader, with the
    reason from :func:`missing_reason`)."""
    result = ScanResult()
    seen: set[tuple[int, int]] = set()
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            _scan_folder(p, result, seen)
        else:
            result.files.append(p)
    return result


def describe_search() -> str:
    """What a folder scan looks for, for messages."""
    return "image files (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ", any case) in the folder and its subfolders"
