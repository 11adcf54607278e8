"""style="qop": explicit int8 operators, right even in a runtime that fuses nothing."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

import pt2e_int8 as q
from backends.onnx import export_onnx
from tests.onnx._models import op_counts, output_step, steps


def run(path, x, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


def test_qop_block_has_explicit_int8_ops(block_qop):
    counts = op_counts(block_qop.path)
    assert counts["com.microsoft.QGemm"] == 5, counts  # qkv, proj, fc1, fc2, head
    assert counts["QLinearMatMul"] == 2, counts  # scores, context
    assert counts["Gemm"] == counts["MatMul"] == 0, counts
    onnx.checker.check_model(onnx.load(str(block_qop.path)), full_check=True)
    assert set(block_qop.result.placement.values()) == {"int8"}, block_qop.result.detail


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL], ids=["no-fusion", "all"])
def test_qop_block_matches_reference(block_qop, level):
    step = output_step(block_qop.qm)
    for b in (1, 8):
        x = torch.randn(b, 16, 64, generator=torch.Generator().manual_seed(b))
        ref, got = block_qop.qm(x), run(block_qop.path, x, level)
        err, db = steps(ref, got, step), q.sqnr(ref, got)
        assert err <= 2.0 + 1e-6, f"qop batch {b}: {err:.2f} output steps from the reference"
        assert db >= 35, f"qop batch {b}: SQNR {db:.1f} dB"


def test_qop_single_layers(static_cases, onnx_dir):
    for name in ("linear_relu", "linear_3d", "attention", "digits_mlp"):
        case = static_cases[name]
        path = onnx_dir / f"{name}_qop.onnx"
        export_onnx(case.qm, (case.inputs,), path, style="qop")
        counts = op_counts(path)
        assert counts["Gemm"] == counts["MatMul"] == 0, f"{name}: {counts}"
        x = torch.randn(8, *case.inputs.shape[1:], generator=torch.Generator().manual_seed(3))
        err = steps(case.qm(x), run(path, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), output_step(case.qm))
        assert err <= 1.0 + 1e-6, f"{name} qop: {err:.2f} output steps from the reference"


def test_qop_relu_absorbed_only_when_zero_point_is_min(static_cases, onnx_dir):
    case = static_cases["linear_relu"]
    path = onnx_dir / "linear_relu_qop.onnx"
    export_onnx(case.qm, (case.inputs,), path, style="qop")
    counts = op_counts(path)
    assert counts["Relu"] == 0 and counts["com.microsoft.QGemm"] == 1, counts
