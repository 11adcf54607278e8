"""Where each coverage row really runs in the lowered program: an int8 kernel or float.

Read from the lowered program itself: a GEMM / conv node inside an XNNPACK delegate whose
activation and weight inputs are both dequantize nodes of that delegate is serialized by
XNNPACK as a qs8 (static) or qd8 (dynamic) kernel; anything else is float. Rows are tied
to delegate nodes by provenance (`from_node`), not by names or order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import Node

from backends.compat.executorch import edge_target
from backends.executorch.provenance import source_names
from backends.result import Placement
from pt2e_int8.coverage_report import LayerRow
from pt2e_int8.ops import layer_operands
from pt2e_int8.qdq import CHOOSE_QPARAMS_OPS, DEQUANTIZE_OPS, QDQ_OPS

aten = torch.ops.aten

# edge op -> the XNNPACK kernel it is serialized as (operand positions: pt2e_int8.ops)
KERNELS = {
    aten.linear.default: "fully_connected",
    aten.addmm.default: "fully_connected",
    aten.mm.default: "fully_connected",
    aten.convolution.default: "convolution",
    aten.bmm.default: "batch_matrix_multiply",
}
_NO_INT8_BMM = (
    "ExecuTorch 1.5.1's XNNPACK partitioner has no int8 batch-matmul (BMMConfig is FP32 only), "
    "so this activation x activation matmul runs dequantize -> f32 bmm -> quantize inside the delegate"
)
_NOT_DELEGATED = "not in any XNNPACK delegate: runs on portable float kernels"


@dataclass(frozen=True)
class Kernel:
    name: str
    int8: bool


def _dequantized(arg) -> Node | None:
    return arg if isinstance(arg, Node) and edge_target(arg) in DEQUANTIZE_OPS else None


def _dequantized_act(arg) -> Node | None:
    """The activation's dequantize, also through a zero pad XNNPACK folds into the conv.

    ExecuTorch decomposes an even-kernel `padding="same"` conv into constant_pad_nd →
    convolution; its ConvolutionConfig takes dq → pad → conv as one qs8 conv with padding.
    """
    if (isinstance(arg, Node) and edge_target(arg) == aten.constant_pad_nd.default and len(arg.users) == 1
            and (len(arg.args) < 3 or arg.args[2] == 0)):
        return _dequantized(arg.args[0])
    return _dequantized(arg)


def _is_dynamic(dq: Node) -> bool:
    """A dynamic activation: dq(q(x, scale, zp)) with qparams from choose_qparams."""
    todo, seen = list(dq.all_input_nodes), 0
    while todo and seen < 16:
        n, seen = todo.pop(), seen + 1
        if edge_target(n) in CHOOSE_QPARAMS_OPS:
            return True
        todo.extend(n.all_input_nodes)
    return False


def classify(node: Node) -> Kernel | None:
    """The XNNPACK kernel a delegated compute node becomes, or None if it is not one."""
    target = edge_target(node)
    name = KERNELS.get(target)
    if name is None:
        return None
    operands = layer_operands(node, target)
    act = _dequantized_act(operands.act) if name == "convolution" else _dequantized(operands.act)
    weight = _dequantized(operands.weight)
    if name == "batch_matrix_multiply" or act is None or weight is None:
        return Kernel(f"xnnpack {name} f32", int8=False)
    mode = "qd8 (dynamic int8 activations)" if _is_dynamic(act) else "qs8 (static int8)"
    return Kernel(f"xnnpack {name} {mode}", int8=True)


def delegated_kernels(edge_program, graph_id: int) -> dict[str, Kernel]:
    """Exported-graph node name -> the kernel it became inside an XNNPACK delegate."""
    gm = edge_program.graph_module
    found: dict[str, Kernel] = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr" or not hasattr(getattr(gm, node.target, None), "original_module"):
            continue
        lowered = getattr(gm, node.target)
        for inner in lowered.original_module.graph.nodes:
            kernel = classify(inner) if inner.op == "call_function" else None
            if kernel is None:
                continue
            for name in source_names(inner, graph_id):
                if name not in found or kernel.int8:
                    found[name] = kernel
    return found


def leftover_qdq(edge_program, graph_id: int) -> dict[str, str]:
    """q/dq nodes outside every delegate: exported-graph node name -> edge node name."""
    left = {}
    for node in edge_program.graph_module.graph.nodes:
        if node.op == "call_function" and edge_target(node) in QDQ_OPS:
            for name in source_names(node, graph_id) or {node.name}:
                left[name] = node.name
    return left


def place(
    rows: list[LayerRow],
    edge_program,
    graph_id: int,
    rejections: dict[str, str],
    *,
    delegated: bool = True,
) -> tuple[dict[str, Placement], dict[str, str]]:
    """Placement and detail per coverage row.

    Args:
        rows: the coverage rows of the graph that was exported.
        edge_program: the lowered ExportedProgram (before to_executorch).
        graph_id: id() of that exported graph, to follow provenance.
        rejections: exported-graph node name -> the partitioner's reason for leaving it out.
        delegated: False for the portable target (no delegate was asked for).
    """
    kernels = delegated_kernels(edge_program, graph_id) if delegated else {}
    placement: dict[str, Placement] = {}
    detail: dict[str, str] = {}
    for row in rows:
        kernel = kernels.get(row.node)
        steps = [kernels.get(n) for n in row.nodes[1:]]  # the other time steps of an unrolled weight
        if kernel is not None and kernel.int8 and not all(k is not None and k.int8 for k in steps):
            kernel = next(k for k in steps if k is None or not k.int8) or Kernel("not delegated", int8=False)
        if kernel is not None:
            placement[row.name] = "int8" if kernel.int8 else "float"
            note = kernel.name
            if not kernel.int8 and row.quantized and "batch_matrix_multiply" in kernel.name:
                note = f"{kernel.name}: {_NO_INT8_BMM}"
            elif not kernel.int8 and row.quantized and row.scheme and row.scheme.startswith("weight-only"):
                note = f"{kernel.name}: weight-only int8 has no XNNPACK kernel; weights dequantized at export"
            elif not kernel.int8 and row.quantized and rejections.get(row.node):
                note = f"{kernel.name}: int8 pattern rejected ({rejections[row.node]})"
            detail[row.name] = note
            continue
        placement[row.name] = "float"
        if not delegated:
            detail[row.name] = "portable target: no delegate; q/dq run as aten arithmetic around a float kernel"
        else:
            reason = rejections.get(row.node)
            detail[row.name] = f"not delegated: {reason}" if reason else _NOT_DELEGATED
    return placement, detail
