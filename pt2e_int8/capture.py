"""torch.export with a dynamic batch dimension, and errors a user can act on.

Shared by the core workflow and both backends, so a model calibrated at batch 32 runs
at batch 450 and the .pte / .onnx accept any batch from the same export.

Order of attempts (first that works wins; every fallback warns):
  1. dim 0 of every tensor input is one `Dim("batch")`; a batch-1 example is traced
     repeated to batch 2, since torch.export specializes a size-1 dimension;
  2. `Dim.AUTO` on dim 0: torch.export keeps dynamic whatever the model allows;
  3. static shapes, as given.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import traceback
import warnings
from collections.abc import Sequence

import torch
from torch.export import Dim
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from pt2e_int8.errors import ExampleInputsError, ExportError

# Tracing a batch-1 example at this size keeps the batch dimension symbolic.
_TRACE_BATCH = 2


def as_input_tuple(example_inputs) -> tuple:
    """A tensor, or a tuple/list of tensors, as the positional-argument tuple export wants."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, Sequence):
        return tuple(example_inputs)
    raise ExampleInputsError(
        f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}."
    )


def describe_inputs(args: tuple) -> str:
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"Tensor{list(a.shape)}:{str(a.dtype).removeprefix('torch.')}")
        else:
            parts.append(type(a).__name__)
    return "(" + ", ".join(parts) + ")"


def _signature(model: torch.nn.Module) -> str:
    try:
        return f"{type(model).__name__}.forward{inspect.signature(model.forward)}"
    except (TypeError, ValueError):
        return f"{type(model).__name__}.forward(...)"


def check_example_inputs(model: torch.nn.Module, args: tuple) -> None:
    """Run the model once eagerly; a failure becomes an error with the expected signature."""
    try:
        with torch.no_grad():
            model(*args)
    except Exception as e:  # noqa: BLE001  (any failure here is the inputs not fitting the model)
        raise ExampleInputsError(
            f"The example inputs {describe_inputs(args)} do not run through the model: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            f"It expects {_signature(model)}. Pass example inputs that match it "
            "(positional tensors with a batch dimension first)."
        ) from e


def _batch_shapes(args: tuple, dim) -> tuple:
    return tuple({0: dim} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in args)


def _tile_batch(args: tuple) -> tuple:
    return tuple(
        a.repeat(_TRACE_BATCH, *([1] * (a.dim() - 1))) if isinstance(a, torch.Tensor) and a.dim() > 0 else a
        for a in args
    )


def _user_frame(e: BaseException) -> str | None:
    """The innermost traceback line in the user's code, from the exception or its text."""
    lines = str(e).splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith('File "') and "site-packages" not in stripped:
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"{stripped}: `{code}`" if code else stripped
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "site-packages" not in f.filename
              and "/pt2e_int8/" not in f.filename]
    return f'File "{frames[-1].filename}", line {frames[-1].lineno}: {frames[-1].line}' if frames else None


def _export_error(model: torch.nn.Module, e: BaseException) -> ExportError:
    text = str(e)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    where = _user_frame(e)
    if "data-dependent" in text or "GuardOnDataDependent" in type(e).__name__:
        fix = ("Python control flow on tensor values cannot be traced: rewrite it with torch.cond "
               "(or torch.where for elementwise choices), or move it out of forward.")
    elif "Constraints violated" in text or "specialized" in text:
        fix = "pass dynamic_shapes= matching how the model uses its input shapes, or None for static shapes."
    else:
        fix = ("see the construct above; torch.export runs non-strict here (strict=False), so unsupported "
               "Python is usually a data-dependent branch (use torch.cond) or an untraceable call.")
    at = f" at {where}" if where else ""
    return ExportError(
        f"torch.export could not trace {type(model).__name__}{at}: {type(e).__name__}: {first[:300]}. Fix: {fix}"
    )


def _has_dynamic_batch(ep: torch.export.ExportedProgram) -> bool:
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) and val.dim() > 0 and not is_concrete_int(val.shape[0]):
                return True
    return False


def export_model(
    model: torch.nn.Module, example_inputs, dynamic_shapes="batch", *, check_inputs: bool = True
) -> torch.export.ExportedProgram:
    """torch.export `model` (non-strict) with a dynamic batch dimension when it can be had.

    Args:
        model: the float module.
        example_inputs: a tensor or tuple of tensors, batch first.
        dynamic_shapes: "batch" (default: dim 0 of every input, with fallbacks), None for
            static shapes, or a torch.export `dynamic_shapes` spec used as given.
        check_inputs: run the model eagerly first so a mismatch names the signature.

    Returns:
        The ExportedProgram.
    """
    args = as_input_tuple(example_inputs)
    if check_inputs:
        check_example_inputs(model, args)
    if dynamic_shapes != "batch":
        try:
            return torch.export.export(model, args, dynamic_shapes=dynamic_shapes, strict=False)
        except Exception as e:
            raise _export_error(model, e) from e

    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.dim() > 0]
    batch1 = bool(tensors) and all(t.shape[0] == 1 for t in tensors)
    attempts = [
        ("batch", _tile_batch(args) if batch1 else args, _batch_shapes(args, Dim("batch"))),
        ("auto", args if not batch1 else _tile_batch(args), _batch_shapes(args, Dim.AUTO)),
        ("static", args, None),
    ]
    first_error: BaseException | None = None
    last_error: BaseException | None = None
    for kind, trace_args, shapes in attempts:
        try:
            # torch prints the partial graph of each failed attempt to stderr; the fallbacks are ours.
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                ep = torch.export.export(model, trace_args, dynamic_shapes=shapes, strict=False)
        except Exception as e:  # noqa: BLE001  (each attempt's failure decides the next attempt)
            first_error, last_error = first_error or e, e
            continue
        if kind == "auto" and not _has_dynamic_batch(ep):
            # Dim.AUTO specialized the batch of a batch-2 trace: re-export at the user's shapes.
            kind = "static"
            ep = torch.export.export(model, args, strict=False)
        if kind != "batch":
            reason = str(first_error).strip().splitlines()[0][:200] if first_error else ""
            what = ("Dim.AUTO: the batch stays dynamic only as far as the model allows (see the "
                    "ExportedProgram's range_constraints)" if kind == "auto"
                    else f"a static batch of {tensors[0].shape[0] if tensors else '?'}: inputs must keep "
                    "that batch size")
            warnings.warn(
                f"{type(model).__name__}: a dynamic batch dimension could not be exported ({reason}); "
                f"exported with {what}.",
                stacklevel=2,
            )
        return ep
    # Even static shapes failed: that error is the model's real obstacle.
    assert last_error is not None
    raise _export_error(model, last_error) from last_error
