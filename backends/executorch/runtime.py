"""Load and run a .pte with the ExecuTorch runtime.

Imports only ExecuTorch's C++ runtime bindings (`executorch.extension.pybindings._C`), never
`executorch.runtime` or `portable_lib`: both import `executorch.exir`, the whole compiler stack
(seconds on a board, 19-38 s under qemu), for nothing a loaded program needs. So the `bench`
command starts fast on a board that has just the runtime installed.

    prog = load_pte("model.pte"); outs = prog.run([x])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from pt2e_int8.errors import ExampleInputsError, InputFileError

# A .pte is a flatbuffer whose file identifier (bytes 4..8) starts with "ET".
_MAGIC_OFFSET, _MAGIC = 4, b"ET"


def bindings():
    """ExecuTorch's C++ runtime bindings, the module `portable_lib` re-exports (pinned: executorch 1.5.1).

    torch is imported first: the pip wheel's bindings resolve libtorch from the loaded process.
    """
    import torch  # noqa: F401
    from executorch.extension.pybindings import _C

    return _C


def set_threads(n: int) -> bool:
    """Size XNNPACK's thread pool. Returns False when this runtime build cannot."""
    reset = getattr(bindings(), "_unsafe_reset_threadpool", None)
    if reset is None:
        return False
    reset(int(n))
    return True


def thread_count() -> int | None:
    get = getattr(bindings(), "_threadpool_get_thread_count", None)
    return get() if get else None


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
        self._method = program.load_method(method_name)
        meta = self._method.method_meta()
        self.meta = meta
        self.num_inputs = meta.num_inputs()
        self.num_outputs = meta.num_outputs()

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
            raise ExampleInputsError(
                f"{self.path.name} rejected inputs ({shapes}): {e}. Inputs must have the exported "
                "dtypes and shapes (only the batch dimension may differ)."
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
    et = bindings()
    if threads is not None:
        set_threads(threads)
    try:
        program = et._load_program_from_buffer(data, program_verification=et.Verification.InternalConsistency)
        return PteProgram(path, program, data, method)
    except Exception as e:
        raise InputFileError(
            f"{path} could not be loaded by the ExecuTorch runtime ({type(e).__name__}: {e}). "
            "The file is truncated or corrupt, or needs an operator / backend this runtime lacks: "
            "re-export it with export_pte."
        ) from e
