"""Build a command's output files in a staging directory; move them into place only on success.

A failed run (bad input, a lowering error, Ctrl-C) leaves the user's existing files untouched:
nothing is renamed until every step has finished, and each rename is atomic (same filesystem).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pt2e_int8.atomic import default_file_mode
from pt2e_int8.errors import InputFileError


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden directory inside `out_dir`; on success rename its files into `out_dir`.

    Example:
        with staged_output("out") as stage:
            (stage / "model.pte").write_bytes(data)   # out/model.pte appears only at the end
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputFileError(f"-o {out} is an existing file, not a directory: pass a directory path for the outputs.")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pt2e-int8-staging-", dir=out) as tmp:
        stage = Path(tmp)
        yield stage
        staged = sorted(f for f in stage.iterdir() if f.is_file())
        check_targets(out, [f.name for f in staged])  # all or nothing: no rename can fail on a directory
        mode = default_file_mode()
        for f in staged:
            os.chmod(f, mode)
            os.replace(f, out / f.name)


def check_targets(out_dir: str | os.PathLike, names: list[str]) -> None:
    """A directory where an output file goes would fail its rename: say so before any work."""
    blocked = [str(Path(out_dir) / n) for n in names if (Path(out_dir) / n).is_dir()]
    if blocked:
        raise InputFileError(f"{', '.join(blocked)}: a directory is in the way of an output file. "
                             "Move it away or pass another -o directory.")

