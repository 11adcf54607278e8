"""Launch a worker of tests/distributed/_workers.py on N CPU ranks with torchrun, as users do.

`--standalone` lets torchrun pick a free port at run time. Every launch has a deadline:
on timeout the whole process group (torchrun and its workers) is killed, so a hung
collective fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def torchrun(*args: str, nproc: int = 2, timeout: float = 240, module: bool = True) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N [-m] ARGS...` from the repo root; never hangs."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           *(["-m"] if module else []), *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"torchrun {' '.join(map(str, args))} timed out after {timeout}s:\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_worker(name: str, out: Path, *args, **kwargs) -> subprocess.CompletedProcess:
    """Run `_workers.<name>(out, *args)` on every rank; assert it succeeded."""
    proc = torchrun("tests.distributed._workers", name, out, *args, **kwargs)
    assert proc.returncode == 0, f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc
