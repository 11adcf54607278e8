"""Atomic file output: write to a temporary name beside the target, rename into place.

A failed export never leaves a half-written file and never clobbers the user's
existing file; the rename is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pt2e_int8.errors import OutputPathError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it to `path`, else delete it.

    Example:
        with atomic_path("out/model.pte") as tmp:
            tmp.write_bytes(data)
    """
    target = check_file_target(path, "the output")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise OutputPathError(f"{target}: cannot write in {target.parent} ({e.strerror or e}). "
                              "Pass a path in a directory you can write to.") from e
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        try:
            os.replace(tmp, target)
        except OSError as e:
            raise OutputPathError(f"{target}: cannot be replaced ({e.strerror or e}); it is unchanged. "
                                  "Make it writable or pass another path.") from e
    finally:
        tmp.unlink(missing_ok=True)


def check_file_target(path: str | os.PathLike, what: str) -> Path:
    """A path a file can be written to: not empty, not a directory or a special file (FIFO, device).

    Raises:
        OutputPathError: naming the path and the fix.
    """
    if not os.fspath(path).strip():
        raise OutputPathError(f"{what}: the path is empty. Pass a file path such as out/model.pte.")
    target = Path(path)
    if target.is_dir():
        raise OutputPathError(f"{what}: {target} is a directory. Pass a file path inside it, e.g. "
                              f"{target / ('model' + (target.suffix or '.bin'))}.")
    if target.exists() and not target.is_file():
        raise OutputPathError(f"{what}: {target} is not a regular file (a FIFO or device). Pass a file path.")
    return target


def default_file_mode() -> int:
    """The mode a plain open() would give (0666 minus the umask); mkstemp's 0600 is for temporaries."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as e:  # a full disk, a quota
            raise OutputPathError(f"{path}: cannot be written ({e.strerror or e}); any earlier file there is "
                                  "unchanged. Free space or pass another path.") from e
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())
