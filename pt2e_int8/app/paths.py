"""Checks on the paths a command is given, made before any work: an output never lands on one of
the run's inputs, and an output path can be written.

A mistake here is an OutputPathError (exit 2) naming the path and the fix. The staging of `-o`
outputs is in `staging.py`; single-file outputs (`--json`) are written atomically beside their target.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pt2e_int8.errors import OutputPathError


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: the inode when it exists (hard links, symlinks), else
    the resolved path."""
    try:
        st = path.stat()
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", st.st_dev, st.st_ino)


def check_not_inputs(outputs: Iterable[tuple[str, str | os.PathLike]],
                     inputs: Iterable[tuple[str, str | os.PathLike | None]]) -> None:
    """Refuse a run whose output would overwrite one of its own inputs.

    Args:
        outputs: (label, path) of every file the run may write, e.g. ("--json", "r.json").
        inputs: (label, path) of every file it reads; None paths are skipped.
    """
    seen = {}
    for label, path in inputs:
        if path:
            seen.setdefault(_identity(Path(path)), (label, path))
    clashes = []
    for label, path in outputs:
        hit = seen.get(_identity(Path(path)))
        if hit is not None:
            clashes.append(f"{label} {path} is the same file as {hit[0]} {hit[1]}")
    if clashes:
        raise OutputPathError(f"{'; '.join(clashes)}: writing it would destroy an input of this run. "
                              "Pass another output path.")


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """A single output file (`--json FILE`): not a directory or special file, in a writable place."""
    p = Path(path)
    try:
        mode = p.lstat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputPathError(f"{flag} {p} is a directory: pass a file path, e.g. {flag} {p / 'result.json'}.")
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OutputPathError(f"{flag} {p} is not a regular file (a FIFO or device): pass a file path.")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{flag} {p}: {parent} is a file, not a directory. Pass a path in a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {p}: {parent} is not writable. Pass a path in a directory you can write to.")
    return p


def write_output_file(path: str | os.PathLike, text: str, flag: str) -> Path:
    """Write atomically (no half-written file, the old one intact on failure); an OS refusal is the
    user's to fix (exit 2), named with the flag that chose the path."""
    from pt2e_int8.atomic import write_text_atomic

    try:
        return write_text_atomic(path, text)
    except OSError as e:
        raise OutputPathError(f"{flag} {path}: cannot be written ({e.strerror or e}). "
                              "Pass a path you can write to.") from e
