"""Which stage of the workflow a model is at, and the check each public step makes on it.

    float module ──quantize──▶ converted GraphModule
    float module ──prepare_qat──▶ prepared GraphModule (fake-quant) ──convert──▶ converted GraphModule

Passing a model at the wrong stage used to fail deep inside torch or torchao (`'function' object
has no attribute 'eval'`, `'Net' object has no attribute 'graph'`, an ExecuTorch SpecViolationError
about `_fused_moving_avg_obs_fq_helper`), or silently did nothing (`convert` twice). Each check here
raises a WorkflowError that names the stage the model is at and the call that fixes it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torchao.quantization.pt2e import FakeQuantizeBase, ObserverBase

from pt2e_int8.errors import WorkflowError

Stage = Literal["float", "prepared", "converted"]


def stage_of(model: torch.nn.Module) -> Stage:
    """'prepared' when it holds observers or fake-quantizers, 'converted' when its graph has q/dq ops."""
    from pt2e_int8.qdq import QDQ_OPS

    if any(isinstance(m, ObserverBase | FakeQuantizeBase) for m in model.modules()):
        return "prepared"
    graph = getattr(model, "graph", None)
    if isinstance(graph, torch.fx.Graph) and any(
            n.op == "call_function" and n.target in QDQ_OPS for n in graph.nodes):
        return "converted"
    return "float"


def _require_module(model, fn: str) -> None:
    if not isinstance(model, torch.nn.Module):
        hint = (" Wrap a function in a module (class M(nn.Module): def forward(self, x): return f(x))."
                if callable(model) else "")
        raise WorkflowError(f"{fn} takes a torch.nn.Module, got {type(model).__name__}.{hint}")


def require_float(model, fn: str) -> None:
    """quantize / prepare_qat: a float nn.Module."""
    _require_module(model, fn)
    stage = stage_of(model)
    if stage == "prepared":
        raise WorkflowError(f"{fn} got a prepared model (it has observers / fake-quantizers): call "
                            "pt2e_int8.convert(model) to finish it, or pass the float model.")
    if stage == "converted":
        raise WorkflowError(f"{fn} got a model that is already quantized (its graph has quantize/dequantize "
                            "ops): use it as is, or pass the float model to quantize it again.")


def require_prepared(model, fn: str = "convert") -> None:
    """convert / calibrate: the prepared model prepare_qat (or torchao's prepare_pt2e) returned."""
    _require_module(model, fn)
    stage = stage_of(model)
    if stage == "converted":
        raise WorkflowError(f"{fn} got a model that is already converted (quantize/dequantize ops, no "
                            "observers): it is the int8 model, use it as is.")
    # A float GraphModule can be a prepared model with nothing to observe (every scope kept float).
    if stage == "float" and not isinstance(model, torch.fx.GraphModule):
        raise WorkflowError(f"{fn} needs the model returned by prepare_qat (with fake-quantizers); this one "
                            "is an eager float module. Call prepare_qat(model, example_inputs) and train it "
                            "first, or use quantize(model, example_inputs, calibration) for post-training "
                            "quantization.")


def require_graph(model, fn: str) -> None:
    """coverage: a GraphModule from quantize / convert (a float export lists every layer as float)."""
    _require_module(model, fn)
    if not isinstance(getattr(model, "graph", None), torch.fx.Graph):
        raise WorkflowError(f"{fn} reads the graph of a quantized model, and {type(model).__name__} is an eager "
                            "module. Pass the result of pt2e_int8.quantize(...) or pt2e_int8.convert(...).")
    if stage_of(model) == "prepared":
        raise WorkflowError(f"{fn} got a prepared model (observers / fake-quantizers): call "
                            "pt2e_int8.convert(model) first.")


def require_exportable(model, fn: str) -> None:
    """export_pte / export_onnx: a converted model, or a float one (exported in float)."""
    _require_module(model, fn)
    if stage_of(model) == "prepared":
        raise WorkflowError(f"{fn} got a prepared model (observers / fake-quantizers), which no runtime can "
                            "run: call pt2e_int8.convert(model) first and export its result.")
