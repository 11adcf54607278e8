"""export_onnx: a converted PT2E GraphModule → QDQ ONNX that ONNX Runtime runs as fused int8 kernels.

    check inputs → torch.export (dynamic batch) → torch.onnx (dynamo, opset 20, our dynamic-quant
    translations) → ONNX passes (backends/onnx/passes) → onnx.checker (full) → atomic write
    → placement (ONNX Runtime's optimized graph)

Route: torch.onnx's dynamo exporter translates every aten op and the static q/dq ops already;
a direct fx → ONNX translation would re-implement that for little gain. What it gets wrong for
fusion is fixed after the fact by passes on the ONNX graph, where the runtime's patterns live.

Target-aware (backends/onnx/target.py): the weights' and activations' signedness follows the
CPU family the file is for, because ONNX Runtime picks its int8 kernels by signedness and the
fast one on VNNI x86 and ARM (U8S8 / S8S8) saturates on AVX2-only x86. `target="auto"` reads the
building machine; the choice is written into the file's metadata_props and the ExportResult.

The drift fix for x86-avx2 (passes/shift_weights_to_uint8.py): full-range weights of int8
kernels are stored as uint8 (w + 128, zero point 128), so ONNX Runtime runs its U8U8 kernels,
exact on every CPU, instead of U8S8, whose AVX2 kernel saturates int16 pair sums on x86
without VNNI. Lossless (same dequantized weights, same PyTorch reference). Not a session
option (x64quantprecision): users run files with default options. Weights that already fit
7 bits (QuantConfig(weight_qmin=-64, weight_qmax=63)) stay int8: they cannot saturate.

Dynamic activations are quantized per row (token) by default (passes/quantize_activation_rows.py),
as XNNPACK's dynamic linears are in the .pte, not per tensor as in the converted graph: that is
what brings all-MiniLM-L6-v2 from 0.993 to 0.997 cosine. `dynamic_act="per-tensor"` keeps the
converted graph's numerics exactly. Measured numbers per target and option: bench/RESULTS.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import onnx_ir as ir
import torch
from torch.fx import GraphModule

from backends.onnx.passes import DYNAMIC_ACTS, qdq_passes, qop_passes, run_passes
from backends.onnx.passes.keep_dynamic_conv_float import FLOAT_NOTES
from backends.onnx.placement import place_layers
from backends.onnx.recompose_recurrent import FUSED_DETAIL, recompose_recurrent
from backends.onnx.target import (
    METADATA_ACTS,
    METADATA_DYNAMIC_ACT,
    METADATA_TARGET,
    METADATA_WEIGHTS,
    METADATA_WHY,
    OnnxTarget,
    resolve_target,
)
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


def _weight_mode(weight_dtype: str, target: OnnxTarget) -> str:
    """qdq_passes' weight mode: "auto" (uint8 unless 7-bit), "uint8" (always) or "int8" (never shift)."""
    if weight_dtype != "auto":
        return weight_dtype
    return "auto" if target.weight_dtype == "uint8" else "int8"


def _act_dtype(act_dtype, weight_mode: str, target: OnnxTarget):
    """Explicit act_dtype as given; else the target's, but uint8 whenever weights may be uint8
    (ONNX Runtime has U8U8 kernels, no S8U8 ones)."""
    if act_dtype is not None:
        return act_dtype
    return "uint8" if weight_mode != "int8" else target.act_dtype


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
    target: str | OnnxTarget = "auto",
    style: str = "qdq",
    act_dtype=None,
    weight_dtype: str = "auto",
    dynamic_act: str = "per-row",
    opset: int = OPSET,
    dynamic_shapes="batch",
) -> ExportResult:
    """Export a converted (or float) model to ONNX and report where each layer runs in ONNX Runtime.

    Args:
        model: a GraphModule from `quantize` / `convert` (or a float module: exported in float).
        example_inputs: tensor or tuple of tensors, batch first.
        path: the .onnx file to write (atomically).
        target: the CPUs the file is for, which decides the int8 kernels ONNX Runtime runs:
            "auto" (default: the building machine's), "x86-avx2" (uint8 weights: exact on every
            CPU, slower on VNNI/ARM), "x86-vnni" or "arm64" (int8 weights: fast, but drifts on
            AVX2-only x86). See backends/onnx/target.py.
        style: "qdq" (QuantizeLinear/DequantizeLinear around float ops, which runtimes fuse) or
            "qop" (explicit QGemm / QLinearMatMul / QLinearConv, for runtimes that do not fuse).
        act_dtype: "int8" or "uint8" static activations; None: the target's. Exact either way (q ± 128).
        weight_dtype: weights of int8 kernels: "auto" (default: the target's; x86-avx2 stores
            uint8 unless they fit 7 bits), "uint8" (always), or "int8" (as quantized).
        dynamic_act: dynamic activations quantized "per-row" (default: one scale per token,
            higher fidelity, ONNX Runtime contrib op MatMulIntegerToFloat) or "per-tensor"
            (DynamicQuantizeLinear: standard ops, the converted graph's numerics).
        opset: ONNX opset of the file.
        dynamic_shapes: "batch" (dim 0 of every input is dynamic), None, or a torch.export spec.

    Returns:
        ExportResult with per-layer placement ("int8" / "float") from ONNX Runtime's optimized graph,
        and `options` (target, why, weight/activation types, dynamic activation granularity).

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
    if dynamic_act not in DYNAMIC_ACTS:
        raise ConfigError(f"dynamic_act={dynamic_act!r} is not one of {DYNAMIC_ACTS}.")
    cpu, why = resolve_target(target)
    weight_mode = _weight_mode(weight_dtype, cpu)
    act_name = _act_dtype(act_dtype, weight_mode, cpu)
    act = _dtype(act_name, "act_dtype")
    args = as_input_tuple(example_inputs)

    fused_model, fused = recompose_recurrent(model)
    ir_model, layer_names = to_onnx_ir(fused_model, args, opset=opset, dynamic_shapes=dynamic_shapes)
    passes = qdq_passes(act_dtype=act, weight_dtype=weight_mode, dynamic_act=dynamic_act, layer_names=layer_names)
    if style == "qop":
        passes += qop_passes()
    run_passes(ir_model, passes)
    float_notes = ir_model.graph.meta.get(FLOAT_NOTES, {})
    options = {"target": cpu.name, "target_reason": why, "kernels": cpu.kernels,
               "runs_exactly_on": cpu.runs_exactly_on, "weight_dtype": _weights_written(weight_mode),
               "act_dtype": act.name.lower(), "dynamic_act": dynamic_act}
    ir_model.metadata_props.update({METADATA_TARGET: cpu.name, METADATA_WHY: why,
                                    METADATA_WEIGHTS: options["weight_dtype"], METADATA_ACTS: options["act_dtype"],
                                    METADATA_DYNAMIC_ACT: dynamic_act})
    proto = ir.serde.serialize_model(ir_model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise LoweringError(f"the exported ONNX graph is invalid: {e}") from e

    with atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())

    gm = model if isinstance(model, GraphModule) else export_model(model, args, dynamic_shapes).module()
    rows = coverage(gm).layers
    placement, detail = place_layers(Path(path), rows, float_notes)
    for row in rows:
        op = fused.get(row.node)
        if op is not None:
            placement[row.name], detail[row.name] = "float", FUSED_DETAIL.format(op=op)
    return ExportResult(path=Path(path), format="onnx", placement=placement, detail=detail, options=options)


def _weights_written(weight_mode: str) -> str:
    return {"auto": "uint8 (int8 where 7-bit)", "uint8": "uint8", "int8": "int8"}[weight_mode]
