"""Input files for --calibration, --example-inputs and --inputs: `.pt` or `.npz`, as batches.

A batch is a tuple of positional input tensors. A `.pt` file (loaded with weights_only=True,
so it cannot run code) holds a tensor (one batch, one input), a tuple/list of tensors (one
batch, positional inputs) or a list of such tuples (several batches). When the model takes
one input, a list of tensors is read as several batches of it. An `.npz` holds one batch:
its arrays, in stored order, are the positional inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pt2e_int8.errors import CalibrationError, InputFileError

Batch = tuple[torch.Tensor, ...]

_SHAPE_HELP = ("a .pt holding a tensor, a tuple of tensors, or a list of such tuples (torch.save), "
               "or an .npz whose arrays are the positional inputs (numpy.savez)")


def _load_pt(path: Path):
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001  (unpickling errors have many types)
        # torch's own text suggests weights_only=False, which would run code from the file: not quoted.
        raise InputFileError(
            f"{path}: cannot be read as tensors ({type(e).__name__}). It must be {_SHAPE_HELP}; "
            "only tensors, tuples and lists load with weights_only=True, which cannot run code from the file."
        ) from e


def _load_npz(path: Path) -> list[Batch]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[k] for k in data.files]
    except Exception as e:  # noqa: BLE001
        raise InputFileError(f"{path}: not a readable .npz ({type(e).__name__}: {e}). It must be {_SHAPE_HELP}.") from e
    if not arrays:
        raise InputFileError(f"{path}: the .npz holds no arrays. It must be {_SHAPE_HELP}.")
    return [tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)]


def _is_tensor_seq(obj) -> bool:
    return isinstance(obj, tuple | list) and len(obj) > 0 and all(isinstance(t, torch.Tensor) for t in obj)


def _as_batches(obj, path: Path, arity: int | None) -> list[Batch]:
    if isinstance(obj, torch.Tensor):
        return [(obj,)]
    if _is_tensor_seq(obj):
        if arity == 1 and len(obj) > 1:  # several batches of a one-input model
            return [(t,) for t in obj]
        return [tuple(obj)]
    if isinstance(obj, list | tuple) and obj and all(_is_tensor_seq(b) or isinstance(b, torch.Tensor) for b in obj):
        return [(b,) if isinstance(b, torch.Tensor) else tuple(b) for b in obj]
    raise InputFileError(f"{path}: holds a {type(obj).__name__} of an unexpected layout; it must be {_SHAPE_HELP}.")


def load_batches(path: str | Path, *, arity: int | None = None) -> list[Batch]:
    """Read an input file as a list of batches.

    Args:
        path: a .pt or .npz file.
        arity: how many positional inputs the model takes, when known (disambiguates a list of tensors).

    Returns:
        A non-empty list of tuples of tensors.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file. Pass {_SHAPE_HELP}.")
    if not path.is_file():  # a directory, FIFO or device: reading it fails or blocks
        raise InputFileError(f"{path} is not a regular file. Pass {_SHAPE_HELP}.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        batches = _load_npz(path)
    elif suffix in (".pt", ".pth"):
        batches = _as_batches(_load_pt(path), path, arity)
    else:
        raise InputFileError(f"{path}: unknown input file kind {suffix!r}; pass {_SHAPE_HELP}.")
    if not batches:
        raise InputFileError(f"{path}: holds no batches; it must be {_SHAPE_HELP}.")
    return batches


def check_finite(batches: list[Batch], path: str | Path) -> None:
    """NaN/Inf in calibration data would become infinite scales: name every bad batch."""
    bad = [f"batch {b} input {i}" for b, batch in enumerate(batches) for i, t in enumerate(batch)
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise CalibrationError(
            f"{path}: NaN or Inf values in {shown}. Observers would turn them into infinite scales; "
            "clean the data (e.g. torch.nan_to_num) or drop those samples, then re-run."
        )
