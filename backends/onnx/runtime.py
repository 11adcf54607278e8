"""Run an .onnx file with ONNX Runtime: the interface `pt2e-int8 bench` / `compare` and the tests use.

Imports only onnxruntime and numpy (torch only if installed, for tensor in/out), so it runs
on a board that has just a runtime.

    sess = load_onnx("model.onnx", threads=2)
    outs = sess.run([x])           # list of torch tensors (numpy arrays if torch is absent)
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

# pt2e_int8's package __init__ is lazy: this pulls in no torch or torchao.
from backends.dtypes import InputSpec, from_onnx
from backends.onnx.target import METADATA_TARGET, drift_warning
from pt2e_int8.errors import InputFileError


@functools.cache
def _torch():
    """torch if installed (outputs become tensors), else None (a runtime-only board: numpy out)."""
    try:
        import torch
    except ImportError:
        return None
    return torch



def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Default graph optimizations; `threads` intra-op threads; no spinning.

    Spinning worker threads would steal cores from another runtime timed in the same
    process (bench interleaves ONNX Runtime and ExecuTorch), skewing both.
    """
    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


class OnnxSession:
    """A loaded .onnx file: `run([inputs...])` → list of outputs, in the graph's order."""

    def __init__(self, path: Path, session: ort.InferenceSession) -> None:
        self.path = path
        self.session = session
        self.inputs = session.get_inputs()
        self.output_names = [o.name for o in session.get_outputs()]

    def input_specs(self) -> list[InputSpec]:
        """Each graph input's shape (None for a named dynamic axis) and dtype."""
        return [InputSpec(tuple(d if isinstance(d, int) else None for d in i.shape), from_onnx(i.type))
                for i in self.inputs]

    def run(self, inputs: Sequence) -> list:
        torch = _torch()
        if torch is not None and isinstance(inputs, torch.Tensor) or isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if len(inputs) != len(self.inputs):
            names = ", ".join(f"{i.name}{i.shape}" for i in self.inputs)
            raise ValueError(f"{self.path.name} takes {len(self.inputs)} input(s) ({names}), got {len(inputs)}.")
        feed = {}
        for spec, value in zip(self.inputs, inputs, strict=True):
            array = value.detach().cpu().numpy() if torch is not None and isinstance(value, torch.Tensor) else np.asarray(value)
            want = from_onnx(spec.type, default=None)
            if want is not None and want.name != "bfloat16":  # numpy has no bfloat16: pass as given
                array = array.astype(np.dtype(want.name), copy=False)
            feed[spec.name] = array
        outs = self.session.run(self.output_names, feed)
        return [torch.from_numpy(np.ascontiguousarray(o)) for o in outs] if torch is not None else outs


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> OnnxSession:
    """Load an .onnx file into an ONNX Runtime CPU session.

    Args:
        path: the .onnx file.
        threads: intra-op threads (None: ONNX Runtime's default, one per core).

    Returns:
        An OnnxSession; `sess.run([x, ...])` returns a list of torch tensors.

    Raises:
        InputFileError: the file is missing or is not a loadable ONNX model.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"ONNX file not found: {p}. Check the path, or export one with "
                             "`pt2e-int8 export MODEL -o DIR --format onnx`.")
    try:
        session = ort.InferenceSession(str(p), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  (ORT raises its own Fail/InvalidProtobuf/... types)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise InputFileError(
            f"{p} is not a loadable ONNX model ({first}). The file may be truncated or corrupt, "
            "or not an .onnx file: re-export it."
        ) from e
    why = drift_warning(session.get_modelmeta().custom_metadata_map.get(METADATA_TARGET))
    if why is not None:
        warnings.warn(f"{p.name}: {why}", stacklevel=2)
    return OnnxSession(p, session)
