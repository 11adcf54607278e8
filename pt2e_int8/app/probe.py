"""Load and run a user's artifacts once in a child process before `bench` / `compare` touch them.

A damaged `.pte` can abort the process from native code: ExecuTorch 1.5.1's XNNPACK delegate logs
a corrupt name through pybind11, which throws a UnicodeDecodeError out of a noexcept frame, and
C++ calls terminate (SIGABRT; 4 of 150 one-byte mutations). Neither ExecuTorch's flatbuffer
verifier (it checks the program, not the delegate's payload) nor an `except` can stop that in the
process that loads the file. So the child loads and runs each file first, on the inputs the command
will use; if the child dies by a signal or hangs, the file is reported as corrupt (exit 2) and the
command never loads it. Python-level failures are not judged here: the command meets them again
in-process and explains them. Costs one interpreter start, `import torch` and one load of each
runtime. `bench` starts the probe before importing its own runtime (`start_probe`), but by then the
command has imported torch, so little overlaps: 2.55 s instead of 1.26 s without a probe for the
digits .pte on a 2-core Xeon (bench/BENCH_STARTUP.md).

    python -m pt2e_int8.app.probe [--inputs FILE] [--arity N] [--batch N] ARTIFACT...
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from pt2e_int8.errors import InputFileError

# Loading and one run of a real model takes seconds; a mutated file that sends the runtime
# into a loop must not hang the command.
TIMEOUT_S = float(os.environ.get("PT2E_INT8_PROBE_TIMEOUT", "300"))
_START, _LOADED, _DONE = "probing ", "loaded ", "probe done"
# Prepended to the child's command line. For an emulator that cannot start the guest's own
# interpreter by itself (qemu-user without binfmt_misc: tools/arm sets it to its qemu command).
LAUNCHER_ENV = "PT2E_INT8_PROBE_LAUNCHER"
_NATIVE_ERROR = re.compile(r"what\(\)|terminate called|Assertion|Segmentation|[A-Za-z]+Error\b")


def probe_artifacts(paths: list[str | os.PathLike], *, inputs: str | None = None, arity: int | None = None,
                    batch: int | None = None, first_batch_only: bool = False, timeout: float | None = None) -> None:
    """Raise InputFileError for the first artifact whose loading or running kills a child process.

    Args:
        paths: .pte / .onnx files, already checked to exist.
        inputs: the command's --inputs file (its batches are run), else random inputs of `batch`
            (None: timing.default_batch, what bench times).
        arity: number of model inputs, to read a list of tensors in `inputs` as batches.
        first_batch_only: run only the first batch of `inputs` (what bench times).
    """
    start_probe(paths, inputs=inputs, arity=arity, batch=batch, first_batch_only=first_batch_only,
                timeout=timeout).wait()


class Probe:
    """A probe started in the background: the command imports its runtimes while the child does the
    same, so on a multi-core device the probe adds little more than one load and one run of the file."""

    def __init__(self, proc: subprocess.Popen, paths: list, inputs: str | None, batch: int | None,
                 timeout: float):
        self.proc, self.paths, self.inputs, self.batch, self.timeout = proc, paths, inputs, batch, timeout
        self.started = time.monotonic()

    def wait(self) -> None:
        """Raise InputFileError if the child died by a signal or hung; return when it finished."""
        left = max(self.timeout - (time.monotonic() - self.started), 0.01)
        try:
            stdout, stderr = self.proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, _ = self.proc.communicate()
            raise InputFileError(
                f"{_current(stdout or '', self.paths)}: loading and running it once did not finish in "
                f"{self.timeout:.0f} s. The file is probably corrupt: re-create it with `pt2e-int8 export` "
                "(set PT2E_INT8_PROBE_TIMEOUT for a huge model)."
            ) from None
        _judge(self.proc.returncode, stdout, stderr, self.paths, self.inputs, self.batch)

    def cancel(self) -> None:
        """Stop the child (the command failed before it needed the verdict)."""
        self.proc.kill()
        self.proc.communicate()


def start_probe(paths: list[str | os.PathLike], *, inputs: str | None = None, arity: int | None = None,
                batch: int | None = None, first_batch_only: bool = False, timeout: float | None = None) -> Probe:
    """Start the child that loads and runs `paths` once (see probe_artifacts); `.wait()` judges it."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [*shlex.split(os.environ.get(LAUNCHER_ENV, "")), sys.executable, "-m", "pt2e_int8.app.probe"]
    if batch:
        cmd += ["--batch", str(batch)]
    if inputs:
        cmd += ["--inputs", str(inputs)]
    if arity:
        cmd += ["--arity", str(arity)]
    if first_batch_only:
        cmd += ["--first-batch-only"]
    cmd += [str(p) for p in paths]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", env=env)
    return Probe(proc, [str(p) for p in paths], inputs, batch, timeout or TIMEOUT_S)


def _judge(returncode: int, stdout: str, stderr: str, paths, inputs, batch) -> None:
    if _DONE in stdout.splitlines():
        return
    current = _current(stdout, paths)
    loaded = f"{_LOADED}{current}" in stdout.splitlines()
    how = _how(returncode)
    # The native runtime's last words ("terminate called ... what(): UnicodeDecodeError ..."), if any.
    detail = next((ln.strip() for ln in reversed(stderr.splitlines()) if _NATIVE_ERROR.search(ln)), "")
    detail = f": {detail[:200]}" if detail else ""
    if loaded:
        source = (f"the batches of {inputs}" if inputs else f"random inputs of batch {batch}" if batch
                  else "random inputs")
        raise InputFileError(
            f"{current}: the runtime crashed running it on {source} (a test process {how}{detail}). The file "
            "loads, so check the inputs' values (integer inputs such as token ids must be within their tables) "
            "and shapes; if they are right, the file is corrupt: re-create it with `pt2e-int8 export`."
        )
    raise InputFileError(
        f"{current}: the runtime crashed loading it (a test process {how}{detail}). The file is corrupt or was "
        "not written for this runtime version: re-create it with `pt2e-int8 export`."
    )


def _how(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _current(stdout: str, paths) -> str:
    started = [ln[len(_START):] for ln in stdout.splitlines() if ln.startswith(_START)]
    return started[-1] if started else str(paths[0])


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pt2e_int8.app.probe")
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--inputs")
    parser.add_argument("--arity", type=int)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--first-batch-only", action="store_true")
    args = parser.parse_args(argv)
    from backends.registry import load_artifact
    from pt2e_int8.app.timing import default_batch, synthetic_inputs

    batches = None
    if args.inputs:
        from pt2e_int8.app.inputs import load_batches

        try:
            batches = load_batches(args.inputs, arity=args.arity)
            batches = batches[:1] if args.first_batch_only else batches
        except Exception:  # noqa: BLE001  (the command reports a bad inputs file itself)
            batches = None
    for path in args.artifacts:
        print(f"{_START}{path}", flush=True)
        try:
            prog = load_artifact(path)
            print(f"{_LOADED}{path}", flush=True)
            for batch in batches or [synthetic_inputs(prog, args.batch or default_batch(prog, path))]:
                prog.run(list(batch))
        except Exception:  # noqa: BLE001, S112  (Python errors are the command's to explain)
            continue
    print(_DONE, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
