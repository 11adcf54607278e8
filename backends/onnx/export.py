"""export_onnx: a converted PT2E GraphModule → QDQ ONNX that ONNX Runtime runs as fused int8 kernels.

    check inputs → torch.export (dynamic batch) → torch.onnx (dynamo, opset 20, our dynamic-quant
    translations) → ONNX passes (backends/onnx/passes) → onnx.checker (full) → atomic write
    → placement (ONNX Runtime's optimized graph)

Route: torch.onnx's dynamo exporter translates every aten op and the static q/dq ops already;
a direct fx → ONNX translation would re-implement that for little gain. What it gets wrong for
fusion is fixed after the fact by passes on the ONNX graph, where the runtime's patterns live.

The drift fix, at file level (passes/shift_weights_to_uint8.py): full-range weights of int8
kernels are stored as uint8 (w + 128, zero point 128), so ONNX Runtime runs its U8U8 kernels,
exact on every CPU, instead of U8S8, whose AVX2 kernel saturates int16 pair sums on x86
without VNNI. Lossless (same dequantized weights, same PyTorch reference), so a plain
InferenceSession is right everywhere. Not a session option (x64quantprecision): users run
files with default options. Not forced 7-bit weights: that changes the model's numerics
for every backend; a user who wants them asks the quantizer (weight_qmin=-64, weight_qmax=63)
and the pass then leaves those weights int8, which cannot saturate.

Cost, measured on the machine this was built on (AMD EPYC with AVX512-VNNI: U8S8 is exact
*and* fast there, so this is the worst case; the AVX2-only CPU of the issue was not available),
ONNX Runtime 1.32, 2 threads: Linear(384,1536)-ReLU-Linear(1536,384) at 128 rows 0.46 ms with
int8 weights vs 0.87 ms uint8 (float 1.51 ms); all-MiniLM-L6-v2 numbers, including 7-bit
weights, in bench/RESULTS.md (the `int8 weights` rows). `weight_dtype="int8"` keeps int8 weights for targets
known to be safe (VNNI x86, ARM) or that need symmetric int8 (TensorRT).
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import onnx
import onnx_ir as ir
import torch
from torch.fx import GraphModule

from backends.onnx.passes import qdq_passes, qop_passes, run_passes
from backends.onnx.placement import place_layers
from backends.onnx.recompose_recurrent import FUSED_DETAIL, recompose_recurrent
from backends.onnx.translations import TRANSLATIONS
from backends.result import ExportResult
from pt2e_int8.atomic import atomic_path, check_file_target
from pt2e_int8.capture import as_input_tuple, export_model
from pt2e_int8.coverage_report import coverage
from pt2e_int8.errors import ConfigError, LoweringError, Pt2eInt8Error
from pt2e_int8.model_state import require_exportable
from pt2e_int8.ops import layer_op

# Opset 20: what torch.onnx's dynamo exporter writes natively (no version conversion), with
# per-axis QuantizeLinear/DequantizeLinear; read by ONNX Runtime ≥ 1.16, OpenVINO, TensorRT 10.
OPSET = 20
STYLES = ("qdq", "qop")
WEIGHT_DTYPES = ("auto", "uint8", "int8")
_DTYPES = {"int8": ir.DataType.INT8, "uint8": ir.DataType.UINT8,
           torch.int8: ir.DataType.INT8, torch.uint8: ir.DataType.UINT8}
_X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


def default_act_dtype(weight_dtype: str = "auto") -> str:
    """The activation type for this CPU: uint8 on x86 (its int8 kernels are u8 × s8 / u8 × u8) and
    wherever weights may become uint8 (u8 × u8 kernels exist on every CPU, mixed s8 × u8 do not);
    int8 with int8 weights on ARM, where s8 × s8 is native."""
    if weight_dtype != "int8" or platform.machine().lower() in _X86:
        return "uint8"
    return "int8"


def _dtype(value, what: str) -> ir.DataType:
    if value not in _DTYPES:
        raise ConfigError(f"{what}={value!r} is not one of 'int8', 'uint8' (or torch.int8 / torch.uint8).")
    return _DTYPES[value]


# node.meta["custom"] key under which each layer node carries its converted-graph name:
# torch.export and decompositions rename nodes (conv2d_2 → conv2d) but keep "custom" meta.
_LAYER_TAG = "pt2e_int8_layer"


def _tag_layers(model: torch.nn.Module) -> list[torch.fx.Node]:
    if not isinstance(model, GraphModule):
        return []
    nodes = [n for n in model.graph.nodes if layer_op(n) is not None]
    for n in nodes:
        n.meta.setdefault("custom", {})[_LAYER_TAG] = n.name
    return nodes


def _untag(nodes: list[torch.fx.Node]) -> None:
    for n in nodes:
        custom = n.meta.get("custom", {})
        custom.pop(_LAYER_TAG, None)
        if not custom:
            n.meta.pop("custom", None)


def to_onnx_ir(model: torch.nn.Module, args: tuple, *, opset: int, dynamic_shapes) -> tuple[ir.Model, dict]:
    """torch.export + torch.onnx (dynamo) with our dynamic-quantization translations.

    Returns the ONNX model and {exported node name: converted-graph layer node name}.
    """
    tagged = _tag_layers(model)
    try:
        program = export_model(model, args, dynamic_shapes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program, (), dynamo=True, opset_version=opset, optimize=True, verbose=False,
                custom_translation_table=TRANSLATIONS,
            )
    except Pt2eInt8Error:
        raise
    except Exception as e:
        raise LoweringError(f"torch.onnx.export failed: {type(e).__name__}: {str(e)[:500]}") from e
    finally:
        _untag(tagged)
    names = {}
    for n in onnx_program.exported_program.graph.nodes:
        tag = n.meta.get("custom", {}).get(_LAYER_TAG)
        if tag is not None:
            names.setdefault(n.name, tag)
    return onnx_program.model, names


def export_onnx(
    model: torch.nn.Module,
    example_inputs,
    path,
    *,
    style: str = "qdq",
    act_dtype=None,
    weight_dtype: str = "auto",
    opset: int = OPSET,
    dynamic_shapes="batch",
) -> ExportResult:
    """Export a converted (or float) model to ONNX and report where each layer runs in ONNX Runtime.

    Args:
        model: a GraphModule from `quantize` / `convert` (or a float module: exported in float).
        example_inputs: tensor or tuple of tensors, batch first.
        path: the .onnx file to write (atomically).
        style: "qdq" (QuantizeLinear/DequantizeLinear around float ops, which runtimes fuse) or
            "qop" (explicit QGemm / QLinearMatMul / QLinearConv, for runtimes that do not fuse).
        act_dtype: "int8" or "uint8" activations; None picks for this CPU (`default_act_dtype`).
            Exact either way (q ± 128).
        weight_dtype: weights of int8 kernels: "auto" (default: uint8 unless they fit 7 bits; exact
            in ONNX Runtime on every CPU), "uint8" (always), or "int8" (as quantized: fastest on
            VNNI CPUs and ARM, overflows ONNX Runtime's AVX2-only kernel unless 7-bit).
        opset: ONNX opset of the file.
        dynamic_shapes: "batch" (dim 0 of every input is dynamic), None, or a torch.export spec.

    Returns:
        ExportResult with per-layer placement ("int8" / "float") from ONNX Runtime's optimized graph.

    Example:
        res = export_onnx(qm, (x,), "out/model.onnx")
        res.placement  # {"fc1": "int8", ...}
    """
    require_exportable(model, "export_onnx")
    check_file_target(path, "export_onnx")  # before the export
    if style not in STYLES:
        raise ConfigError(f"style={style!r} is not one of {STYLES}.")
    if weight_dtype not in WEIGHT_DTYPES:
        raise ConfigError(f"weight_dtype={weight_dtype!r} is not one of {WEIGHT_DTYPES}.")
    act = _dtype(act_dtype if act_dtype is not None else default_act_dtype(weight_dtype), "act_dtype")
    args = as_input_tuple(example_inputs)

    fused_model, fused = recompose_recurrent(model)
    ir_model, layer_names = to_onnx_ir(fused_model, args, opset=opset, dynamic_shapes=dynamic_shapes)
    passes = qdq_passes(act_dtype=act, weight_dtype=weight_dtype, layer_names=layer_names)
    if style == "qop":
        passes += qop_passes()
    run_passes(ir_model, passes)
    proto = ir.serde.serialize_model(ir_model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise LoweringError(f"the exported ONNX graph is invalid: {e}") from e

    with atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())

    gm = model if isinstance(model, GraphModule) else export_model(model, args, dynamic_shapes).module()
    rows = coverage(gm).layers
    placement, detail = place_layers(Path(path), rows)
    for row in rows:
        op = fused.get(row.node)
        if op is not None:
            placement[row.name], detail[row.name] = "float", FUSED_DETAIL.format(op=op)
    return ExportResult(path=Path(path), format="onnx", placement=placement, detail=detail)
