"""Load and run a .pte with the ExecuTorch runtime.

Imports only ExecuTorch's C++ runtime bindings (`executorch.extension.pybindings._C`), never
`executorch.runtime` or `portable_lib`: both import `executorch.exir`, the whole compiler stack
(seconds on a board, 19-38 s under qemu), for nothing a loaded program needs. So the `bench`
command starts fast on a board that has just the runtime installed.

    prog = load_pte("model.pte"); outs = prog.run([x])
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from backends.compat.executorch import load_program, reset_threadpool, threadpool_size
from backends.dtypes import InputSpec, from_c10
from pt2e_int8.errors import ExampleInputsError, InputFileError

# A .pte is a flatbuffer whose file identifier (bytes 4..8) starts with "ET".
_MAGIC_OFFSET, _MAGIC = 4, b"ET"


def set_threads(n: int) -> bool:
    """Size XNNPACK's thread pool. Returns False when this runtime build cannot."""
    try:
        return reset_threadpool(n)
    except ImportError:
        return False


def thread_count() -> int | None:
    return threadpool_size()


# What ExecuTorch's threadpool prints to the process's stderr (fd 2) the first time a method
# with an XNNPACK delegate loads: it probes ARM-only sysfs files on every CPU. Harmless.
_CPUINFO_CHATTER = re.compile(r"^\[cpuinfo_utils\.cpp:\d+\] ")
_chatter_seen = False


@contextlib.contextmanager
def _without_cpuinfo_chatter():
    """Drop the cpuinfo probe lines from native stderr during the first method load; every
    other line written meanwhile is passed through unchanged."""
    global _chatter_seen
    if _chatter_seen:
        yield
        return
    _chatter_seen = True
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [ln for ln in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _CPUINFO_CHATTER.match(ln)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _check_file(path: Path) -> bytes:
    if not path.exists():
        raise InputFileError(f"{path}: no such .pte file. Check the path, or write it with export_pte.")
    if path.is_dir():
        raise InputFileError(f"{path} is a directory, not a .pte file.")
    data = path.read_bytes()
    if len(data) < 8 or data[_MAGIC_OFFSET:_MAGIC_OFFSET + 2] != _MAGIC:
        raise InputFileError(
            f"{path} is not an ExecuTorch program (no 'ET' flatbuffer identifier, {len(data)} bytes). "
            "Pass a .pte written by export_pte or ExecuTorch's to_executorch()."
        )
    return data


class PteProgram:
    """A loaded .pte method, callable with a list of tensors."""

    def __init__(self, path: Path, program, data: bytes, method_name: str = "forward") -> None:
        self.path = path
        self._data = data  # the program may point into this buffer: keep it alive as long as the program
        self._program = program
        self.method_name = method_name
        with _without_cpuinfo_chatter():
            self._method = program.load_method(method_name)
        meta = self._method.method_meta()
        self.num_inputs = meta.num_inputs()
        self.num_outputs = meta.num_outputs()

    def input_specs(self) -> list[InputSpec]:
        """Each input's shape (a dynamic dimension at its upper bound) and dtype."""
        meta = self._method.method_meta()
        return [InputSpec(tuple(meta.input_tensor_meta(i).sizes()), from_c10(meta.input_tensor_meta(i).dtype()))
                for i in range(self.num_inputs)]

    def run(self, inputs: Sequence[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        """Execute once. Inputs in the order of the model's forward; returns every output."""
        if isinstance(inputs, torch.Tensor):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) != self.num_inputs:
            raise ExampleInputsError(
                f"{self.path.name} takes {self.num_inputs} input(s), got {len(inputs)}."
            )
        try:
            outputs = self._method([t.contiguous() for t in inputs])
        except RuntimeError as e:
            shapes = ", ".join(f"{list(t.shape)}:{t.dtype}" for t in inputs)
            want = ", ".join(f"{list(spec.shape)}:{spec.dtype}" for spec in self.input_specs())
            raise ExampleInputsError(
                f"{self.path.name} rejected inputs ({shapes}): {e}. It takes ({want}); the batch dimension "
                "may be smaller only in a program exported with a dynamic batch (export_pte's result and "
                "report.json say which: 'shapes')."
            ) from e
        return [o.clone() if isinstance(o, torch.Tensor) else o for o in outputs]

    __call__ = run


def load_pte(path: str | os.PathLike, *, threads: int | None = None, method: str = "forward") -> PteProgram:
    """Load a .pte for execution.

    Args:
        path: the .pte file.
        threads: size of the XNNPACK thread pool (process-wide), if given.
        method: the method to load.

    Raises:
        InputFileError: the file is missing, not a .pte, truncated or corrupt.

    Example:
        outs = load_pte("out/model.pte").run([torch.randn(1, 64)])
    """
    path = Path(path)
    data = _check_file(path)
    if threads is not None:
        set_threads(threads)
    try:
        program = load_program(data)
        return PteProgram(path, program, data, method)
    except Exception as e:
        raise InputFileError(
            f"{path} could not be loaded by the ExecuTorch runtime ({type(e).__name__}: {e}). "
            "The file is truncated or corrupt, or needs an operator / backend this runtime lacks: "
            "re-export it with export_pte."
        ) from e
