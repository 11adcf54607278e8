"""The PyTorch model that computes what the XNNPACK .pte computes: per-row dynamic int8, and
static int8 linears and convolutions with exact integer accumulation (`pt2e_int8.int8_reference`).

A converted graph quantizes a dynamic layer's input with one scale per tensor
(`choose_qparams.tensor`), but XNNPACK's dynamic fully-connected kernel (qd8) quantizes each row
of the input with its own scale and zero point (XNNPACK `xnn_f32_qd8_convert`, per batch row).
So for dynamic layers the converted graph is a pessimistic stand-in for the .pte: on a
Linear-GELU-Linear MLP with uneven input channels, .pte vs converted graph is 37.9 dB SQNR,
.pte vs this reference 137 dB (equal to float rounding); all-MiniLM-L6-v2 with a dynamic FFN
("mixed") scores cosine 0.9924 as converted, 0.9973 here and 0.9972 in the .pte.

    choose_qparams(x) → quantize_per_tensor(x) → dequantize_per_tensor → linear
      ⇒  choose_qparams_per_token_asymmetric(x) → quantize_per_token → dequantize_per_token → linear

torch's per-token ops follow XNNPACK's qd8 parameter choice (torch/ao/quantization/fx/
_decomposed.py cites xnnpack/quantization.h). Only chains feeding a fully-connected layer are
rewritten: those are the ones XNNPACK runs as qd8.

Static layers: XNNPACK's qs8 GEMM and convolution accumulate in int32 and requantize once, where
the converted graph sums dequantized values in fp32; near a rounding tie they differ by one
output step, and in a transformer that flip grows layer by layer (static MiniLM: 7–32 steps on
9 of 16 sentences against the converted graph, 0.00 against this reference). XNNPACK runs a
static batch matmul (attention) in float, so matmuls keep the converted graph's float form.

LayerNorm: the .pte computes it with XNNPACK's ops (DecomposeLayerNormPass), whose last bits differ
from torch's and, at a rounding tie of the following quantize, flip an int8 value (static + smooth
MiniLM: one sentence 14.6 steps off). The reference evaluates that one op with XNNPACK on its own
inputs (`layer_norm_reference.py`).
Used to search and debug against the .pte (`auto_quantize(..., emulate=xnnpack_reference)`,
`debug_pte`, bench `reference_steps`); never exported.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

from backends.executorch.layer_norm_reference import rewrite_layer_norms
from pt2e_int8.int8_reference import int8_reference
from pt2e_int8.qdq import CHOOSE_QPARAMS_OPS, is_dequantize

aten = torch.ops.aten
_qd = torch.ops.quantized_decomposed
# What XNNPACK runs as a qd8 fully-connected kernel when its input is dynamically quantized.
_FULLY_CONNECTED = frozenset({aten.linear.default, aten.addmm.default, aten.mm.default})
# Static layer families XNNPACK runs as integer kernels (its static batch matmul is float).
XNNPACK_INTEGER_FAMILIES = frozenset({"linear", "conv", "conv_transpose"})


def _feeds_fully_connected(dq: Node) -> bool:
    return bool(dq.users) and all(u.op == "call_function" and u.target in _FULLY_CONNECTED for u in dq.users)


def _rewrite(graph: torch.fx.Graph, choose: Node) -> bool:
    getitems = {u.args[1]: u for u in choose.users if u.target is operator.getitem}
    scale, zero = getitems.get(0), getitems.get(1)
    if scale is None or zero is None:
        return False
    quants = [u for u in scale.users if u.target == _qd.quantize_per_tensor.tensor]
    deqs = [d for q in quants for d in q.users if is_dequantize(d)]
    if not quants or not deqs or not all(_feeds_fully_connected(d) for d in deqs):
        return False
    x, qmin, qmax, dtype = choose.args[0], choose.args[1], choose.args[2], choose.args[4]
    with graph.inserting_after(choose):
        per_row = graph.call_function(_qd.choose_qparams_per_token_asymmetric.default, (x, dtype))
    with graph.inserting_after(per_row):
        row_scale = graph.call_function(operator.getitem, (per_row, 0))
    with graph.inserting_after(row_scale):
        row_zero = graph.call_function(operator.getitem, (per_row, 1))
    for q in quants:
        with graph.inserting_after(q):
            q_row = graph.call_function(_qd.quantize_per_token.default, (q.args[0], row_scale, row_zero, qmin, qmax, dtype))
        for dq in [d for d in q.users if is_dequantize(d)]:
            with graph.inserting_after(dq):
                dq_row = graph.call_function(_qd.dequantize_per_token.default,
                                             (q_row, row_scale, row_zero, qmin, qmax, dtype, torch.float32))
            dq.replace_all_uses_with(dq_row)
    return True


def xnnpack_reference(gm: GraphModule) -> GraphModule:
    """A copy of the converted `gm` whose dynamic linears quantize their input per row, whose
    static linears and convolutions accumulate in integers, and whose LayerNorms are computed by
    XNNPACK's ops, as in the .pte.

    Example:
        ref = xnnpack_reference(qm)
        q.cosine(ref(x), load_pte("model.pte").run([x])[0])   # ~1.0, where qm(x) may differ
    """
    gm = int8_reference(gm, XNNPACK_INTEGER_FAMILIES)  # a copy
    if not isinstance(getattr(gm, "graph", None), torch.fx.Graph):
        return gm
    changed = rewrite_layer_norms(gm)
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in CHOOSE_QPARAMS_OPS:
            changed |= _rewrite(gm.graph, node)
    if changed:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return gm
