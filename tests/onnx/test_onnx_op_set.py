"""The XNNPACK int8 op set exported to ONNX: valid files, ONNX Runtime close to the converted graph,
and placement that never claims int8 for a layer ONNX Runtime computes in float."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import pt2e_int8 as q
from backends.onnx import export_onnx
from backends.onnx.placement import _owner, optimized_graph
from tests.core._op_models import CASES, inputs, quantized

STATIC = [c for c in CASES if "/static" in c]
FLOAT_LAYER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm"})


@pytest.mark.parametrize("case_id", STATIC, ids=STATIC)
def test_op_set_exports_and_placement_is_truthful(case_id, tmp_path):
    _, qm = quantized(case_id)
    x = inputs(CASES[case_id], seed=5)
    result = export_onnx(qm, x, tmp_path / "m.onnx")  # runs onnx.checker (full_check)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    out = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), x, strict=True)})[0]
    with torch.no_grad():
        db = q.sqnr(qm(*x), torch.from_numpy(np.asarray(out)))
    assert db >= 30, f"ONNX Runtime: SQNR {db:.1f} dB against the converted graph"
    rows = q.coverage(qm).layers
    nodes = {r.node for r in rows}
    in_float = {_owner(n.name, nodes) for n in optimized_graph(result.path).graph.node if n.op_type in FLOAT_LAYER_OPS}
    for row in rows:
        if row.node in in_float:
            assert result.placement[row.name] == "float", f"{row.name} claimed int8, ORT runs float: {result.detail}"
        if row.op == "conv_transpose":  # ONNX Runtime 1.32 fuses no int8 ConvTranspose
            assert result.placement[row.name] == "float", result.detail
