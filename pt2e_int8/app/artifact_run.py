"""Run a user's artifact on the user's inputs; a failure says which input does not fit and how.

Runtimes answer a bad input with terse codes ("set_inputs() failed with error 0x10"); the
artifact's own signature (`input_specs()`: dtype, shape, and for a `.pte` the upper bound of a
dynamic dimension) names the mismatch instead. Whatever the signature cannot explain (an index
outside its table, a value the runtime rejects) is quoted whole, not blamed on dtypes or shapes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from pt2e_int8.errors import ExampleInputsError


def _shape(t) -> list[int]:
    return list(getattr(t, "shape", []))


def _dtype_name(t) -> str:
    return str(getattr(t, "dtype", type(t).__name__)).removeprefix("torch.")


def signature_mismatch(prog, inputs: list, path: Path | str) -> str | None:
    """What about `inputs` does not fit the artifact's signature, in words; None if nothing visible."""
    try:
        specs = prog.input_specs()
    except Exception:  # noqa: BLE001  (a signature we cannot read: let the runtime speak)
        return None
    if len(inputs) != len(specs):
        return f"{Path(path).name} takes {len(specs)} input(s), got {len(inputs)}"
    is_pte = str(path).lower().endswith(".pte")
    problems = []
    for i, (t, spec) in enumerate(zip(inputs, specs, strict=True)):
        if not isinstance(t, torch.Tensor):
            problems.append(f"input {i} is a {type(t).__name__}, not a tensor")
            continue
        if spec.dtype is not None and _dtype_name(t) != spec.dtype.name:
            problems.append(f"input {i} is {_dtype_name(t)}, the file takes {spec.dtype.name}")
        if t.dim() != len(spec.shape):
            problems.append(f"input {i} has {t.dim()} dimensions {_shape(t)}, the file takes {len(spec.shape)} "
                            f"{list(spec.shape)}")
            continue
        for d, (got, want) in enumerate(zip(t.shape, spec.shape, strict=True)):
            if want is None:
                continue
            if d == 0 and is_pte and got != want:
                # Only a failed run gets here: a smaller batch fails only in a static-shape program.
                kind = (f"above the bound {want} this .pte was exported with (its static batch, or the bound of "
                        "a dynamic one: activation memory is planned for it)" if got > want else
                        f"but this .pte was exported with static shapes for batch {want} (export's default)")
                problems.append(
                    f"input {i} has batch {got}, {kind}: run batches of {'at most ' if got > want else ''}{want}, "
                    "or re-export with `--max-batch N` (export_pte(max_batch=N)) for any batch from 1 to N")
            elif got > want or (not is_pte and got != want):
                problems.append(f"input {i} has size {got} in dimension {d}, the file takes {want}")
    return "; ".join(problems) or None


def run_artifact(prog, inputs: list, path: Path | str, what: str) -> list:
    """`prog.run(inputs)`; a failure is an ExampleInputsError naming the mismatch and the fix.

    Args:
        what: which inputs these are, for the message ("--inputs batch 2", "random inputs").
    """
    try:
        return prog.run(list(inputs))
    except Exception as e:  # noqa: BLE001  (runtimes raise their own types)
        shapes = ", ".join(f"{_shape(t)}:{_dtype_name(t)}" for t in inputs)
        mismatch = signature_mismatch(prog, list(inputs), path)
        if mismatch:
            raise ExampleInputsError(f"{path}: {what} ({shapes}) do not fit: {mismatch}.") from e
        # The runtime wrappers' own ExampleInputsError guesses at dtypes and shapes: quote the runtime.
        root = e.__cause__ if isinstance(e, ExampleInputsError) and e.__cause__ is not None else e
        raise ExampleInputsError(
            f"{path}: the runtime rejected {what} ({shapes}): {_whole(root)}. Their dtypes and shapes fit the file's "
            "signature, so check their values (integer inputs such as token ids must be within their tables)."
        ) from e


@contextlib.contextmanager
def stderr_silenced():
    """Mute file descriptor 2 (where the C++ runtimes log) around an expected refusal."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def batch_of(prog) -> int | None:
    """The batch a `.pte` takes: its static batch, or the upper bound of a dynamic one (None if unknown)."""
    try:
        shape = prog.input_specs()[0].shape
    except Exception:  # noqa: BLE001  (no readable signature: run as given)
        return None
    return shape[0] if shape and isinstance(shape[0], int) else None


def run_in_chunks(prog, inputs: list, path: Path | str, what: str) -> list:
    """`run_artifact` on inputs of any batch: a `.pte` takes exactly its static batch (the default
    export) or at most its dynamic bound, so larger or smaller batches run in chunks of that size,
    the last padded with copies of its final sample and trimmed after. Samples must not interact
    across the batch (true of inference models)."""
    chunk = batch_of(prog) if str(path).lower().endswith(".pte") else None
    tensors = [t for t in inputs if isinstance(t, torch.Tensor) and t.dim() > 0]
    n = tensors[0].shape[0] if tensors else None
    if chunk is None or n is None or n == chunk or any(t.shape[0] != n for t in tensors):
        return run_artifact(prog, inputs, path, what)
    parts = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        part = [_padded(t[start:start + size], chunk) if isinstance(t, torch.Tensor) and t.dim() > 0 else t
                for t in inputs]
        parts.append([o[:size] if isinstance(o, torch.Tensor) and o.dim() > 0 else o
                      for o in run_artifact(prog, part, path, f"{what} (samples {start}..{start + size - 1})")])
    return [torch.cat(outs) if isinstance(outs[0], torch.Tensor) and outs[0].dim() > 0 else outs[0]
            for outs in zip(*parts, strict=True)]


def _padded(t: torch.Tensor, size: int) -> torch.Tensor:
    if t.shape[0] == size:
        return t
    return torch.cat([t, t[-1:].expand(size - t.shape[0], *t.shape[1:])])


def _whole(e: Exception, limit: int = 400) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return f"{type(e).__name__}: {text}" if not text.startswith(type(e).__name__) else text
