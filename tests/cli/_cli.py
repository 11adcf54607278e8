"""Run the installed `pt2e-int8` command in a subprocess, as a user would."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_SCRIPT = Path(sys.executable).with_name("pt2e-int8")
# The installed console script when present (what users run), else the module.
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pt2e_int8.app.cli"]


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def run_many(cases: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run independent invocations a few at a time: most of each is interpreter start-up."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {k: pool.submit(run_cli, *args, cwd=cwd) for k, args in cases.items()}
        return {k: f.result() for k, f in futures.items()}




def run_in_process(*args, cwd: Path, capsys) -> tuple[int, str, str]:
    """`pt2e_int8.app.cli.main` in this interpreter: for the many small error cases, without the
    seconds of start-up each subprocess costs. Same code path after the interpreter starts."""
    import contextlib

    from pt2e_int8.app.cli import main

    capsys.readouterr()
    with contextlib.chdir(cwd):
        rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err
